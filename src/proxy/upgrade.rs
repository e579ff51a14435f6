//! Upgraded connections (WebSocket and any other HTTP/1.1 `Upgrade`, RFC 9110
//! §7.8): once the upstream answers 101, both sides' connections are taken
//! out of hyper and bytes are copied both ways until either side closes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use ring::rand::{SecureRandom, SystemRandom};
use tracing::{debug, Instrument};

use super::TunnelOpen;
use crate::drain::Watch;
use crate::error::GatewayError;

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// Whether `req` asks for a tunnel: an HTTP/1.1 `Upgrade`, or an HTTP/2
/// extended CONNECT (RFC 8441).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    is_extended_connect(req) || (req.version() == Version::HTTP_11 && req.headers().contains_key(header::UPGRADE))
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
/// (the caller adds `Connection`/`Upgrade`). The client's
/// `Sec-WebSocket-Version`, `-Protocol` and `-Extensions` pass as they are.
pub(crate) fn connect_to_get<B>(req: &mut Request<B>) -> Result<(), GatewayError> {
    let mut nonce = [0u8; 16];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| GatewayError::Internal("the system random number generator failed".into()))?;
    let key = HeaderValue::from_str(&STANDARD.encode(nonce)).map_err(|e| GatewayError::Internal(Box::new(e)))?;
    *req.method_mut() = Method::GET;
    req.extensions_mut().remove::<hyper::ext::Protocol>();
    req.headers_mut().insert(SEC_WEBSOCKET_KEY.clone(), key);
    Ok(())
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
        assert!(is_extended_connect(&req) && is_upgrade(&req));
        assert!(connect_to_get(&mut req).is_ok());
        assert_eq!(req.method(), Method::GET);
        assert!(req.extensions().get::<hyper::ext::Protocol>().is_none());
        let key = req
            .headers()
            .get(&SEC_WEBSOCKET_KEY)
            .map(|k| STANDARD.decode(k.as_bytes()));
        assert!(matches!(&key, Some(Ok(bytes)) if bytes.len() == 16), "{key:?}");
    }

    #[test]
    fn only_websocket_connects_over_h2_and_upgrades_over_h1_count() {
        let mut plain = extended_connect();
        plain.extensions_mut().remove::<hyper::ext::Protocol>();
        assert!(!is_upgrade(&plain));
        let mut h1 = Request::new(());
        h1.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h1) && !is_extended_connect(&h1));
        assert!(!is_upgrade(&Request::new(())));
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
