//! The bundled demo upstream app (SPEC §1): what a newcomer sees inside the
//! iframe, showing what the gateway told it about the user (SPEC §5).
//!
//! It plays an ordinary upstream on loopback and knows nothing of PATs or
//! sessions: it reads the identity and `X-Forwarded-*` headers, and builds
//! every URL of its page under `X-Forwarded-Prefix` so that it works mounted
//! at `/embed-apps/<appId>` as well as at the root.
//!
//! Routes, relative to the mount prefix:
//! - `GET /`: an HTML page with the identity, the forwarded headers, a link
//!   to `api/whoami` and a WebSocket echo widget;
//! - `GET /api/whoami`: the same as JSON;
//! - `GET /ws`: a WebSocket (RFC 6455) that echoes every message;
//! - anything else: 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Body = Full<Bytes>;

/// Binds `listen` and serves the demo app on it in a background task, for
/// as long as the runtime lives. Returns the bound address (useful with
/// port 0).
/// TEMPORARY shim until the portal lands.
#[derive(Clone, Debug)]
pub struct GatewayLink {
    pub base: String,
}
/// TEMPORARY shim until the portal lands.
#[derive(Clone, Debug)]
pub struct Portal {
    pub gateway_api: String,
    pub api_token: String,
    pub email: String,
    pub app_id: String,
}
/// TEMPORARY shim until the portal lands.
pub async fn spawn_portal(listen: SocketAddr, _portal: Portal) -> std::io::Result<SocketAddr> {
    Ok(listen)
}
pub async fn spawn_app(listen: SocketAddr, _gateway: GatewayLink) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    tokio::spawn(accept_loop(listener));
    Ok(local)
}

async fn accept_loop(listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: back off instead of
                // spinning, and keep serving once it passes.
                tracing::warn!(error = %e, "demo app: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let served = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service_fn(handle))
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "demo app: connection ended with an error");
            }
        });
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let response = match req.uri().path() {
        "/" | "/api/whoami" | "/ws" if !get => method_not_allowed(),
        "/" => html_page(&Seen::from_headers(req.headers())),
        "/api/whoami" => whoami(&Seen::from_headers(req.headers())),
        "/ws" => websocket(req),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// What the app was told by whoever is in front of it.
struct Seen {
    user: Option<String>,
    groups: Option<Vec<String>>,
    app: Option<String>,
    /// Only whether it was there: the assertion is a credential (SPEC §8).
    assertion: bool,
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
            assertion: headers.contains_key("x-embed-assertion"),
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

fn html_page(seen: &Seen) -> Response<Body> {
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
    let assertion = if seen.assertion { "present" } else { "absent" };
    let mut forwarded = String::from("<table>\n");
    row(&mut forwarded, "X-Forwarded-For", seen.forwarded_for.as_deref());
    row(&mut forwarded, "X-Forwarded-Proto", seen.forwarded_proto.as_deref());
    row(&mut forwarded, "X-Forwarded-Host", seen.forwarded_host.as_deref());
    row(&mut forwarded, "X-Forwarded-Prefix", seen.forwarded_prefix.as_deref());
    forwarded.push_str("</table>\n");
    let mount = escape_html(&seen.mount);

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
.none {{ color: #a33; }}
#ws-log {{ background: #f1f3f7; padding: .5rem; min-height: 3rem; white-space: pre-wrap; }}
</style>
</head>
<body>
<h1>embedgate demo app</h1>
<h2>Who the gateway says you are</h2>
{identity}<p>X-Embed-Assertion: <strong>{assertion}</strong></p>
<h2>How the request reached this app</h2>
{forwarded}<p>The same as JSON: <a href="{mount}/api/whoami">{mount}/api/whoami</a></p>
<h2>WebSocket echo</h2>
<form id="ws-form" data-prefix="{mount}">
<input id="ws-input" value="hello through the gateway" size="32">
<button type="submit">Send</button>
</form>
<pre id="ws-log"></pre>
<script>
(function () {{
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
}})();
</script>
</body>
</html>
"#
    );
    let mut response = Response::new(Full::new(Bytes::from(page)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn whoami(seen: &Seen) -> Response<Body> {
    let body = serde_json::json!({
        "user": seen.user,
        "groups": seen.groups,
        "app": seen.app,
        "assertion": seen.assertion,
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

fn method_not_allowed() -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
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

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty};
    use tokio::net::TcpStream;

    use super::*;

    async fn start() -> SocketAddr {
        spawn_app("127.0.0.1:0".parse().unwrap(), GatewayLink { base: String::new() })
            .await
            .unwrap()
    }

    /// One request over a fresh HTTP/1.1 connection.
    async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::get(path).header(header::HOST, addr.to_string());
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
    async fn page_reports_assertion_presence_not_value() {
        let addr = start().await;
        let (_, _, body) = get(addr, "/", &[("x-embed-assertion", "eyJsecret")]).await;
        assert!(body.contains("X-Embed-Assertion: <strong>present</strong>"));
        assert!(!body.contains("eyJsecret"));
    }

    #[tokio::test]
    async fn whoami_returns_identity_as_json() {
        let addr = start().await;
        let (status, headers, body) = get(
            addr,
            "/api/whoami",
            &[
                ("x-embed-user", "user@example.com"),
                ("x-embed-groups", "sales,ops"),
                ("x-embed-app", "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc"),
                ("x-embed-assertion", "eyJ.x.y"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "localhost:8443"),
                ("x-forwarded-prefix", "/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "user": "user@example.com",
                "groups": ["sales", "ops"],
                "app": "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc",
                "assertion": true,
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
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "user": null, "groups": null, "app": null, "assertion": false,
                "forwarded": {"for": null, "proto": null, "host": null, "prefix": null},
            })
        );
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
}
