//! hyper clients: one HTTP/1.1 connection ([`H1`]), one HTTP/2 connection
//! over TLS with ALPN ([`H2`]), the whole response they read ([`Reply`]) and
//! what the echo upstream says it saw ([`Echo`]).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::raw::RawConn;
use super::tls::TestTls;
use super::{empty, Body, T};

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: hyper::Version,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    /// Every field of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
    pub fn echo(&self) -> Echo {
        assert_eq!(self.status, 200, "expected an echo, got {self:?}");
        Echo(self.json())
    }
}

pub async fn read_reply(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(T, body.collect())
        .await
        .expect("response body timed out")
        .expect("response body")
        .to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// What the echo upstream saw.
#[derive(Debug, Clone)]
pub struct Echo(pub serde_json::Value);

impl Echo {
    pub fn upstream(&self) -> &str {
        self.0["upstream"].as_str().unwrap()
    }
    pub fn method(&self) -> &str {
        self.0["method"].as_str().unwrap()
    }
    pub fn uri(&self) -> &str {
        self.0["uri"].as_str().unwrap()
    }
    pub fn version(&self) -> &str {
        self.0["version"].as_str().unwrap()
    }
    pub fn body(&self) -> &str {
        self.0["body"].as_str().unwrap()
    }
    pub fn conn(&self) -> u64 {
        self.0["conn"].as_u64().unwrap()
    }
    /// Every value of the header `name`, in order (one per field line).
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.0["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|kv| kv[0].as_str().unwrap().eq_ignore_ascii_case(name))
            .map(|kv| kv[1].as_str().unwrap().to_string())
            .collect()
    }
    pub fn header_names(&self) -> Vec<String> {
        self.0["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| kv[0].as_str().unwrap().to_string())
            .collect()
    }
}

/// One HTTP/1.1 client connection (hyper's low-level client).
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Body>,
    host: String,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> H1 {
        let tcp = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        H1::handshake(tcp, addr.to_string()).await
    }

    pub async fn handshake<S>(io: S, host: String) -> H1
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("http1 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H1 { sender, host }
    }

    /// Sends `req` (adding `Host` when absent) and waits for the head.
    pub async fn try_send(&mut self, mut req: Request<Body>) -> Result<Response<Incoming>, hyper::Error> {
        if !req.headers().contains_key("host") {
            let host = HeaderValue::from_str(&self.host).unwrap();
            req.headers_mut().insert("host", host);
        }
        self.sender.ready().await?;
        self.sender.send_request(req).await
    }

    pub async fn send(&mut self, req: Request<Body>) -> Response<Incoming> {
        tokio::time::timeout(T, self.try_send(req))
            .await
            .expect("response head timed out")
            .expect("request failed")
    }

    pub async fn request(&mut self, req: Request<Body>) -> Reply {
        let resp = self.send(req).await;
        read_reply(resp).await
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.request(Request::get(path).body(empty()).unwrap()).await
    }
}

/// The status a new connection to `addr` gets for a GET within `limit`
/// (`None`: refused, closed, reset or silent).
pub async fn probe_status(addr: SocketAddr, limit: Duration) -> Option<u16> {
    let mut c = RawConn::try_connect(addr).await.ok()?;
    c.send(b"GET /probe HTTP/1.1\r\nHost: probe\r\n\r\n").await.ok()?;
    match tokio::time::timeout(limit, c.read_head()).await {
        Ok(Ok(head)) => Some(head.status),
        _ => None,
    }
}

/// Whether a new connection to `addr` gets any HTTP response to a GET within
/// `limit` (false: refused, closed, reset or silent).
pub async fn new_connection_is_served(addr: SocketAddr, limit: Duration) -> bool {
    probe_status(addr, limit).await.is_some()
}

/// `GET path` on a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    H1::connect(addr).await.get(path).await
}

/// `GET path` with `headers`, on a fresh connection.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    H1::connect(addr).await.request(req.body(empty()).unwrap()).await
}

/// One HTTP/2 client connection over TLS with ALPN `h2`.
pub struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Body>,
    /// The `https://localhost:PORT` origin, for absolute request URIs.
    pub origin: String,
}

impl H2 {
    pub async fn connect(tls: &TestTls, addr: SocketAddr) -> H2 {
        let (stream, alpn) = tls.connect(addr, &[b"h2", b"http/1.1"]).await;
        assert_eq!(
            alpn.as_deref(),
            Some(&b"h2"[..]),
            "the gateway must pick h2 by ALPN when the client offers it"
        );
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2 {
            sender,
            origin: format!("https://localhost:{}", addr.port()),
        }
    }

    /// Another handle on the same connection, for concurrent streams.
    pub fn clone_sender(&self) -> hyper::client::conn::http2::SendRequest<Body> {
        self.sender.clone()
    }

    pub async fn request(&mut self, req: Request<Body>) -> Reply {
        let fut = async {
            self.sender.ready().await?;
            self.sender.send_request(req).await
        };
        let resp = tokio::time::timeout(T, fut)
            .await
            .expect("h2 response head timed out")
            .expect("h2 request failed");
        read_reply(resp).await
    }
}
