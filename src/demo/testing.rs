//! What the demo's tests share: requests to a demo server, and a fake
//! gateway that records what it was asked.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// The app the tests embed.
pub(crate) const APP_ID: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";
/// A second app, for a portal that embeds several.
pub(crate) const SECOND_APP_ID: &str = "3f0c5a52-9d7e-4b61-8c2f-0a1e6d4b7c93";
/// The user the tests embed it for.
pub(crate) const EMAIL: &str = "user@example.com";
/// The portal's API token: no page or header may show it.
pub(crate) const API_TOKEN: &str = "tok_secret_123";

/// A gateway base URL where nothing listens.
pub(crate) async fn dead_base() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// One request over a fresh HTTP/1.1 connection.
pub(crate) async fn request(
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

/// [`request`] with `GET`.
pub(crate) async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    request(addr, Method::GET, path, headers).await
}

/// A request as a fake gateway received it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Recorded {
    /// The body as JSON; panics if it is not.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Every request a fake gateway received, in order.
pub(crate) type Log = Arc<Mutex<Vec<Recorded>>>;

/// A tiny HTTP server on loopback that records every request and
/// answers it with `reply`'s status and JSON body. Returns its base URL.
pub(crate) async fn fake_gateway<F>(reply: F) -> (String, Log)
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
