//! The bundled demo (SPEC §1, issue 3 item 11): a demo upstream app and a
//! demo customer portal, both on loopback, so that a newcomer opens one URL
//! and sees an app embedded through a PAT.
//!
//! **The app** plays an ordinary upstream and knows nothing of PATs or
//! sessions: it reads the identity and `X-Forwarded-*` headers (SPEC §5),
//! verifies `X-Embed-Assertion` against the gateway's JWK Set as a real
//! upstream would, and builds every URL of its page under
//! `X-Forwarded-Prefix` so that it works mounted at `/embed-apps/<appId>` as
//! well as at the root. Routes, relative to the mount prefix:
//! - `GET /`: an HTML page with the identity, the assertion check, the
//!   forwarded headers, a link to `api/whoami` and a WebSocket echo widget;
//! - `GET /api/whoami`: the same as JSON;
//! - `GET /ws`: a WebSocket (RFC 6455) that echoes every message;
//! - anything else: 404.
//!
//! **The portal** plays the customer's portal on its own origin (cross-site
//! from the gateway, so the iframe is truly third-party). Its server side
//! mints a PAT exactly as ToolJet's sample Node portal does (SPEC §3) and
//! its page frames the returned `redirectUrl`. Routes:
//! - `GET /`: mint a PAT and render the page with the iframe
//!   (`/?revoked=<n>`: the page after a revocation, without minting);
//! - `POST /revoke`: revoke the user's sessions (SPEC §6), then 303 to
//!   `/?revoked=<n>`, or JSON when the request accepts `application/json`;
//! - anything else: 404.
//!
//! The demo API token stays on the portal's server side: no page, error or
//! log line shows it (SPEC §8), nor the assertion.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::assertion::{self, AssertionError};

type Body = Full<Bytes>;

/// Where the gateway publishes its assertion keys (SPEC §5).
const JWKS_PATH: &str = "/.well-known/embedgate/jwks.json";
/// How long the app trusts a fetched JWK Set before fetching it again.
const JWKS_TTL: Duration = Duration::from_secs(60);
/// The whole JWKS fetch, connection included, must take less than this.
const JWKS_TIMEOUT: Duration = Duration::from_secs(2);
/// Connecting to the gateway must take less than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A portal call to the gateway's API must take less than this in all.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger answers from the gateway are refused, not buffered.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How much of the gateway's error message a page shows.
const MAX_MESSAGE_CHARS: usize = 300;

/// How the demo app reaches the gateway from the server side.
#[derive(Clone, Debug)]
pub struct GatewayLink {
    /// The gateway's base URL over plain HTTP, e.g. `http://127.0.0.1:8443`;
    /// the app fetches `<base>/.well-known/embedgate/jwks.json`.
    pub base: String,
}

/// What the demo portal needs to mint PATs.
#[derive(Clone)]
pub struct Portal {
    /// The gateway's base URL from the server side, over plain HTTP, e.g.
    /// `http://127.0.0.1:8443`.
    pub gateway_api: String,
    /// The API token sent as `Authorization: Basic <token>`. Never shown.
    pub api_token: String,
    /// The user the portal embeds the app for.
    pub email: String,
    /// The app it embeds.
    pub app_id: String,
}

/// Leaves the API token out (SPEC §8).
impl fmt::Debug for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Portal")
            .field("gateway_api", &self.gateway_api)
            .field("api_token", &"<redacted>")
            .field("email", &self.email)
            .field("app_id", &self.app_id)
            .finish()
    }
}

/// Binds `listen` and serves the demo app on it in a background task, for
/// as long as the runtime lives. Returns the bound address (useful with
/// port 0).
pub async fn spawn_app(listen: SocketAddr, gateway: GatewayLink) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    let app = Arc::new(App {
        gateway,
        jwks: Mutex::new(None),
    });
    tokio::spawn(accept_loop(listener, "demo app", move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.handle(req).await) }
    }));
    Ok(local)
}

/// Binds `listen` and serves the demo portal on it in a background task,
/// for as long as the runtime lives. Returns the bound address.
pub async fn spawn_portal(listen: SocketAddr, portal: Portal) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    let portal = Arc::new(portal);
    tokio::spawn(accept_loop(listener, "demo portal", move |req| {
        let portal = portal.clone();
        async move { Ok::<_, Infallible>(portal_handle(&portal, req).await) }
    }));
    Ok(local)
}

/// Accepts connections on `listener` forever and serves each with
/// `service`, HTTP/1.1 or HTTP/2, upgrades included.
async fn accept_loop<F, Fut>(listener: TcpListener, name: &'static str, service: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: back off instead of
                // spinning, and keep serving once it passes.
                tracing::warn!(error = %e, "{name}: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = service.clone();
        tokio::spawn(async move {
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service_fn(service))
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "{name}: connection ended with an error");
            }
        });
    }
}

/// The demo app's state: how to reach the gateway, and its JWK Set.
struct App {
    gateway: GatewayLink,
    jwks: Mutex<Option<CachedJwks>>,
}

/// The gateway's JWK Set as last fetched.
struct CachedJwks {
    text: Arc<str>,
    fetched: Instant,
}

/// What became of the request's `X-Embed-Assertion`.
enum AssertionCheck {
    Absent,
    Verified(Map<String, Value>),
    NotVerified(String),
}

impl App {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match req.uri().path() {
            "/" | "/api/whoami" | "/ws" if !get => method_not_allowed("GET, HEAD"),
            "/" => {
                let seen = Seen::from_headers(req.headers());
                let check = self.check_assertion(req.headers(), &seen).await;
                html_page(&seen, &check)
            }
            "/api/whoami" => {
                let seen = Seen::from_headers(req.headers());
                let check = self.check_assertion(req.headers(), &seen).await;
                whoami(&seen, &check)
            }
            "/ws" => websocket(req),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
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
        let claims = match self.verify(token.trim()).await {
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

    /// [`assertion::verify`] against the cached JWK Set, fetched again once
    /// when the token names a key it does not hold (the gateway may have
    /// restarted with a new key).
    async fn verify(&self, token: &str) -> Result<Value, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (jwks, fresh) = match self.cached_jwks() {
            Some(jwks) => (jwks, false),
            None => (self.fetch_jwks().await?, true),
        };
        let verified = match assertion::verify(&jwks, token, now) {
            Err(AssertionError::UnknownKid) if !fresh => {
                let jwks = self.fetch_jwks().await?;
                assertion::verify(&jwks, token, now)
            }
            other => other,
        };
        verified.map_err(|e| e.to_string())
    }

    fn cached_jwks(&self) -> Option<Arc<str>> {
        let cache = self.jwks.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .as_ref()
            .filter(|c| c.fetched.elapsed() < JWKS_TTL)
            .map(|c| c.text.clone())
    }

    async fn fetch_jwks(&self) -> Result<Arc<str>, String> {
        let accept = (header::ACCEPT, HeaderValue::from_static("application/json"));
        let answer = call(
            &self.gateway.base,
            Method::GET,
            JWKS_PATH,
            vec![accept],
            Bytes::new(),
            JWKS_TIMEOUT,
        )
        .await
        .map_err(|e| format!("cannot fetch the gateway's JWKS: {e}"))?;
        if answer.status != StatusCode::OK {
            return Err(format!("the gateway's JWKS answered {}", answer.status));
        }
        let text: Arc<str> = String::from_utf8(answer.body.to_vec())
            .map_err(|_| "the gateway's JWKS is not UTF-8".to_owned())?
            .into();
        *self.jwks.lock().unwrap_or_else(PoisonError::into_inner) = Some(CachedJwks {
            text: text.clone(),
            fetched: Instant::now(),
        });
        Ok(text)
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

/// All values of a header joined with ", " (RFC 9110 §5.3), or `None` when
/// absent. Bytes that are not UTF-8 are replaced, not trusted.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
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

/// Escapes text for HTML element content and quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn row(out: &mut String, name: &str, value: Option<&str>) {
    let value = match value {
        Some(v) => format!("<code>{}</code>", escape_html(v)),
        None => "<em>absent</em>".to_owned(),
    };
    out.push_str(&format!("<tr><th>{name}</th><td>{value}</td></tr>\n"));
}

/// The assertion part of the page: whether it verified and, if so, what it
/// says. The token itself is a credential and never shown (SPEC §8).
fn assertion_html(check: &AssertionCheck) -> String {
    match check {
        AssertionCheck::Absent => "<p>X-Embed-Assertion: <strong>absent</strong></p>\n".to_owned(),
        AssertionCheck::NotVerified(reason) => format!(
            "<p>X-Embed-Assertion: <strong>present</strong></p>\n\
             <p class=\"bad\">assertion NOT verified: {}</p>\n",
            escape_html(reason)
        ),
        AssertionCheck::Verified(claims) => {
            let mut out = String::from(
                "<p>X-Embed-Assertion: <strong>present</strong></p>\n\
                 <p class=\"ok\">assertion verified against the gateway's JWKS ✓</p>\n<table>\n",
            );
            for name in ["sub", "aud", "groups", "iss", "iat", "exp"] {
                let value = claims.get(name).map(|v| match v {
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
                });
                row(&mut out, name, value.as_deref());
            }
            out.push_str("</table>\n");
            out
        }
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

fn html_page(seen: &Seen, check: &AssertionCheck) -> Response<Body> {
    let mut identity = String::new();
    if seen.has_identity() {
        identity.push_str("<table>\n");
        row(&mut identity, "X-Embed-User", seen.user.as_deref());
        let groups = seen.groups.as_ref().map(|g| g.join(", "));
        row(&mut identity, "X-Embed-Groups", groups.as_deref());
        row(&mut identity, "X-Embed-App", seen.app.as_deref());
        identity.push_str("</table>\n");
    } else {
        identity.push_str("<p class=\"none\">no identity: reached without an embed session</p>\n");
    }
    let assertion = assertion_html(check);
    let mut forwarded = String::from("<table>\n");
    row(&mut forwarded, "X-Forwarded-For", seen.forwarded_for.as_deref());
    row(&mut forwarded, "X-Forwarded-Proto", seen.forwarded_proto.as_deref());
    row(&mut forwarded, "X-Forwarded-Host", seen.forwarded_host.as_deref());
    row(&mut forwarded, "X-Forwarded-Prefix", seen.forwarded_prefix.as_deref());
    forwarded.push_str("</table>\n");
    let mount = escape_html(&seen.mount);
    // What the page tells a framing portal (see PORTAL_SCRIPT), via data
    // attributes so no header value is ever spliced into the script.
    let who = escape_html(seen.user.as_deref().unwrap_or(""));
    let verified = matches!(check, AssertionCheck::Verified(_));

    let page = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>embedgate demo app</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d2433; }}
h1 {{ font-size: 1.4rem; }}
h2 {{ font-size: 1.1rem; margin-top: 1.5rem; }}
table {{ border-collapse: collapse; }}
th, td {{ text-align: left; padding: .25rem .75rem .25rem 0; vertical-align: top; }}
th {{ font-weight: 600; }}
code {{ background: #f1f3f7; padding: 0 .25rem; border-radius: 3px; }}
.none, .bad {{ color: #a33; }}
.ok {{ color: #17693a; font-weight: 600; }}
#ws-log {{ background: #f1f3f7; padding: .5rem; min-height: 3rem; white-space: pre-wrap; }}
</style>
</head>
<body data-user="{who}" data-verified="{verified}">
<h1>embedgate demo app</h1>
<h2>Who the gateway says you are</h2>
{identity}{assertion}<h2>How the request reached this app</h2>
{forwarded}<p>The same as JSON: <a href="{mount}/api/whoami">{mount}/api/whoami</a></p>
<h2>WebSocket echo</h2>
<form id="ws-form" data-prefix="{mount}">
<input id="ws-input" value="hello through the gateway" size="32">
<button type="submit">Send</button>
</form>
<pre id="ws-log"></pre>
<script>
(function () {{
  // Tell a framing portal who the gateway said we are (nothing secret).
  if (window.parent && window.parent !== window) {{
    window.parent.postMessage({{
      type: 'embedgate-demo:identity',
      user: document.body.dataset.user || null,
      verified: document.body.dataset.verified === 'true'
    }}, '*');
  }}
  var form = document.getElementById('ws-form');
  var input = document.getElementById('ws-input');
  var log = document.getElementById('ws-log');
  var scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  var url = scheme + '//' + location.host + form.dataset.prefix + '/ws';
  function say(line) {{ log.textContent += line + '\n'; }}
  var socket = null;
  var queue = [];
  function connect() {{
    say('connecting to ' + url);
    socket = new WebSocket(url);
    socket.onopen = function () {{
      say('open');
      while (queue.length) {{ socket.send(queue.shift()); }}
    }};
    socket.onmessage = function (event) {{ say('echo: ' + event.data); }};
    socket.onclose = function (event) {{ say('closed (' + event.code + ')'); socket = null; }};
    socket.onerror = function () {{ say('error'); }};
  }}
  form.addEventListener('submit', function (event) {{
    event.preventDefault();
    var text = input.value;
    say('sent: ' + text);
    if (socket && socket.readyState === WebSocket.OPEN) {{
      socket.send(text);
    }} else {{
      queue.push(text);
      if (!socket) {{ connect(); }}
    }}
  }});
  // `?ws-echo` in the address sends the message once on load: a check
  // that needs no click (the browser tests use it).
  if (new URLSearchParams(location.search).has('ws-echo')) {{ form.requestSubmit(); }}
}})();
</script>
</body>
</html>
"#
    );
    html_response(StatusCode::OK, page)
}

/// An HTML page that no cache keeps and no browser sniffs.
fn html_response(status: StatusCode, page: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(page)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn whoami(seen: &Seen, check: &AssertionCheck) -> Response<Body> {
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
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether a comma-separated header holds `token`, case-insensitively.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Accepts a WebSocket opening handshake (RFC 6455 §4.2) and echoes every
/// text and binary message on the upgraded connection.
fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let headers = req.headers();
    let is_upgrade = req.method() == Method::GET
        && has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket");
    if !is_upgrade {
        return text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut response = text(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key\n");
    };

    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "demo app: WebSocket upgrade failed");
                return;
            }
        };
        let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        echo(socket).await;
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

async fn echo<S>(mut socket: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(message) = socket.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!(error = %e, "demo app: WebSocket read failed");
                return;
            }
        };
        match message {
            Message::Text(_) | Message::Binary(_) => {
                if let Err(e) = socket.send(message).await {
                    tracing::debug!(error = %e, "demo app: WebSocket write failed");
                    return;
                }
            }
            // tungstenite queues the replies to a ping and to a Close itself,
            // and flushes them on the next read: after a Close that read
            // sends the reply and ends the stream (RFC 6455 §5.5.1).
            Message::Close(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

// ---------------------------------------------------------------------------
// Calling the gateway from the server side.

/// Why a call to the gateway failed. Never carries a credential.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("gateway URL {0:?} is not http://host[:port][/path]")]
    BadBase(String),
    #[error("the API token cannot be sent in a header")]
    BadToken,
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    #[error("{0} did not answer in time")]
    Timeout(String),
    #[error("HTTP exchange with {authority} failed: {source}")]
    Http {
        authority: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the answer from {0} is broken or larger than {MAX_RESPONSE_BYTES} bytes")]
    Body(String),
}

/// A whole answer of the gateway.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// Aborts the connection task when the call ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP/1.1 request to `base` + `path` over a fresh plain-TCP
/// connection, all within `total` (connecting within [`CONNECT_TIMEOUT`]);
/// the answer's body is read whole up to [`MAX_RESPONSE_BYTES`].
async fn call(
    base: &str,
    method: Method,
    path: &str,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    total: Duration,
) -> Result<Answer, CallError> {
    let bad_base = || CallError::BadBase(base.to_owned());
    let uri: Uri = base.parse().map_err(|_| bad_base())?;
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(bad_base());
    };
    if authority.as_str().contains('@') || uri.query().is_some() {
        return Err(bad_base());
    }
    let authority = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    let target = format!("{}{path}", uri.path().trim_end_matches('/'));
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header(header::HOST, authority.as_str());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request.body(Full::new(body)).map_err(|_| bad_base())?;
    match tokio::time::timeout(total, exchange(&authority, request)).await {
        Ok(answer) => answer,
        Err(_) => Err(CallError::Timeout(authority)),
    }
}

async fn exchange(authority: &str, request: Request<Body>) -> Result<Answer, CallError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => {
            return Err(CallError::Connect {
                authority: authority.to_owned(),
                source,
            })
        }
        Err(_) => return Err(CallError::ConnectTimeout(authority.to_owned())),
    };
    let http = |source| CallError::Http {
        authority: authority.to_owned(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "demo: connection to the gateway ended with an error");
        }
    }));
    let response = sender.send_request(request).await.map_err(http)?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|_| CallError::Body(authority.to_owned()))?
        .to_bytes();
    Ok(Answer {
        status: parts.status,
        body,
    })
}

// ---------------------------------------------------------------------------
// The demo portal.

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

/// `POST <gateway_api><path>` with the portal's API token, as ToolJet's
/// sample portal does: `Authorization: Basic <token>` (the token as is, not
/// a user:password pair) and a JSON body.
async fn api_call(portal: &Portal, path: &str, body: &Value) -> Result<Answer, ApiFailure> {
    let mut auth = HeaderValue::from_str(&format!("Basic {}", portal.api_token))
        .map_err(|_| ApiFailure::Unreachable(CallError::BadToken))?;
    auth.set_sensitive(true);
    let headers = vec![
        (header::AUTHORIZATION, auth),
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::ACCEPT, HeaderValue::from_static("application/json")),
    ];
    let body = Bytes::from(body.to_string());
    call(&portal.gateway_api, Method::POST, path, headers, body, API_TIMEOUT)
        .await
        .map_err(ApiFailure::Unreachable)
}

/// The JSON body of an answer, if it is a JSON object.
fn json_object(answer: &Answer) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&answer.body).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The failure for an answer that is not the expected success: its status
/// and the `message` of its JSON error body (SPEC §3), clipped, and with the
/// API token blotted out should it ever be echoed.
fn refused(portal: &Portal, answer: &Answer) -> ApiFailure {
    let message = json_object(answer)
        .and_then(|body| body.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "(no JSON message)".to_owned());
    let mut message: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    if !portal.api_token.is_empty() {
        message = message.replace(&portal.api_token, "[redacted]");
    }
    ApiFailure::Refused {
        status: answer.status,
        message,
    }
}

/// Mints a PAT for the portal's user and app (SPEC §3) and returns the
/// `redirectUrl` to frame.
async fn mint(portal: &Portal) -> Result<String, ApiFailure> {
    let body = json!({
        "email": portal.email,
        "appId": portal.app_id,
        "sessionExpiry": 60,
        "patExpiry": 300,
    });
    let answer = api_call(portal, "/api/ext/users/personal-access-token", &body).await?;
    if answer.status != StatusCode::CREATED {
        return Err(refused(portal, &answer));
    }
    let url = json_object(&answer).and_then(|body| body.get("redirectUrl").and_then(Value::as_str).map(str::to_owned));
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
async fn revoke_sessions(portal: &Portal) -> Result<(u64, u64), ApiFailure> {
    let body = json!({"email": portal.email, "appId": portal.app_id});
    let answer = api_call(portal, "/api/ext/users/sessions/revoke", &body).await?;
    if answer.status != StatusCode::OK {
        return Err(refused(portal, &answer));
    }
    let body = json_object(&answer).unwrap_or_default();
    let count = |name: &str| body.get(name).and_then(Value::as_u64).unwrap_or(0);
    Ok((count("revokedSessions"), count("revokedTokens")))
}

async fn portal_handle(portal: &Portal, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/" if req.method() == Method::GET => match revoked_param(req.uri().query()) {
            Some(revoked) => portal_revoked_page(portal, revoked),
            None => match mint(portal).await {
                Ok(redirect_url) => portal_page(portal, &redirect_url),
                Err(failure) => portal_error_page(portal, &failure),
            },
        },
        "/" => method_not_allowed("GET"),
        "/revoke" if req.method() == Method::POST => portal_revoke(portal, &req).await,
        "/revoke" => method_not_allowed("POST"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `n` of a `revoked=n` query parameter.
fn revoked_param(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("revoked="))
        .and_then(|n| n.parse().ok())
}

/// `POST /revoke`. Refused from another origin, so that no other site can
/// end the user's sessions with a cross-site form.
async fn portal_revoke(portal: &Portal, req: &Request<Incoming>) -> Response<Body> {
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
    match (revoke_sessions(portal).await, wants_json) {
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
        (Err(failure), false) => portal_error_page(portal, &failure),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The page around every portal view.
fn portal_html(status: StatusCode, main: &str) -> Response<Body> {
    let page = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Acme customer portal (embedgate demo)</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #1d2433; background: #f5f6fa; }}
header {{ background: #23304a; color: #fff; padding: .9rem 1.5rem; }}
header h1 {{ font-size: 1.25rem; margin: 0; }}
main {{ padding: 1rem 1.5rem; max-width: 72rem; }}
code {{ background: #e8ebf2; padding: 0 .25rem; border-radius: 3px; }}
.banner {{ background: #fff4d6; border: 1px solid #e0c066; padding: .6rem .9rem; border-radius: 6px; margin: .75rem 0; }}
.bad {{ color: #a33; }}
iframe {{ display: block; width: 100%; height: 600px; border: 1px solid #c9cfdb; border-radius: 6px; background: #fff; }}
form {{ margin: .75rem 0; }}
</style>
</head>
<body>
<header><h1>Acme customer portal (embedgate demo)</h1></header>
<main>
{main}</main>
</body>
</html>
"#
    );
    // The page holds a PAT in the iframe's URL: no cache may keep it (see
    // `html_response`) and no Referer may carry it.
    let mut response = html_response(status, page);
    response
        .headers_mut()
        .insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Who and what the portal embeds, for every view.
fn portal_identity(portal: &Portal) -> String {
    format!(
        "<p>Signed in as <strong>{}</strong> · embedded app <code>{}</code></p>\n",
        escape_html(&portal.email),
        escape_html(&portal.app_id)
    )
}

/// Shows a banner when the framed app says its session ended: the gateway's
/// own message and ToolJet's, so that portals written for either react.
/// Only messages from the iframe's origin count. The revoke button uses
/// `fetch` when it can, so the frame stays and shows the revocation.
const PORTAL_SCRIPT: &str = r#"<script>
(function () {
  var frame = document.getElementById('app-frame');
  var expired = document.getElementById('expired');
  var status = document.getElementById('embed-status');
  var gatewayOrigin = frame ? new URL(frame.src, location.href).origin : null;
  window.addEventListener('message', function (event) {
    if (!frame || event.origin !== gatewayOrigin) { return; }
    var data = event.data;
    if (data && (data.type === 'embedgate:session-expired' || data.type === 'TJ_EMBED_APP_LOGOUT')) {
      expired.hidden = false;
      status.textContent = 'the embedded app reports: session ended';
    }
    if (data && data.type === 'embedgate-demo:identity') {
      status.textContent = 'the embedded app reports: user ' + (data.user || '(none)') + ', assertion ' +
        (data.verified ? 'verified' : 'NOT verified');
    }
  });
  var form = document.getElementById('revoke');
  var result = document.getElementById('revoke-result');
  if (form && frame && window.fetch) {
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      result.textContent = 'revoking…';
      fetch('/revoke', { method: 'POST', headers: { 'Accept': 'application/json' } })
        .then(function (response) {
          return response.json().then(function (body) {
            if (!response.ok) { throw new Error(body.message || ('HTTP ' + response.status)); }
            return body;
          });
        })
        .then(function (body) {
          result.textContent = 'revoked ' + body.revokedSessions + ' session(s): the app below has lost its ' +
            'session; its next request (a link, a WebSocket message) shows it.';
        })
        .catch(function (error) { result.textContent = 'revoke failed: ' + error.message; });
    });
  }
})();
</script>
"#;

fn portal_page(portal: &Portal, redirect_url: &str) -> Response<Body> {
    let main = format!(
        r#"<p>This page plays your customer portal, on an origin of its own. Its server side has just asked the
gateway for a personal access token for the user below (<code>POST /api/ext/users/personal-access-token</code>
with the portal's API token, which never reaches this page), and the frame opens the <code>redirectUrl</code> it
got back: the gateway swaps the one-time token for an isolated embed session and proxies the demo app, telling it
who you are with a signed assertion.</p>
{identity}<div id="expired" class="banner" hidden>The embedded app's session has ended.
<a href="/">Reload</a> to start a new one.</div>
<form id="revoke" method="post" action="/revoke"><button type="submit">Revoke session</button>
<span id="revoke-result" role="status"></span></form>
<p id="embed-status" role="status">waiting for the embedded app…</p>
<iframe id="app-frame" src="{src}" title="embedded demo app" width="100%" height="600"></iframe>
{PORTAL_SCRIPT}"#,
        identity = portal_identity(portal),
        src = escape_html(redirect_url),
    );
    portal_html(StatusCode::OK, &main)
}

fn portal_revoked_page(portal: &Portal, revoked: u64) -> Response<Body> {
    let main = format!(
        r#"{identity}<div class="banner">revoked {revoked} session(s): the gateway ended every embed session and unused
token of this user for the app.</div>
<p><a href="/">Open a new embedded session</a> (mints a fresh personal access token).</p>
{PORTAL_SCRIPT}"#,
        identity = portal_identity(portal),
    );
    portal_html(StatusCode::OK, &main)
}

fn portal_error_page(portal: &Portal, failure: &ApiFailure) -> Response<Body> {
    let detail = match failure {
        ApiFailure::Unreachable(e) => format!(
            "<p class=\"bad\">The portal could not reach the gateway: {}</p>\n",
            escape_html(&e.to_string())
        ),
        ApiFailure::Refused { status, message } => format!(
            "<p class=\"bad\">The gateway answered <strong>{}</strong>: <code>{}</code></p>\n",
            escape_html(&status.to_string()),
            escape_html(message)
        ),
    };
    let main = format!(
        "{identity}<p>The portal's call to the gateway's API failed.</p>\n{detail}\
         <p><a href=\"/\">Try again</a></p>\n",
        identity = portal_identity(portal),
    );
    portal_html(StatusCode::BAD_GATEWAY, &main)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use http_body_util::{BodyExt, Empty};
    use tokio::net::TcpStream;

    use super::*;
    use crate::assertion::{Claims, Signer, LIFETIME_SECONDS};

    const APP_ID: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";
    const EMAIL: &str = "user@example.com";
    const API_TOKEN: &str = "tok_secret_123";

    /// A gateway base URL where nothing listens.
    async fn dead_base() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }

    /// The demo app with a gateway that cannot be reached.
    async fn start() -> SocketAddr {
        start_with(dead_base().await).await
    }

    async fn start_with(base: String) -> SocketAddr {
        spawn_app("127.0.0.1:0".parse().unwrap(), GatewayLink { base })
            .await
            .unwrap()
    }

    /// One request over a fresh HTTP/1.1 connection.
    async fn request(
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        request(addr, Method::GET, path, headers).await
    }

    /// A request as a fake gateway received it.
    #[derive(Clone, Debug)]
    struct Recorded {
        method: Method,
        path: String,
        headers: HeaderMap,
        body: Bytes,
    }

    impl Recorded {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    type Log = Arc<Mutex<Vec<Recorded>>>;

    /// A tiny HTTP server on loopback that records every request and
    /// answers it with `reply`'s status and JSON body. Returns its base URL.
    async fn fake_gateway<F>(reply: F) -> (String, Log)
    where
        F: Fn(&Recorded) -> (StatusCode, String) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let reply = Arc::new(reply);
        let served = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (reply, log) = (reply.clone(), served.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (reply, log) = (reply.clone(), log.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let recorded = Recorded {
                                method: parts.method,
                                path: parts.uri.to_string(),
                                headers: parts.headers,
                                body: body.collect().await.unwrap().to_bytes(),
                            };
                            let (status, body) = reply(&recorded);
                            log.lock().unwrap().push(recorded);
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = status;
                            response
                                .headers_mut()
                                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), log)
    }

    /// A fake gateway that serves `jwks` (which a test may swap) at the
    /// JWKS path, and 404 elsewhere.
    async fn jwks_server(jwks: Arc<Mutex<String>>) -> (String, Log) {
        fake_gateway(move |req| {
            if req.method == Method::GET && req.path == JWKS_PATH {
                (StatusCode::OK, jwks.lock().unwrap().clone())
            } else {
                (StatusCode::NOT_FOUND, "{}".to_owned())
            }
        })
        .await
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn sign(signer: &Signer, sub: &str) -> String {
        let groups = vec!["sales".to_owned(), "ops".to_owned()];
        let iat = now();
        signer
            .sign(&Claims {
                iss: "http://localhost:8443",
                aud: APP_ID,
                sub,
                groups: &groups,
                iat,
                exp: iat + LIFETIME_SECONDS,
            })
            .unwrap()
    }

    /// An app whose gateway serves `signer`'s JWKS.
    async fn app_trusting(signer: &Signer) -> (SocketAddr, Log) {
        let jwks = Arc::new(Mutex::new(signer.jwks_json().to_owned()));
        let (base, log) = jwks_server(jwks).await;
        (start_with(base).await, log)
    }

    fn identity(token: &str) -> [(&'static str, &str); 4] {
        [
            ("x-embed-user", EMAIL),
            ("x-embed-groups", "sales,ops"),
            ("x-embed-app", APP_ID),
            ("x-embed-assertion", token),
        ]
    }

    #[tokio::test]
    async fn page_builds_urls_under_forwarded_prefix() {
        let addr = start().await;
        let prefix = "/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";
        let (status, headers, body) = get(
            addr,
            "/",
            &[
                ("x-forwarded-prefix", prefix),
                ("x-embed-user", "user@example.com"),
                ("x-embed-groups", "sales, ops"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(body.contains("embedgate demo app"));
        assert!(body.contains(&format!("href=\"{prefix}/api/whoami\"")));
        assert!(body.contains(&format!("data-prefix=\"{prefix}\"")));
        assert!(body.contains("form.dataset.prefix + '/ws'"));
        assert!(body.contains("<code>user@example.com</code>"));
        assert!(body.contains("<code>sales, ops</code>"));
        assert!(!body.contains("href=\"/api/whoami\""));
        assert!(!body.contains("no identity"));
    }

    #[tokio::test]
    async fn page_escapes_header_values() {
        let addr = start().await;
        let (status, _, body) = get(
            addr,
            "/",
            &[
                ("x-embed-user", "<script>alert(1)</script>"),
                ("x-embed-app", "\"'&"),
                ("x-forwarded-host", "<img src=x>"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.contains("<script>alert"));
        assert!(!body.contains("<img"));
        assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(body.contains("&quot;&#39;&amp;"));
        assert!(body.contains("&lt;img src=x&gt;"));
    }

    #[tokio::test]
    async fn page_without_identity_says_so() {
        let addr = start().await;
        let (status, _, body) = get(addr, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("no identity: reached without an embed session"));
        assert!(body.contains("X-Embed-Assertion: <strong>absent</strong>"));
        assert!(body.contains("href=\"/api/whoami\""));
        assert!(body.contains("data-prefix=\"\""));
    }

    #[tokio::test]
    async fn page_ignores_a_prefix_that_leaves_the_origin() {
        let addr = start().await;
        for bad in ["//evil.example", "https://evil.example", "/a\" onclick=\"x"] {
            let (_, _, body) = get(addr, "/", &[("x-forwarded-prefix", bad)]).await;
            assert!(body.contains("href=\"/api/whoami\""), "{bad}");
            assert!(body.contains("data-prefix=\"\""), "{bad}");
        }
    }

    #[tokio::test]
    async fn websocket_echoes_text_and_binary() {
        let addr = start().await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        ws.send(Message::binary(vec![0u8, 1, 255])).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(vec![0u8, 1, 255]));
        ws.close(None).await.unwrap();
        // The server completes the closing handshake, then the stream ends.
        while let Some(message) = ws.next().await {
            assert!(matches!(message, Ok(Message::Close(_))), "{message:?}");
        }
    }

    #[tokio::test]
    async fn ws_without_upgrade_is_bad_request() {
        let addr = start().await;
        let (status, _, _) = get(addr, "/ws", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn unknown_path_is_not_found() {
        let addr = start().await;
        let (status, _, body) = get(addr, "/nope", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "not found\n");
    }

    #[test]
    fn escape_html_escapes_the_five_specials() {
        assert_eq!(escape_html("a<b>&\"'c"), "a&lt;b&gt;&amp;&quot;&#39;c");
        assert_eq!(escape_html("plain é"), "plain é");
    }

    #[test]
    fn mount_prefix_takes_plain_paths_only() {
        assert_eq!(mount_prefix(None), "");
        assert_eq!(mount_prefix(Some("/embed-apps/x/")), "/embed-apps/x");
        assert_eq!(mount_prefix(Some("/a, /b")), "/a");
        assert_eq!(mount_prefix(Some("//evil.example")), "");
        assert_eq!(mount_prefix(Some("javascript:x")), "");
        assert_eq!(mount_prefix(Some("/a<b")), "");
    }

    #[tokio::test]
    async fn page_reports_assertion_presence_not_value() {
        let addr = start().await;
        let (_, _, body) = get(addr, "/", &[("x-embed-assertion", "eyJsecret")]).await;
        assert!(body.contains("X-Embed-Assertion: <strong>present</strong>"));
        assert!(
            body.contains("assertion NOT verified: cannot fetch the gateway&#39;s JWKS"),
            "{body}"
        );
        assert!(!body.contains("eyJsecret"));
    }

    #[tokio::test]
    async fn page_shows_a_verified_assertion_and_its_claims() {
        let signer = Signer::generate().unwrap();
        let (addr, _) = app_trusting(&signer).await;
        let token = sign(&signer, EMAIL);
        let (status, _, body) = get(addr, "/", &identity(&token)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("assertion verified against the gateway's JWKS ✓"),
            "{body}"
        );
        assert!(
            body.contains("<tr><th>sub</th><td><code>user@example.com</code></td></tr>"),
            "{body}"
        );
        assert!(body.contains(&format!("<tr><th>aud</th><td><code>{APP_ID}</code></td></tr>")));
        assert!(body.contains("<tr><th>groups</th><td><code>sales, ops</code></td></tr>"));
        assert!(body.contains("<tr><th>exp</th><td><code>"));
        assert!(!body.contains(&token));
        assert!(!body.contains("NOT verified"));
    }

    #[tokio::test]
    async fn whoami_returns_identity_and_verified_claims_as_json() {
        let signer = Signer::generate().unwrap();
        let (addr, _) = app_trusting(&signer).await;
        let token = sign(&signer, EMAIL);
        let mut headers = identity(&token).to_vec();
        headers.extend([
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "localhost:8443"),
            ("x-forwarded-prefix", "/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc"),
        ]);
        let (status, headers, body) = get(addr, "/api/whoami", &headers).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(!body.contains(&token));
        let mut json: Value = serde_json::from_str(&body).unwrap();
        let claims = json["assertion"]["claims"].take();
        let iat = claims["iat"].as_u64().unwrap();
        assert_eq!(
            claims,
            json!({
                "iss": "http://localhost:8443", "aud": APP_ID, "sub": EMAIL,
                "groups": ["sales", "ops"], "iat": iat, "exp": iat + LIFETIME_SECONDS,
            })
        );
        assert_eq!(
            json,
            json!({
                "user": EMAIL,
                "groups": ["sales", "ops"],
                "app": APP_ID,
                "assertion": {"present": true, "verified": true, "claims": null},
                "forwarded": {
                    "for": "203.0.113.7",
                    "proto": "https",
                    "host": "localhost:8443",
                    "prefix": "/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc",
                },
            })
        );
    }

    #[tokio::test]
    async fn whoami_gives_null_for_absent_headers() {
        let addr = start().await;
        let (status, _, body) = get(addr, "/api/whoami", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json,
            json!({
                "user": null, "groups": null, "app": null,
                "assertion": {"present": false, "verified": false},
                "forwarded": {"for": null, "proto": null, "host": null, "prefix": null},
            })
        );
    }

    /// The token with its claims rewritten to name another user, keeping
    /// the original signature.
    fn tampered(token: &str) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = json!("admin@example.com");
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{}.{claims}.{}", parts[0], parts[2])
    }

    #[tokio::test]
    async fn tampered_assertion_is_not_verified() {
        let signer = Signer::generate().unwrap();
        let (addr, _) = app_trusting(&signer).await;
        let token = tampered(&sign(&signer, EMAIL));
        let headers = [
            ("x-embed-user", "admin@example.com"),
            ("x-embed-assertion", token.as_str()),
        ];
        let (_, _, body) = get(addr, "/api/whoami", &headers).await;
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["assertion"],
            json!({"present": true, "verified": false, "error": "assertion signature does not verify"})
        );
        let (_, _, body) = get(addr, "/", &headers).await;
        assert!(
            body.contains("assertion NOT verified: assertion signature does not verify"),
            "{body}"
        );
        assert!(!body.contains("verified against"));
        assert!(!body.contains(&token));
    }

    #[tokio::test]
    async fn assertion_for_another_user_or_app_is_not_verified() {
        let signer = Signer::generate().unwrap();
        let (addr, _) = app_trusting(&signer).await;
        let token = sign(&signer, "someone@example.com");
        let (_, _, body) = get(addr, "/api/whoami", &identity(&token)).await;
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["assertion"]["verified"], false);
        assert_eq!(json["assertion"]["error"], "its sub is not the X-Embed-User header");

        let token = sign(&signer, EMAIL);
        let headers = [
            ("x-embed-app", "00000000-0000-4000-8000-000000000000"),
            ("x-embed-assertion", token.as_str()),
        ];
        let (_, _, body) = get(addr, "/api/whoami", &headers).await;
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["assertion"]["error"], "its aud is not the X-Embed-App header");
    }

    #[tokio::test]
    async fn garbage_assertion_is_not_verified() {
        let signer = Signer::generate().unwrap();
        let (addr, _) = app_trusting(&signer).await;
        let (_, _, body) = get(addr, "/api/whoami", &[("x-embed-assertion", "not-a-jwt")]).await;
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["assertion"]["present"], true);
        assert_eq!(json["assertion"]["verified"], false);
        assert!(json["assertion"]["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed assertion"));
    }

    #[tokio::test]
    async fn jwks_is_cached_and_fetched_again_for_an_unknown_kid() {
        let first = Signer::generate().unwrap();
        let jwks = Arc::new(Mutex::new(first.jwks_json().to_owned()));
        let (base, log) = jwks_server(jwks.clone()).await;
        let addr = start_with(base).await;
        let verified = |body: String| serde_json::from_str::<Value>(&body).unwrap()["assertion"].clone();

        for _ in 0..2 {
            let token = sign(&first, EMAIL);
            let (_, _, body) = get(addr, "/api/whoami", &identity(&token)).await;
            assert_eq!(verified(body)["verified"], true);
        }
        assert_eq!(log.lock().unwrap().len(), 1, "the second request uses the cached JWKS");

        // The gateway restarts with a new key: one more fetch finds it.
        let second = Signer::generate().unwrap();
        *jwks.lock().unwrap() = second.jwks_json().to_owned();
        let token = sign(&second, EMAIL);
        let (_, _, body) = get(addr, "/api/whoami", &identity(&token)).await;
        assert_eq!(verified(body)["verified"], true);
        assert_eq!(log.lock().unwrap().len(), 2);

        // A key the gateway never had: fetched once more, then refused.
        let stranger = Signer::generate().unwrap();
        let token = sign(&stranger, EMAIL);
        let (_, _, body) = get(addr, "/api/whoami", &identity(&token)).await;
        let assertion = verified(body);
        assert_eq!(assertion["verified"], false);
        assert_eq!(assertion["error"], "assertion signed by an unknown key id");
        assert_eq!(log.lock().unwrap().len(), 3);
        assert!(log
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.path == JWKS_PATH && r.method == Method::GET));
    }

    #[tokio::test]
    async fn jwks_error_status_is_reported() {
        let (base, _) = fake_gateway(|_| (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned())).await;
        let addr = start_with(base).await;
        let (_, _, body) = get(addr, "/api/whoami", &[("x-embed-assertion", "a.b.c")]).await;
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["assertion"]["error"],
            "the gateway's JWKS answered 503 Service Unavailable"
        );
    }

    fn portal_for(gateway_api: String) -> Portal {
        Portal {
            gateway_api,
            api_token: API_TOKEN.to_owned(),
            email: EMAIL.to_owned(),
            app_id: APP_ID.to_owned(),
        }
    }

    async fn start_portal(gateway_api: String) -> SocketAddr {
        spawn_portal("127.0.0.1:0".parse().unwrap(), portal_for(gateway_api))
            .await
            .unwrap()
    }

    /// Whether the fake saw the portal's credentials and a JSON body.
    fn authorized(req: &Recorded) -> bool {
        req.method == Method::POST
            && req
                .headers
                .get(header::AUTHORIZATION)
                .is_some_and(|v| v == "Basic tok_secret_123")
            && req
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v == "application/json")
    }

    const REDIRECT: &str = "http://localhost:8443/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc?personal-access-token=pat_0123abcd&next=\"<x>";

    #[tokio::test]
    async fn portal_mints_a_pat_and_frames_its_redirect_url() {
        let (base, log) = fake_gateway(|req| {
            let expected = json!({"email": EMAIL, "appId": APP_ID, "sessionExpiry": 60, "patExpiry": 300});
            if req.path == "/api/ext/users/personal-access-token" && authorized(req) && req.json() == expected {
                let body = json!({
                    "personalAccessToken": "pat_0123abcd",
                    "redirectUrl": REDIRECT,
                    "expiresAt": "2030-01-01T00:00:00Z",
                });
                (StatusCode::CREATED, body.to_string())
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    json!({"message": "unexpected request"}).to_string(),
                )
            }
        })
        .await;
        let addr = start_portal(base).await;
        let (status, headers, body) = get(addr, "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(body.contains("Acme customer portal (embedgate demo)"));
        assert!(body.contains("<strong>user@example.com</strong>"));
        let src = "http://localhost:8443/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc\
                   ?personal-access-token=pat_0123abcd&amp;next=&quot;&lt;x&gt;";
        assert!(
            body.contains(&format!("<iframe id=\"app-frame\" src=\"{src}\"")),
            "{body}"
        );
        assert!(body.contains("<form id=\"revoke\" method=\"post\" action=\"/revoke\">"));
        assert!(body.contains("Revoke session"));
        assert!(body.contains("'embedgate:session-expired'"));
        assert!(body.contains("'TJ_EMBED_APP_LOGOUT'"));
        assert!(body.contains("<a href=\"/\">Reload</a>"));
        assert!(!body.contains(API_TOKEN));
        assert!(!format!("{headers:?}").contains(API_TOKEN));
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn portal_renders_the_gateways_refusal_to_mint() {
        let (base, _) = fake_gateway(|_| {
            let body = json!({"statusCode": 403, "error": "Forbidden", "message": "user may not <use> this app"});
            (StatusCode::FORBIDDEN, body.to_string())
        })
        .await;
        let addr = start_portal(base).await;
        let (status, _, body) = get(addr, "/", &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(body.contains("Acme customer portal (embedgate demo)"));
        assert!(body.contains("<strong>403 Forbidden</strong>"), "{body}");
        assert!(body.contains("<code>user may not &lt;use&gt; this app</code>"));
        assert!(!body.contains("<iframe"));
        assert!(!body.contains(API_TOKEN));
    }

    #[tokio::test]
    async fn portal_never_shows_the_token_even_if_echoed() {
        let (base, _) = fake_gateway(|_| {
            (
                StatusCode::UNAUTHORIZED,
                json!({"message": format!("bad token {API_TOKEN}")}).to_string(),
            )
        })
        .await;
        let addr = start_portal(base).await;
        let (status, _, body) = get(addr, "/", &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(body.contains("bad token [redacted]"), "{body}");
        assert!(!body.contains(API_TOKEN));
    }

    #[tokio::test]
    async fn portal_reports_an_unreachable_gateway() {
        let addr = start_portal(dead_base().await).await;
        let (status, _, body) = get(addr, "/", &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(
            body.contains("could not reach the gateway: cannot connect to 127.0.0.1:"),
            "{body}"
        );
        assert!(!body.contains("<iframe"));
    }

    #[tokio::test]
    async fn portal_frames_only_web_urls() {
        let (base, _) = fake_gateway(|_| {
            (
                StatusCode::CREATED,
                json!({"redirectUrl": "javascript:alert(1)"}).to_string(),
            )
        })
        .await;
        let addr = start_portal(base).await;
        let (status, _, body) = get(addr, "/", &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(!body.contains("<iframe"));
        assert!(!body.contains("javascript:alert"));
    }

    async fn revoking_gateway() -> (String, Log) {
        fake_gateway(|req| {
            if req.path == "/api/ext/users/sessions/revoke"
                && authorized(req)
                && req.json() == json!({"email": EMAIL, "appId": APP_ID})
            {
                (
                    StatusCode::OK,
                    json!({"revokedSessions": 2, "revokedTokens": 1}).to_string(),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    json!({"message": "unexpected request"}).to_string(),
                )
            }
        })
        .await
    }

    #[tokio::test]
    async fn portal_revoke_calls_the_gateway_and_redirects() {
        let (base, log) = revoking_gateway().await;
        let addr = start_portal(base).await;
        let origin = format!("http://{addr}");
        let (status, headers, _) = request(addr, Method::POST, "/revoke", &[("origin", &origin)]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/?revoked=2");
        assert_eq!(log.lock().unwrap().len(), 1);

        let (status, _, body) = get(addr, "/?revoked=2", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("revoked 2 session(s)"), "{body}");
        assert!(body.contains("<a href=\"/\">Open a new embedded session</a>"));
        assert!(!body.contains("<iframe"));
        assert_eq!(log.lock().unwrap().len(), 1, "the revoked page mints nothing");
    }

    #[tokio::test]
    async fn portal_revoke_answers_json_to_fetch() {
        let (base, _) = revoking_gateway().await;
        let addr = start_portal(base).await;
        let (status, headers, body) = request(addr, Method::POST, "/revoke", &[("accept", "application/json")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"revokedSessions": 2, "revokedTokens": 1})
        );
    }

    #[tokio::test]
    async fn portal_revoke_reports_a_failure() {
        let (base, _) = fake_gateway(|_| (StatusCode::UNAUTHORIZED, json!({"message": "no"}).to_string())).await;
        let addr = start_portal(base).await;
        let (status, _, body) = request(addr, Method::POST, "/revoke", &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert!(body.contains("<strong>401 Unauthorized</strong>"));
        let (status, _, body) = request(addr, Method::POST, "/revoke", &[("accept", "application/json")]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"message": "the gateway answered 401 Unauthorized: no"})
        );
    }

    #[tokio::test]
    async fn portal_revoke_refuses_another_origin() {
        let (base, log) = revoking_gateway().await;
        let addr = start_portal(base).await;
        let (status, _, _) = request(addr, Method::POST, "/revoke", &[("origin", "http://evil.example")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn portal_other_routes() {
        let (base, log) = revoking_gateway().await;
        let addr = start_portal(base).await;
        assert_eq!(get(addr, "/nope", &[]).await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(addr, "/revoke", &[]).await.0, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            request(addr, Method::POST, "/", &[]).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn portal_debug_hides_the_token() {
        let debug = format!("{:?}", portal_for("http://127.0.0.1:8443".to_owned()));
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(API_TOKEN));
    }

    #[tokio::test]
    async fn call_refuses_bad_bases() {
        for base in ["", "https://127.0.0.1:1", "http://user@127.0.0.1:1", "ftp://x"] {
            let err = call(base, Method::GET, "/", Vec::new(), Bytes::new(), JWKS_TIMEOUT)
                .await
                .err();
            assert!(matches!(err, Some(CallError::BadBase(_))), "{base}: {err:?}");
        }
    }
}
