//! The bundled demo (SPEC §1): a demo upstream app and a demo customer
//! portal, both on loopback, so that a newcomer opens one URL and sees an app
//! embedded through a PAT.
//!
//! **The app** (`app`) plays an ordinary upstream and knows nothing of PATs
//! or sessions: it reads the identity and `X-Forwarded-*` headers (SPEC §5),
//! verifies `X-Embed-Assertion` against the gateway's JWK Set as a real
//! upstream would (`verify`), and builds every URL of its page under
//! `X-Forwarded-Prefix` so that it works mounted at `/embed-apps/<appId>` as
//! well as at the root. Routes, relative to the mount prefix:
//! - `GET /`: an HTML page with the identity, the assertion check, the
//!   forwarded headers, a link to `api/whoami` and a WebSocket echo widget;
//! - `GET /api/whoami`: the same as JSON;
//! - `GET /ws`: a WebSocket (RFC 6455) that echoes every message;
//! - anything else: 404.
//!
//! The same server plays a second app, **the shop**, under `/shop/`: an app
//! written for the root of a host, whose page loads `/static/shop.css` and
//! `/static/shop.js` and calls `/api/whoami` by absolute paths. The shipped
//! config serves it at the root of `http://app.localhost:8443` (an
//! `[[apps]]` entry with `public_url`, upstream `http://127.0.0.1:3000/shop`).
//! Routes:
//! - `GET /shop/`: its page;
//! - `GET /shop/static/shop.css`, `GET /shop/static/shop.js`: its files;
//! - `GET /shop/api/whoami`: the same JSON as `/api/whoami`.
//!
//! **The portal** (`portal`) plays the customer's portal on its own origin
//! (cross-site from the gateway, so the iframes are truly third-party). Its
//! server side mints a PAT exactly as ToolJet's sample Node portal does
//! (SPEC §3), one per app, and its page frames each returned `redirectUrl`.
//! Routes:
//! - `GET /`: mint a PAT per app and render the page with an iframe each
//!   (`/?revoked=<n>`: the page after a revocation, without minting);
//! - `POST /revoke`: revoke the user's sessions of each app (SPEC §6), then
//!   303 to `/?revoked=<n>`, or JSON when the request accepts
//!   `application/json`;
//! - anything else: 404.
//!
//! Both call the gateway from their server side over plain HTTP
//! (`client`); their pages are files under `pages/` filled by `html`.
//! The demo API token stays on the portal's server side: no page, error or
//! log line shows it (SPEC §8), nor the assertion.

mod app;
mod client;
mod html;
mod portal;
#[cfg(test)]
mod testing;
mod verify;

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;

use app::DemoApp;
use html::Html;
use portal::DemoPortal;

/// How the demo app reaches the gateway from the server side.
#[derive(Clone, Debug)]
pub(crate) struct GatewayLink {
    /// The gateway's base URL over plain HTTP, e.g. `http://127.0.0.1:8443`;
    /// the app fetches `<base>/.well-known/embedgate/jwks.json`.
    pub(crate) base: String,
}

/// What the demo portal needs to mint PATs.
#[derive(Clone)]
pub(crate) struct Portal {
    /// The gateway's base URL from the server side, over plain HTTP, e.g.
    /// `http://127.0.0.1:8443`.
    pub(crate) gateway_api: String,
    /// The API token sent as `Authorization: Basic <token>`. Never shown.
    pub(crate) api_token: String,
    /// The user the portal embeds the apps for.
    pub(crate) email: String,
    /// The apps it embeds, one frame each, in this order.
    pub(crate) app_ids: Vec<String>,
}

/// Leaves the API token out (SPEC §8).
impl fmt::Debug for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Portal")
            .field("gateway_api", &self.gateway_api)
            .field("api_token", &"<redacted>")
            .field("email", &self.email)
            .field("app_ids", &self.app_ids)
            .finish()
    }
}

/// Binds `listen` and serves the demo app on it in a background task, for
/// as long as the runtime lives. Returns the bound address (useful with
/// port 0).
pub(crate) async fn spawn_app(listen: SocketAddr, gateway: GatewayLink) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    let app = Arc::new(DemoApp::new(&gateway));
    tokio::spawn(accept_loop(listener, "demo app", move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.handle(req).await) }
    }));
    Ok(local)
}

/// Binds `listen` and serves the demo portal on it in a background task,
/// for as long as the runtime lives. Returns the bound address.
pub(crate) async fn spawn_portal(listen: SocketAddr, portal: Portal) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    let portal = Arc::new(DemoPortal::new(portal));
    tokio::spawn(accept_loop(listener, "demo portal", move |req| {
        let portal = portal.clone();
        async move { Ok::<_, Infallible>(portal.handle(req).await) }
    }));
    Ok(local)
}

/// Accepts connections on `listener` forever and serves each with
/// `service`, HTTP/1.1 or HTTP/2, upgrades included.
async fn accept_loop<F, Fut>(listener: TcpListener, name: &'static str, service: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
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

/// All values of a header joined with ", " (RFC 9110 §5.3), or `None` when
/// absent. Bytes that are not UTF-8 are replaced, not trusted.
pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Whether a comma-separated header holds `token`, case-insensitively.
pub(crate) fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// An HTML page that no cache keeps and no browser sniffs.
pub(crate) fn html_response(status: StatusCode, page: Html) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(page.into_string())));
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

/// A JSON answer that no cache keeps.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A short plain-text answer, for refusals.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// 405 with the `Allow` header RFC 9110 §15.5.6 requires.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
