//! `/api/ext/*`: the portal backend's API (SPEC §3, §6). Every endpoint
//! takes `Authorization: Basic <token>` and a small JSON body.

pub mod auth;
pub mod mint;
pub mod revoke;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::Body;
use crate::error::GatewayError;
use crate::state::State;

/// Serves `/api/ext/<rest>`.
pub async fn handle(rest: &str, req: Request<Incoming>, state: &State) -> Result<Response<Body>, GatewayError> {
    let endpoint = match rest {
        "users/personal-access-token" => Endpoint::Mint,
        "users/sessions/revoke" => Endpoint::Revoke,
        _ => return Err(GatewayError::NotFound("no such API endpoint")),
    };
    if req.method() != Method::POST {
        return Err(GatewayError::MethodNotAllowed("POST"));
    }
    let api_token = auth::authenticate(req.headers(), state.api_tokens())?;
    match endpoint {
        Endpoint::Mint => mint::handle(req, state, &api_token).await,
        Endpoint::Revoke => revoke::handle(req, state).await,
    }
}

enum Endpoint {
    Mint,
    Revoke,
}

/// Reads a JSON request body of at most `api.max_body_bytes`: 413 past
/// it, 415 without a JSON `Content-Type`, and no slower than the head
/// timeout.
pub async fn read_json_body(req: Request<Incoming>, state: &State) -> Result<serde_json::Value, GatewayError> {
    let limit = state.config.api.max_body_bytes;
    let media_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    // Required, not sniffed: a cross-site HTML form cannot send this media
    // type without a CORS preflight, which the gateway never grants.
    if !media_type.is_some_and(|m| m == "application/json" || m.ends_with("+json")) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge);
    }
    let collect = Limited::new(req.into_body(), limit).collect();
    let bytes: Bytes = match tokio::time::timeout(state.config.server.header_read_timeout, collect).await {
        Err(_) => return Err(GatewayError::RequestTimeout),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => return Err(GatewayError::PayloadTooLarge),
        Ok(Err(_)) => return Err(GatewayError::BadRequest("the request body could not be read")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    serde_json::from_slice(&bytes).map_err(|_| GatewayError::Invalid("body: malformed JSON".into()))
}

/// A JSON success response that no cache may keep.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::full(value.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
