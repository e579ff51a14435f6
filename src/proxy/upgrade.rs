//! WebSocket tunnels (RFC 6455 over HTTP/1.1's `Upgrade`, RFC 8441 over
//! HTTP/2's extended CONNECT): once the upstream has completed the opening
//! handshake, both sides' connections are taken out of hyper and bytes are
//! copied both ways until either side closes.
//!
//! Only WebSockets are tunnelled, and only after a real handshake: a
//! request is one when it is a `GET` with `Upgrade: websocket`, `Connection:
//! upgrade` and a well-formed `Sec-WebSocket-Key` ([`websocket_key`]); any
//! other `Upgrade` (`h2c`, made-up tokens) is dropped as hop-by-hop and the
//! request goes on as a plain one. A `101` opens the tunnel only when it
//! answers such a request with `Upgrade: websocket` and the
//! `Sec-WebSocket-Accept` its key calls for ([`is_handshake`]): an upstream
//! that switches protocols otherwise would hand the client a raw byte pipe
//! behind the gateway's header rules.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, Instrument};

use super::TunnelOpen;
use crate::drain::Watch;
use crate::error::GatewayError;

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// The GUID every `Sec-WebSocket-Accept` is computed with (RFC 6455 §1.3).
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether `req` may ask for a WebSocket tunnel (an HTTP/1.1 `Upgrade`
/// naming `websocket`, or an HTTP/2 extended CONNECT): a cheap look before
/// the proxy decides ([`websocket_key`]).
pub(crate) fn asks_websocket<B>(req: &Request<B>) -> bool {
    is_extended_connect(req)
        || (req.version() == Version::HTTP_11
            && req
                .headers()
                .get_all(header::UPGRADE)
                .iter()
                .any(|v| names_websocket(v.as_bytes())))
}

/// Whether an `Upgrade` value lists the `websocket` protocol.
fn names_websocket(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"websocket"))
}

/// The client's `Sec-WebSocket-Key` when an HTTP/1.1 request is a WebSocket
/// opening handshake (RFC 6455 §4.1): a `GET` whose `Upgrade` (`protocol`,
/// as `Connection: upgrade` vouched for it) names `websocket`, with exactly
/// one key that is 16 bytes in base64. `None`: a plain request.
pub(crate) fn websocket_key<B>(req: &Request<B>, protocol: &HeaderValue) -> Option<HeaderValue> {
    if req.method() != Method::GET || req.version() != Version::HTTP_11 || !names_websocket(protocol.as_bytes()) {
        return None;
    }
    let mut keys = req.headers().get_all(&SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return None;
    };
    let decoded = STANDARD.decode(key.as_bytes().trim_ascii()).ok()?;
    (decoded.len() == 16).then(|| key.clone())
}

/// The `Sec-WebSocket-Accept` that answers `key` (RFC 6455 §4.2.2).
fn accept_for(key: &[u8]) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key.trim_ascii());
    context.update(WEBSOCKET_GUID);
    STANDARD.encode(context.finish())
}

/// Whether an upstream's `101` completes the WebSocket handshake begun with
/// `key`: `Upgrade: websocket` (`protocol`, as its `Connection: upgrade`
/// vouched for it) and the `Sec-WebSocket-Accept` the key calls for.
pub(crate) fn is_handshake(headers: &http::HeaderMap, protocol: Option<&HeaderValue>, key: &HeaderValue) -> bool {
    let upgrades_to_websocket = protocol.is_some_and(|p| p.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"));
    let mut accepts = headers.get_all(&SEC_WEBSOCKET_ACCEPT).iter();
    let accepted = match (accepts.next(), accepts.next()) {
        (Some(accept), None) => accept.as_bytes().trim_ascii() == accept_for(key.as_bytes()).as_bytes(),
        _ => false,
    };
    upgrades_to_websocket && accepted
}

/// An HTTP/2 `CONNECT` with `:protocol = websocket` (RFC 8441 §4).
pub(crate) fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        && req.version() == Version::HTTP_2
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Turns an extended CONNECT into the HTTP/1.1 opening handshake's GET:
/// the gateway supplies the `Sec-WebSocket-Key` that RFC 8441 §5 leaves out
/// (the caller adds `Connection`/`Upgrade`), and returns it. The client's
/// `Sec-WebSocket-Version`, `-Protocol` and `-Extensions` pass as they are.
pub(crate) fn connect_to_get<B>(req: &mut Request<B>) -> Result<HeaderValue, GatewayError> {
    let mut nonce = [0u8; 16];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| GatewayError::Internal("the system random number generator failed".into()))?;
    let key = HeaderValue::from_str(&STANDARD.encode(nonce)).map_err(|e| GatewayError::Internal(Box::new(e)))?;
    *req.method_mut() = Method::GET;
    req.extensions_mut().remove::<hyper::ext::Protocol>();
    req.headers_mut().insert(SEC_WEBSOCKET_KEY.clone(), key.clone());
    Ok(key)
}

/// Turns the upstream's `101 Switching Protocols` into the `200` that opens
/// an HTTP/2 extended CONNECT stream (RFC 8441 §5), without the HTTP/1.1
/// handshake's fields.
pub(crate) fn get_to_connect_response<B>(response: &mut Response<B>) {
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.remove(&SEC_WEBSOCKET_ACCEPT);
    headers.remove(header::CONTENT_LENGTH);
}

/// Counts a tunnel in `embedgate_tunnels_open` while it lives.
struct OpenTunnel;

impl OpenTunnel {
    fn count() -> OpenTunnel {
        crate::metrics::global().tunnels_open.inc();
        OpenTunnel
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        crate::metrics::global().tunnels_open.dec();
    }
}

/// Spawns the tunnel between the client's and the upstream's upgraded
/// connections. It holds `watch` while open, so a drain waits for it (up to
/// the grace period), and ends early when `cancel` resolves.
pub(crate) fn spawn_tunnel<F>(client: OnUpgrade, upstream: OnUpgrade, held: (Watch, TunnelOpen), cancel: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let task = async move {
        // The drain's watch and the connection's count, held while it runs.
        let _held = held;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let _open = OpenTunnel::count();
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
                Ok((up, down)) => debug!(bytes_up = up, bytes_down = down, "tunnel closed"),
                Err(error) => debug!(%error, "tunnel ended with an error"),
            },
            () = cancel => debug!("tunnel cancelled"),
        }
    };
    tokio::spawn(task.in_current_span());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extended_connect() -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = Method::CONNECT;
        *req.version_mut() = Version::HTTP_2;
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        req
    }

    #[test]
    fn extended_connect_becomes_a_get_with_a_fresh_key() {
        let mut req = extended_connect();
        assert!(is_extended_connect(&req) && asks_websocket(&req));
        let returned = connect_to_get(&mut req).ok();
        assert_eq!(req.method(), Method::GET);
        assert!(req.extensions().get::<hyper::ext::Protocol>().is_none());
        let key = req
            .headers()
            .get(&SEC_WEBSOCKET_KEY)
            .map(|k| STANDARD.decode(k.as_bytes()));
        assert!(matches!(&key, Some(Ok(bytes)) if bytes.len() == 16), "{key:?}");
        assert_eq!(returned.as_ref(), req.headers().get(&SEC_WEBSOCKET_KEY));
    }

    #[test]
    fn only_websocket_connects_over_h2_and_upgrades_over_h1_count() {
        let mut plain = extended_connect();
        plain.extensions_mut().remove::<hyper::ext::Protocol>();
        assert!(!asks_websocket(&plain));
        let mut h1 = Request::new(());
        h1.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(asks_websocket(&h1) && !is_extended_connect(&h1));
        h1.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!asks_websocket(&h1));
        assert!(!asks_websocket(&Request::new(())));
    }

    /// RFC 6455 §1.3's own example.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn handshake(method: Method, upgrade: &'static str, keys: &[&'static str]) -> (Request<()>, HeaderValue) {
        let mut req = Request::new(());
        *req.method_mut() = method;
        for key in keys {
            req.headers_mut()
                .append(&SEC_WEBSOCKET_KEY, HeaderValue::from_static(key));
        }
        (req, HeaderValue::from_static(upgrade))
    }

    #[test]
    fn a_websocket_request_needs_get_the_token_and_one_good_key() {
        let (req, protocol) = handshake(Method::GET, "websocket", &[KEY]);
        assert_eq!(websocket_key(&req, &protocol), Some(HeaderValue::from_static(KEY)));
        let (req, protocol) = handshake(Method::GET, "foo, WebSocket", &[KEY]);
        assert!(websocket_key(&req, &protocol).is_some());
        for (method, upgrade, keys) in [
            (Method::POST, "websocket", &[KEY][..]),
            (Method::GET, "h2c", &[KEY]),
            (Method::GET, "websocketx", &[KEY]),
            (Method::GET, "websocket", &[]),
            (Method::GET, "websocket", &[KEY, KEY]),
            (Method::GET, "websocket", &["c2hvcnQ="]),
            (Method::GET, "websocket", &["not base64!"]),
        ] {
            let (req, protocol) = handshake(method.clone(), upgrade, keys);
            assert_eq!(websocket_key(&req, &protocol), None, "{method} {upgrade} {keys:?}");
        }
    }

    #[test]
    fn only_the_accept_the_key_calls_for_completes_the_handshake() {
        assert_eq!(accept_for(KEY.as_bytes()), ACCEPT);
        let key = HeaderValue::from_static(KEY);
        let websocket = HeaderValue::from_static("websocket");
        let answer = |accepts: &[&'static str]| {
            let mut h = http::HeaderMap::new();
            for a in accepts {
                h.append(&SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static(a));
            }
            h
        };
        assert!(is_handshake(&answer(&[ACCEPT]), Some(&websocket), &key));
        assert!(is_handshake(
            &answer(&[ACCEPT]),
            Some(&HeaderValue::from_static("WebSocket")),
            &key
        ));
        assert!(!is_handshake(&answer(&[]), Some(&websocket), &key), "no accept");
        assert!(!is_handshake(
            &answer(&["x3JJHMbDL1EzLkh9GBhXDw=="]),
            Some(&websocket),
            &key
        ));
        assert!(!is_handshake(&answer(&[ACCEPT, ACCEPT]), Some(&websocket), &key));
        assert!(!is_handshake(&answer(&[ACCEPT]), None, &key), "no Upgrade");
        assert!(!is_handshake(
            &answer(&[ACCEPT]),
            Some(&HeaderValue::from_static("h2c")),
            &key
        ));
    }

    #[test]
    fn upstream_101_becomes_200_without_handshake_fields() {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(&SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("x"));
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("chat"));
        get_to_connect_response(&mut response);
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!response.headers().contains_key(&SEC_WEBSOCKET_ACCEPT));
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    }
}
