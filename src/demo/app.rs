//! The demo upstream app: what an ordinary upstream behind the gateway sees
//! and does. It shows the identity headers and the forwarded headers
//! (SPEC §5), checks `X-Embed-Assertion` against the gateway's JWK Set
//! ([`jwks`]), and echoes WebSocket messages ([`websocket`]).
//!
//! Its URLs are built under `X-Forwarded-Prefix`, so that it works mounted
//! at `/embed-apps/<appId>` as well as at the root. The same server also
//! serves the demo's second app, the [`shop`], under `/shop/`.

mod jwks;
mod shop;
#[cfg(test)]
mod tests;
mod websocket;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::client::GatewayClient;
use super::html::{render, Html};
use super::{header_text, html_response, json_response, method_not_allowed, text, GatewayLink};
use jwks::Jwks;

/// The page; its style and script are filled in from their own files.
const PAGE: &str = include_str!("pages/app.html");
const STYLE: &str = include_str!("pages/app.css");
/// Reports the identity to a framing portal (`pages/portal.js` listens) and
/// runs the WebSocket echo widget.
const SCRIPT: &str = include_str!("pages/app.js");

/// The demo app's state: the gateway's JWK Set, and how to fetch it.
pub(crate) struct DemoApp {
    jwks: Jwks,
}

/// What became of the request's `X-Embed-Assertion`.
enum AssertionCheck {
    Absent,
    Verified(Map<String, Value>),
    NotVerified(String),
}

impl DemoApp {
    /// The app for the gateway at `gateway.base`; nothing is fetched yet.
    pub(crate) fn new(gateway: &GatewayLink) -> DemoApp {
        DemoApp {
            jwks: Jwks::new(GatewayClient::new(&gateway.base)),
        }
    }

    /// Routes one request (see the module doc of `demo` for the routes).
    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        let path = req.uri().path();
        if let Some(route) = shop::ShopPage::of(path) {
            return match route {
                _ if !get => method_not_allowed("GET, HEAD"),
                shop::ShopPage::Page => shop::page(),
                shop::ShopPage::Style => shop::style(),
                shop::ShopPage::Script => shop::script(),
                // The same answer as the first app's, below another path.
                shop::ShopPage::Whoami => self.whoami_answer(req.headers()).await,
            };
        }
        match path {
            "/" | "/api/whoami" | "/ws" if !get => method_not_allowed("GET, HEAD"),
            "/" => {
                let seen = Seen::from_headers(req.headers());
                let check = self.check_assertion(req.headers(), &seen).await;
                page(&seen, &check)
            }
            "/api/whoami" => self.whoami_answer(req.headers()).await,
            "/ws" => websocket::accept(req),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// `GET /api/whoami`: what the app was told, as JSON.
    async fn whoami_answer(&self, headers: &HeaderMap) -> Response<Full<Bytes>> {
        let seen = Seen::from_headers(headers);
        let check = self.check_assertion(headers, &seen).await;
        whoami(&seen, &check)
    }

    /// Verifies the assertion as an upstream should: signature and expiry
    /// against the gateway's JWK Set, then that it speaks of the same user
    /// and app as the plain identity headers.
    async fn check_assertion(&self, headers: &HeaderMap, seen: &Seen) -> AssertionCheck {
        let mut values = headers.get_all("x-embed-assertion").iter();
        let Some(value) = values.next() else {
            return AssertionCheck::Absent;
        };
        if values.next().is_some() {
            return AssertionCheck::NotVerified("more than one X-Embed-Assertion header".to_owned());
        }
        let Ok(token) = value.to_str() else {
            return AssertionCheck::NotVerified("X-Embed-Assertion is not ASCII".to_owned());
        };
        let claims = match self.jwks.verify(token.trim()).await {
            Ok(Value::Object(claims)) => claims,
            Ok(_) => return AssertionCheck::NotVerified("claims are not a JSON object".to_owned()),
            Err(reason) => return AssertionCheck::NotVerified(reason),
        };
        let claim = |name: &str| claims.get(name).and_then(Value::as_str);
        if let Some(app) = &seen.app {
            if claim("aud") != Some(app.as_str()) {
                return AssertionCheck::NotVerified("its aud is not the X-Embed-App header".to_owned());
            }
        }
        if let Some(user) = &seen.user {
            if !claim("sub").is_some_and(|sub| sub.eq_ignore_ascii_case(user)) {
                return AssertionCheck::NotVerified("its sub is not the X-Embed-User header".to_owned());
            }
        }
        AssertionCheck::Verified(claims)
    }
}

/// What the app was told by whoever is in front of it.
struct Seen {
    user: Option<String>,
    groups: Option<Vec<String>>,
    app: Option<String>,
    forwarded_for: Option<String>,
    forwarded_proto: Option<String>,
    forwarded_host: Option<String>,
    /// `X-Forwarded-Prefix` as received, for display.
    forwarded_prefix: Option<String>,
    /// The prefix that the page's URLs are built under: the received one
    /// when it is a plain absolute path, else empty (the root).
    mount: String,
}

impl Seen {
    fn from_headers(headers: &HeaderMap) -> Self {
        let forwarded_prefix = header_text(headers, "x-forwarded-prefix");
        Seen {
            user: header_text(headers, "x-embed-user"),
            groups: header_text(headers, "x-embed-groups").map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            app: header_text(headers, "x-embed-app"),
            forwarded_for: header_text(headers, "x-forwarded-for"),
            forwarded_proto: header_text(headers, "x-forwarded-proto"),
            forwarded_host: header_text(headers, "x-forwarded-host"),
            mount: mount_prefix(forwarded_prefix.as_deref()),
            forwarded_prefix,
        }
    }

    fn has_identity(&self) -> bool {
        self.user.is_some() || self.groups.is_some() || self.app.is_some()
    }
}

/// The path the page's URLs go under. Only a plain absolute path is taken:
/// anything else (`//host`, a scheme, quotes, spaces) could point the page's
/// links and WebSocket elsewhere, so it falls back to the root.
fn mount_prefix(received: Option<&str>) -> String {
    let Some(prefix) = received.and_then(|p| p.split(',').next()).map(str::trim) else {
        return String::new();
    };
    let plain = prefix.starts_with('/')
        && !prefix.starts_with("//")
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~%".contains(&b));
    if plain {
        prefix.trim_end_matches('/').to_owned()
    } else {
        String::new()
    }
}

/// A table of `(name, value)` rows; an absent value says so.
fn table<'a>(rows: impl IntoIterator<Item = (&'static str, Option<&'a str>)>) -> Html {
    let mut out = Html::trusted("<table>\n");
    for (name, value) in rows {
        let value = match value {
            Some(v) => render("<code>{{text}}</code>", &[("text", Html::escape(v))]),
            None => Html::trusted("<em>absent</em>"),
        };
        out.push(render(
            "<tr><th>{{name}}</th><td>{{value}}</td></tr>\n",
            &[("name", Html::escape(name)), ("value", value)],
        ));
    }
    out.push(Html::trusted("</table>"));
    out
}

/// The assertion part of the page: whether it verified and, if so, what it
/// says. The token itself is a credential and never shown (SPEC §8).
fn assertion_html(check: &AssertionCheck) -> Html {
    match check {
        AssertionCheck::Absent => Html::trusted("<p>X-Embed-Assertion: <strong>absent</strong></p>"),
        AssertionCheck::NotVerified(reason) => render(
            "<p>X-Embed-Assertion: <strong>present</strong></p>\n\
             <p class=\"bad\">assertion NOT verified: {{reason}}</p>",
            &[("reason", Html::escape(reason))],
        ),
        AssertionCheck::Verified(claims) => {
            let mut out = Html::trusted(
                "<p>X-Embed-Assertion: <strong>present</strong></p>\n\
                 <p class=\"ok\">assertion verified against the gateway's JWKS ✓</p>\n",
            );
            let values: Vec<(&'static str, Option<String>)> = ["sub", "aud", "groups", "iss", "iat", "exp"]
                .into_iter()
                .map(|name| (name, claims.get(name).map(|v| claim_text(name, v))))
                .collect();
            out.push(table(values.iter().map(|(name, value)| (*name, value.as_deref()))));
            out
        }
    }
}

/// A claim as the page shows it: lists joined, `exp` with the time left.
fn claim_text(name: &str, value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Number(n) if name == "exp" => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let left = n.as_u64().unwrap_or(0).saturating_sub(now);
            format!("{n} (in {left} s)")
        }
        other => other.to_string(),
    }
}

/// The assertion part of `/api/whoami`.
fn assertion_json(check: &AssertionCheck) -> Value {
    match check {
        AssertionCheck::Absent => json!({"present": false, "verified": false}),
        AssertionCheck::NotVerified(reason) => json!({"present": true, "verified": false, "error": reason}),
        AssertionCheck::Verified(claims) => json!({"present": true, "verified": true, "claims": claims}),
    }
}

/// `GET /`: the page of what the app was told.
fn page(seen: &Seen, check: &AssertionCheck) -> Response<Full<Bytes>> {
    let identity = if seen.has_identity() {
        let groups = seen.groups.as_ref().map(|g| g.join(", "));
        table([
            ("X-Embed-User", seen.user.as_deref()),
            ("X-Embed-Groups", groups.as_deref()),
            ("X-Embed-App", seen.app.as_deref()),
        ])
    } else {
        Html::trusted("<p class=\"none\">no identity: reached without an embed session</p>")
    };
    let forwarded = table([
        ("X-Forwarded-For", seen.forwarded_for.as_deref()),
        ("X-Forwarded-Proto", seen.forwarded_proto.as_deref()),
        ("X-Forwarded-Host", seen.forwarded_host.as_deref()),
        ("X-Forwarded-Prefix", seen.forwarded_prefix.as_deref()),
    ]);
    // What the page tells a framing portal goes in data attributes, so that
    // no header value is ever spliced into the script.
    let verified = matches!(check, AssertionCheck::Verified(_));
    let page = render(
        PAGE,
        &[
            ("style", Html::trusted(STYLE)),
            ("user", Html::escape(seen.user.as_deref().unwrap_or(""))),
            ("verified", Html::trusted(if verified { "true" } else { "false" })),
            ("identity", identity),
            ("assertion", assertion_html(check)),
            ("forwarded", forwarded),
            ("mount", Html::escape(&seen.mount)),
            ("script", Html::trusted(SCRIPT)),
        ],
    );
    html_response(StatusCode::OK, page)
}

/// `GET /api/whoami`: the same as the page, as JSON.
fn whoami(seen: &Seen, check: &AssertionCheck) -> Response<Full<Bytes>> {
    let body = json!({
        "user": seen.user,
        "groups": seen.groups,
        "app": seen.app,
        "assertion": assertion_json(check),
        "forwarded": {
            "for": seen.forwarded_for,
            "proto": seen.forwarded_proto,
            "host": seen.forwarded_host,
            "prefix": seen.forwarded_prefix,
        },
    });
    json_response(StatusCode::OK, &body)
}
