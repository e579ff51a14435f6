//! `/api/ext/*`: the portal backend's API (SPEC §3, §6). Every endpoint
//! takes `Authorization: Basic <token>` and a small JSON body, except the
//! public OpenAPI document that describes them (`openapi.json`).

mod auth;
mod fields;
mod identity;
mod mint;
mod openapi;
mod revoke;

/// The mint body's parser, for the fuzz targets (`src/fuzzing.rs`).
#[cfg(feature = "internals")]
pub(crate) use mint::parse as mint_request;

use std::net::IpAddr;

use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::body::{self, Body, RequestBody};
use crate::config::ApiToken;
use crate::error::GatewayError;
use crate::request_id::X_REQUEST_ID;
use crate::state::State;
use crate::telemetry::audit;

/// Serves `/api/ext/<rest>`.
///
/// Every refusal that comes before the body is read (unknown endpoint,
/// method, credentials, rate limit, media type) first reads and discards a
/// bounded amount of the body, so a client still sending it gets the answer
/// rather than a reset connection.
pub(crate) async fn handle(
    rest: &str,
    req: Request<RequestBody>,
    state: &State,
    client: IpAddr,
) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = req.into_parts();
    let caller = audit::Caller {
        request_id: parts
            .headers
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        client,
    };
    let endpoint = match admit(rest, &parts, state) {
        Ok(endpoint) => endpoint,
        Err(refusal) => {
            audit_refused_call(rest, &parts, state, caller, &refusal);
            body::discard(&parts.headers, body, 0, state.config.server.header_read_timeout).await;
            return Err(refusal);
        }
    };
    match endpoint {
        Endpoint::Document => {
            // A GET has no body to speak of; one sent anyway is dropped as a
            // refused one is, so the connection stays usable.
            body::discard(&parts.headers, body, 0, state.config.server.header_read_timeout).await;
            Ok(openapi::response())
        }
        Endpoint::Mint(token) => {
            let mut asked = Asked::default();
            let answer = match read_body(&parts, body, state).await {
                Ok(body) => mint::handle(&body, token, state, &mut asked).await,
                Err(error) => Err(error),
            };
            let outcome = answer.as_ref().map_or_else(audit::outcome, |_| "ok");
            audit::mint(
                caller,
                &token.name,
                asked.user.as_deref(),
                asked.app.as_deref(),
                outcome,
            );
            answer
        }
        Endpoint::Revoke(token) => {
            let mut asked = Asked::default();
            let answer = match read_body(&parts, body, state).await {
                Ok(body) => revoke::handle(&body, token, state, &mut asked).await,
                Err(error) => Err(error),
            };
            let outcome = answer.as_ref().map_or_else(audit::outcome, |_| "ok");
            audit::revoke(
                caller,
                &token.name,
                asked.user.as_deref(),
                asked.app.as_deref(),
                asked.revoked.map(|r| (r.sessions, r.tokens)),
                outcome,
            );
            answer
        }
    }
}

/// What a mint or revocation asked for, as far as it was understood: for
/// the audit log, whatever the answer.
#[derive(Debug, Default)]
pub(crate) struct Asked {
    pub(crate) user: Option<String>,
    pub(crate) app: Option<String>,
    /// What a revocation ended.
    pub(crate) revoked: Option<crate::session::Revoked>,
}

/// A mint or revocation refused before its body was read (credentials,
/// rate limit, media type) is audited too; other paths and methods are no
/// calls of either.
fn audit_refused_call(rest: &str, parts: &Parts, state: &State, caller: audit::Caller<'_>, refusal: &GatewayError) {
    if parts.method != Method::POST {
        return;
    }
    let token = auth::label(&parts.headers, state.api_tokens());
    let outcome = audit::outcome(refusal);
    match rest {
        "users/personal-access-token" => audit::mint(caller, &token, None, None, outcome),
        "users/sessions/revoke" => audit::revoke(caller, &token, None, None, None, outcome),
        _ => {}
    }
}

/// An endpoint, with the API token that called it.
enum Endpoint<'a> {
    /// The OpenAPI document: public, so no caller.
    Document,
    Mint(&'a ApiToken),
    Revoke(&'a ApiToken),
}

/// The checks that need only the request head.
fn admit<'a>(rest: &str, parts: &Parts, state: &'a State) -> Result<Endpoint<'a>, GatewayError> {
    let mint = match rest {
        "openapi.json" if parts.method == Method::GET || parts.method == Method::HEAD => {
            return Ok(Endpoint::Document);
        }
        // RFC 9110 §10.2.1: `Allow` lists every method served, HEAD included.
        "openapi.json" => return Err(GatewayError::MethodNotAllowed("GET, HEAD")),
        "users/personal-access-token" => true,
        "users/sessions/revoke" => false,
        _ => return Err(GatewayError::PathNotFound("no such API endpoint")),
    };
    if parts.method != Method::POST {
        return Err(GatewayError::MethodNotAllowed("POST"));
    }
    let api_token = auth::authenticate(&parts.headers, state.api_tokens())?;
    if !is_json(&parts.headers) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    if !mint {
        return Ok(Endpoint::Revoke(api_token));
    }
    state
        .limits
        .mint_by_token(&api_token.name)
        .map_err(GatewayError::TooManyRequests)?;
    Ok(Endpoint::Mint(api_token))
}

/// Required, not sniffed: a cross-site HTML form cannot send a JSON media
/// type without a CORS preflight, which the gateway never grants.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

/// Reads a request body of at most `api.max_body_bytes`: 413 past it (said
/// at once when the declared length is already too long), and no slower
/// than the head timeout.
async fn read_body(parts: &Parts, mut body: RequestBody, state: &State) -> Result<Bytes, GatewayError> {
    let limit = state.config.api.max_body_bytes;
    let patience = state.config.server.header_read_timeout;
    if body::declared_length(&body) > limit as u64 {
        body::discard(&parts.headers, body, 0, patience).await;
        return Err(GatewayError::PayloadTooLarge);
    }
    let read = tokio::time::timeout(patience, Limited::new(&mut body, limit).collect()).await;
    match read {
        Err(_) => Err(GatewayError::RequestTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            // The client was told to go on and has sent past the limit.
            body::discard(&parts.headers, body, limit as u64 + 1, patience).await;
            Err(GatewayError::PayloadTooLarge)
        }
        Ok(Err(_)) => Err(GatewayError::BadRequest("body: could not be read (broken framing)")),
    }
}

/// A JSON success response that no cache may keep.
pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::full(value.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
