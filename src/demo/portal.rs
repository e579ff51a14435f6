//! The demo portal: the customer's portal on an origin of its own. Its
//! server side calls the gateway's API with the portal's API token, as
//! ToolJet's sample Node portal does (SPEC §3): it mints a PAT for each app
//! it embeds and frames each `redirectUrl`, and revokes the user's sessions
//! (SPEC §6).

#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::client::{CallError, DemoReply, GatewayClient};
use super::html::{render, Html};
use super::{has_token, header_text, html_response, json_response, method_not_allowed, text, Portal};

/// A portal call to the gateway's API must take less than this in all.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of the gateway's error message a page shows.
const MAX_MESSAGE_CHARS: usize = 300;

/// The page around every view; its style comes from its own file.
const LAYOUT: &str = include_str!("pages/portal.html");
const STYLE: &str = include_str!("pages/portal.css");
/// The view after a successful mint: the frames and the revoke button.
const EMBED_VIEW: &str = include_str!("pages/portal-embed.html");
/// One app's place in the embed view: its status line and its iframe.
const FRAME: &str = include_str!("pages/portal-frame.html");
/// One app's place in the embed view when its PAT could not be minted.
const FRAME_FAILED: &str = include_str!("pages/portal-frame-failed.html");
/// The view after a revocation from a plain form post.
const REVOKED_VIEW: &str = include_str!("pages/portal-revoked.html");
/// The view when the gateway's API failed.
const ERROR_VIEW: &str = include_str!("pages/portal-error.html");
/// Shows a banner when a framed app says its session ended: the gateway's
/// own message and ToolJet's, so that portals written for either react.
/// Only messages from an iframe, at its own origin, count, and each shows
/// on that iframe's status line. The revoke button uses `fetch` when it
/// can, so the frames stay and show the revocation.
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
                None => self.front_page().await,
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
    async fn api_call(&self, path: &str, body: &Value) -> Result<DemoReply, ApiFailure> {
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
    fn refused(&self, answer: &DemoReply) -> ApiFailure {
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

    /// `GET /`: a PAT for each app, in order, and the page framing each;
    /// the error page when not one app could be framed.
    async fn front_page(&self) -> Response<Full<Bytes>> {
        if self.config.app_ids.is_empty() {
            return self.error_view(Html::trusted(
                "<p class=\"bad\">There is no app to embed: the gateway's config has no <code>[[apps]]</code>.</p>",
            ));
        }
        let mut minted = Vec::with_capacity(self.config.app_ids.len());
        for app_id in &self.config.app_ids {
            minted.push((app_id.as_str(), self.mint(app_id).await));
        }
        if minted.iter().all(|(_, outcome)| outcome.is_err()) {
            let failures: Vec<ApiFailure> = minted.into_iter().filter_map(|(_, outcome)| outcome.err()).collect();
            return self.error_page(&failures);
        }
        self.embed_page(&minted)
    }

    /// Mints a PAT for the portal's user and `app_id` (SPEC §3) and returns
    /// the `redirectUrl` to frame.
    async fn mint(&self, app_id: &str) -> Result<String, ApiFailure> {
        let body = json!({
            "email": self.config.email,
            "appId": app_id,
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

    /// Ends the portal user's sessions and unused PATs for each of its apps
    /// (SPEC §6), one call per app so that sessions of apps the portal does
    /// not embed are left alone, and returns the sums of
    /// `(revokedSessions, revokedTokens)`.
    async fn revoke_sessions(&self) -> Result<(u64, u64), ApiFailure> {
        let mut revoked = (0, 0);
        for app_id in &self.config.app_ids {
            let body = json!({"email": self.config.email, "appId": app_id});
            let answer = self.api_call("/api/ext/users/sessions/revoke", &body).await?;
            if answer.status != StatusCode::OK {
                return Err(self.refused(&answer));
            }
            let body = json_object(&answer).unwrap_or_default();
            let count = |name: &str| body.get(name).and_then(Value::as_u64).unwrap_or(0);
            revoked.0 += count("revokedSessions");
            revoked.1 += count("revokedTokens");
        }
        Ok(revoked)
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
            (Err(failure), false) => self.error_page(&[failure]),
        }
    }

    /// Who and what the portal embeds, for every view.
    fn identity(&self) -> Html {
        let mut apps = Html::default();
        for (i, app_id) in self.config.app_ids.iter().enumerate() {
            if i > 0 {
                apps.push(Html::trusted(", "));
            }
            apps.push(render("<code>{{app}}</code>", &[("app", Html::escape(app_id))]));
        }
        let label = match self.config.app_ids.len() {
            1 => "embedded app",
            _ => "embedded apps",
        };
        render(
            "<p>Signed in as <strong>{{email}}</strong> · {{label}} {{apps}}</p>",
            &[
                ("email", Html::escape(&self.config.email)),
                ("label", Html::trusted(label)),
                ("apps", apps),
            ],
        )
    }

    /// The page with a frame for each app whose PAT was minted, in order,
    /// and the refusal in place of each other one.
    fn embed_page(&self, minted: &[(&str, Result<String, ApiFailure>)]) -> Response<Full<Bytes>> {
        let mut frames = Html::default();
        for (n, (app_id, outcome)) in (1..).zip(minted) {
            frames.push(match outcome {
                Ok(redirect_url) => {
                    let (frame_id, status_id) = frame_ids(n);
                    render(
                        FRAME,
                        &[
                            ("app", Html::escape(app_id)),
                            ("origin", Html::escape(origin_of(redirect_url))),
                            ("frame", Html::escape(&frame_id)),
                            ("status", Html::escape(&status_id)),
                            ("src", Html::escape(redirect_url)),
                        ],
                    )
                }
                Err(failure) => render(
                    FRAME_FAILED,
                    &[("app", Html::escape(app_id)), ("detail", failure_html(failure))],
                ),
            });
        }
        let main = render(
            EMBED_VIEW,
            &[
                ("identity", self.identity()),
                ("frames", frames),
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

    /// The page of what went wrong, one line per failure.
    fn error_page(&self, failures: &[ApiFailure]) -> Response<Full<Bytes>> {
        let mut detail = Html::default();
        for failure in failures {
            detail.push(failure_html(failure));
        }
        self.error_view(detail)
    }

    /// The error view around `detail`.
    fn error_view(&self, detail: Html) -> Response<Full<Bytes>> {
        let main = render(ERROR_VIEW, &[("identity", self.identity()), ("detail", detail)]);
        layout(StatusCode::BAD_GATEWAY, main)
    }
}

/// What went wrong, as a paragraph of a page.
fn failure_html(failure: &ApiFailure) -> Html {
    match failure {
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
    }
}

/// The element ids of the `n`th frame (from 1) and of its status line. The
/// first keeps the ids the page had when it framed a single app
/// (`app-frame`, `embed-status`), which the browser tests read; the others
/// are numbered: `app-frame-2`, `embed-status-2`, …
fn frame_ids(n: usize) -> (String, String) {
    match n {
        1 => ("app-frame".to_owned(), "embed-status".to_owned()),
        n => (format!("app-frame-{n}"), format!("embed-status-{n}")),
    }
}

/// `scheme://authority` of an `http(s)://` URL, to show where a frame's
/// app is served (a host of its own, or the gateway's).
fn origin_of(url: &str) -> &str {
    let Some(after_scheme) = url.find("://").map(|i| i + 3) else {
        return url;
    };
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

/// `n` of a `revoked=n` query parameter.
fn revoked_param(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("revoked="))
        .and_then(|n| n.parse().ok())
}

/// The JSON body of an answer, if it is a JSON object.
fn json_object(answer: &DemoReply) -> Option<Map<String, Value>> {
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
