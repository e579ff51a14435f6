//! Calling the gateway from the demo's server side: the app fetches the JWK
//! Set, the portal mints and revokes. Plain HTTP/1.1 on loopback through
//! hyper-util's pooled client, one per app or portal.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{self, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Connecting to the gateway must take less than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A pooled connection to the gateway unused for this long is closed (the
/// pool only acts on it with a `pool_timer`).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Larger answers from the gateway are refused, not buffered.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why a call to the gateway failed. Never carries a credential.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The configured base URL is not one the demo can call.
    #[error("gateway URL {0:?} is not http://host[:port][/path]")]
    BadBase(String),
    /// The portal's API token has bytes a header cannot carry.
    #[error("the API token cannot be sent in a header")]
    BadToken,
    /// No connection: refused, unreachable, unresolvable.
    #[error("cannot connect to {authority}: {}", innermost(.source))]
    Connect {
        authority: String,
        #[source]
        source: legacy::Error,
    },
    /// No connection within [`CONNECT_TIMEOUT`].
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// No whole answer within the call's own limit.
    #[error("{0} did not answer in time")]
    Timeout(String),
    /// Connected, but the request or the answer's head failed.
    #[error("HTTP exchange with {authority} failed: {}", innermost(.source))]
    Http {
        authority: String,
        #[source]
        source: legacy::Error,
    },
    /// The answer's body broke off or passed [`MAX_RESPONSE_BYTES`].
    #[error("the answer from {0} is broken or larger than {MAX_RESPONSE_BYTES} bytes")]
    Body(String),
}

/// The deepest cause of a client error: the client's own text ("client
/// error (Connect)") says less than the I/O or protocol error under it.
fn innermost(error: &legacy::Error) -> &(dyn std::error::Error + 'static) {
    let mut cause: &(dyn std::error::Error + 'static) = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause
}

/// A whole answer of the gateway.
pub(crate) struct DemoReply {
    /// Its status.
    pub(crate) status: StatusCode,
    /// Its body, read whole (at most [`MAX_RESPONSE_BYTES`]).
    pub(crate) body: Bytes,
}

/// Where the calls go: `http://<authority><path>`.
struct Base {
    /// `host:port`, the port always written out.
    authority: String,
    /// The base URL's path without its trailing `/`; a call's path follows.
    path: String,
}

/// The gateway as seen from the demo's server side: its base URL and a
/// connection pool to it.
pub(crate) struct GatewayClient {
    /// The base URL as given, for errors.
    given: String,
    /// The base URL parsed, or `None`: a bad base fails each call (and shows
    /// on the page) rather than the demo's start.
    base: Option<Base>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl GatewayClient {
    /// A client for the gateway at `base`, e.g. `http://127.0.0.1:8443`.
    pub(crate) fn new(base: &str) -> GatewayClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        GatewayClient {
            given: base.to_owned(),
            base: parse_base(base),
            client,
        }
    }

    /// One HTTP/1.1 request to the base URL + `path`, all within `total`
    /// (connecting within [`CONNECT_TIMEOUT`]); the answer's body is read
    /// whole up to [`MAX_RESPONSE_BYTES`].
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        total: Duration,
    ) -> Result<DemoReply, CallError> {
        let bad_base = || CallError::BadBase(self.given.clone());
        let base = self.base.as_ref().ok_or_else(bad_base)?;
        let uri: Uri = format!("http://{}{}{path}", base.authority, base.path)
            .parse()
            .map_err(|_| bad_base())?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, base.authority.as_str());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).map_err(|_| bad_base())?;
        match tokio::time::timeout(total, self.exchange(&base.authority, request)).await {
            Ok(answer) => answer,
            Err(_) => Err(CallError::Timeout(base.authority.clone())),
        }
    }

    async fn exchange(&self, authority: &str, request: Request<Full<Bytes>>) -> Result<DemoReply, CallError> {
        let response = self.client.request(request).await.map_err(|source| {
            let authority = authority.to_owned();
            if !source.is_connect() {
                return CallError::Http { authority, source };
            }
            // The connector reports its own timeout as an I/O `TimedOut`.
            let timed_out = innermost(&source)
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
            if timed_out {
                CallError::ConnectTimeout(authority)
            } else {
                CallError::Connect { authority, source }
            }
        })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|_| CallError::Body(authority.to_owned()))?
            .to_bytes();
        Ok(DemoReply {
            status: parts.status,
            body,
        })
    }
}

/// `http://host[:port][/path]` without user info or query, as `Base`.
fn parse_base(base: &str) -> Option<Base> {
    let uri: Uri = base.parse().ok()?;
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return None;
    };
    if authority.as_str().contains('@') || uri.query().is_some() {
        return None;
    }
    Some(Base {
        authority: format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80)),
        path: uri.path().trim_end_matches('/').to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn call_refuses_bad_bases() {
        for base in ["", "https://127.0.0.1:1", "http://user@127.0.0.1:1", "ftp://x"] {
            let err = GatewayClient::new(base)
                .call(Method::GET, "/", Vec::new(), Bytes::new(), Duration::from_secs(2))
                .await
                .err();
            assert!(matches!(err, Some(CallError::BadBase(_))), "{base}: {err:?}");
        }
    }
}
