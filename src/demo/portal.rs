//! The demo portal: the customer's portal on an origin of its own. Its
//! server side calls the gateway's API with the portal's API token, as
//! ToolJet's sample Node portal does (SPEC §3): it mints a PAT and frames
//! the `redirectUrl`, and revokes the user's sessions (SPEC §6).

#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::client::{Answer, CallError, GatewayClient};
use super::html::{render, Html};
use super::{has_token, header_text, html_response, json_response, method_not_allowed, text, Portal};

/// A portal call to the gateway's API must take less than this in all.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of the gateway's error message a page shows.
const MAX_MESSAGE_CHARS: usize = 300;

/// The page around every view; its style comes from its own file.
const LAYOUT: &str = include_str!("pages/portal.html");
const STYLE: &str = include_str!("pages/portal.css");
/// The view after a successful mint: the iframe and the revoke button.
const EMBED_VIEW: &str = include_str!("pages/portal-embed.html");
/// The view after a revocation from a plain form post.
const REVOKED_VIEW: &str = include_str!("pages/portal-revoked.html");
/// The view when the gateway's API failed.
const ERROR_VIEW: &str = include_str!("pages/portal-error.html");
/// Shows a banner when the framed app says its session ended: the gateway's
/// own message and ToolJet's, so that portals written for either react.
/// Only messages from the iframe's origin count. The revoke button uses
/// `fetch` when it can, so the frame stays and shows the revocation.
const SCRIPT: &str = include_str!("pages/portal.js");

/// The running portal: what it embeds, and its client to the gateway.
pub(crate) struct DemoPortal {
    config: Portal,
    gateway: GatewayClient,
}

/// Why the gateway's API did not do what the portal asked.
enum ApiFailure {
    /// No answer: the reason, without any credential.
    Unreachable(CallError),
    /// An answer other than success, with the JSON `message` of its body.
    Refused { status: StatusCode, message: String },
}

impl ApiFailure {
    fn describe(&self) -> String {
        match self {
            ApiFailure::Unreachable(e) => format!("cannot reach the gateway: {e}"),
            ApiFailure::Refused { status, message } => format!("the gateway answered {status}: {message}"),
        }
    }
}

impl DemoPortal {
    /// The portal for `config`; nothing is called yet.
    pub(crate) fn new(config: Portal) -> DemoPortal {
        let gateway = GatewayClient::new(&config.gateway_api);
        DemoPortal { config, gateway }
    }

    /// Routes one request (see the module doc of `demo` for the routes).
    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/" if req.method() == Method::GET => match revoked_param(req.uri().query()) {
                Some(revoked) => self.revoked_page(revoked),
                None => match self.mint().await {
                    Ok(redirect_url) => self.embed_page(&redirect_url),
                    Err(failure) => self.error_page(&failure),
                },
            },
            "/" => method_not_allowed("GET"),
            "/revoke" if req.method() == Method::POST => self.revoke(&req).await,
            "/revoke" => method_not_allowed("POST"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// `POST <gateway_api><path>` with the portal's API token, as ToolJet's
    /// sample portal does: `Authorization: Basic <token>` (the token as is,
    /// not a user:password pair) and a JSON body.
    async fn api_call(&self, path: &str, body: &Value) -> Result<Answer, ApiFailure> {
        let mut auth = HeaderValue::from_str(&format!("Basic {}", self.config.api_token))
            .map_err(|_| ApiFailure::Unreachable(CallError::BadToken))?;
        auth.set_sensitive(true);
        let headers = vec![
            (header::AUTHORIZATION, auth),
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::ACCEPT, HeaderValue::from_static("application/json")),
        ];
        let body = Bytes::from(body.to_string());
        self.gateway
            .call(Method::POST, path, headers, body, API_TIMEOUT)
            .await
            .map_err(ApiFailure::Unreachable)
    }

    /// The failure for an answer that is not the expected success: its
    /// status and the `message` of its JSON error body (SPEC §3), clipped,
    /// and with the API token blotted out should it ever be echoed.
    fn refused(&self, answer: &Answer) -> ApiFailure {
        let message = json_object(answer)
            .and_then(|body| body.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "(no JSON message)".to_owned());
        let mut message: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        if !self.config.api_token.is_empty() {
            message = message.replace(&self.config.api_token, "[redacted]");
        }
        ApiFailure::Refused {
            status: answer.status,
            message,
        }
    }

    /// Mints a PAT for the portal's user and app (SPEC §3) and returns the
    /// `redirectUrl` to frame.
    async fn mint(&self) -> Result<String, ApiFailure> {
        let body = json!({
            "email": self.config.email,
            "appId": self.config.app_id,
            "sessionExpiry": 60,
            "patExpiry": 300,
        });
        let answer = self.api_call("/api/ext/users/personal-access-token", &body).await?;
        if answer.status != StatusCode::CREATED {
            return Err(self.refused(&answer));
        }
        let url =
            json_object(&answer).and_then(|body| body.get("redirectUrl").and_then(Value::as_str).map(str::to_owned));
        // Only a web URL goes in the iframe: never `javascript:` or the like.
        match url {
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => Ok(url),
            _ => Err(ApiFailure::Refused {
                status: answer.status,
                message: "the answer has no http(s) redirectUrl".to_owned(),
            }),
        }
    }

    /// Ends the portal user's sessions and unused PATs for the app (SPEC §6)
    /// and returns `(revokedSessions, revokedTokens)`.
    async fn revoke_sessions(&self) -> Result<(u64, u64), ApiFailure> {
        let body = json!({"email": self.config.email, "appId": self.config.app_id});
        let answer = self.api_call("/api/ext/users/sessions/revoke", &body).await?;
        if answer.status != StatusCode::OK {
            return Err(self.refused(&answer));
        }
        let body = json_object(&answer).unwrap_or_default();
        let count = |name: &str| body.get(name).and_then(Value::as_u64).unwrap_or(0);
        Ok((count("revokedSessions"), count("revokedTokens")))
    }

    /// `POST /revoke`. Refused from another origin, so that no other site
    /// can end the user's sessions with a cross-site form.
    async fn revoke(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let headers = req.headers();
        if let Some(origin) = headers.get(header::ORIGIN) {
            let host = req
                .uri()
                .authority()
                .map(|a| a.as_str().to_owned())
                .or_else(|| header_text(headers, "host"));
            let same = host.is_some_and(|host| origin.as_bytes() == format!("http://{host}").as_bytes());
            if !same {
                return text(StatusCode::FORBIDDEN, "cross-origin revoke refused\n");
            }
        }
        let wants_json = has_token(headers, header::ACCEPT, "application/json");
        match (self.revoke_sessions().await, wants_json) {
            (Ok((sessions, tokens)), true) => json_response(
                StatusCode::OK,
                &json!({"revokedSessions": sessions, "revokedTokens": tokens}),
            ),
            (Ok((sessions, _)), false) => {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::SEE_OTHER;
                let location = HeaderValue::from_str(&format!("/?revoked={sessions}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("/"));
                response.headers_mut().insert(header::LOCATION, location);
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            (Err(failure), true) => json_response(StatusCode::BAD_GATEWAY, &json!({"message": failure.describe()})),
            (Err(failure), false) => self.error_page(&failure),
        }
    }

    /// Who and what the portal embeds, for every view.
    fn identity(&self) -> Html {
        render(
            "<p>Signed in as <strong>{{email}}</strong> · embedded app <code>{{app}}</code></p>",
            &[
                ("email", Html::escape(&self.config.email)),
                ("app", Html::escape(&self.config.app_id)),
            ],
        )
    }

    fn embed_page(&self, redirect_url: &str) -> Response<Full<Bytes>> {
        let main = render(
            EMBED_VIEW,
            &[
                ("identity", self.identity()),
                ("src", Html::escape(redirect_url)),
                ("script", Html::trusted(SCRIPT)),
            ],
        );
        layout(StatusCode::OK, main)
    }

    fn revoked_page(&self, revoked: u64) -> Response<Full<Bytes>> {
        let main = render(
            REVOKED_VIEW,
            &[
                ("identity", self.identity()),
                ("revoked", Html::escape(&revoked.to_string())),
                ("script", Html::trusted(SCRIPT)),
            ],
        );
        layout(StatusCode::OK, main)
    }

    fn error_page(&self, failure: &ApiFailure) -> Response<Full<Bytes>> {
        let detail = match failure {
            ApiFailure::Unreachable(e) => render(
                "<p class=\"bad\">The portal could not reach the gateway: {{error}}</p>",
                &[("error", Html::escape(&e.to_string()))],
            ),
            ApiFailure::Refused { status, message } => render(
                "<p class=\"bad\">The gateway answered <strong>{{status}}</strong>: <code>{{message}}</code></p>",
                &[
                    ("status", Html::escape(&status.to_string())),
                    ("message", Html::escape(message)),
                ],
            ),
        };
        let main = render(ERROR_VIEW, &[("identity", self.identity()), ("detail", detail)]);
        layout(StatusCode::BAD_GATEWAY, main)
    }
}

/// `n` of a `revoked=n` query parameter.
fn revoked_param(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("revoked="))
        .and_then(|n| n.parse().ok())
}

/// The JSON body of an answer, if it is a JSON object.
fn json_object(answer: &Answer) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&answer.body).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// `main` in the page around every view.
fn layout(status: StatusCode, main: Html) -> Response<Full<Bytes>> {
    let page = render(LAYOUT, &[("style", Html::trusted(STYLE)), ("main", main)]);
    // The page holds a PAT in the iframe's URL: no cache may keep it (see
    // `html_response`) and no Referer may carry it.
    let mut response = html_response(status, page);
    response
        .headers_mut()
        .insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
