//! Test upstreams on `127.0.0.1:0`, each counting the connections and
//! requests it gets: the echo upstream (plain and over TLS), one whose
//! response body the test feeds, one that reports request chunks as they
//! arrive, one that never answers, raw ones that write a fixed response
//! verbatim, and a WebSocket echo; and [`closed_port`], where nothing
//! listens at all.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::raw::{find, parse_fields};
use super::tls::TestTls;
use super::{channel_body, empty, full, zeros_body, Body, MIB};

/// A loopback port with nothing listening on it.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// Header fields of one request head, names lowercased, in order.
pub type Fields = Vec<(String, String)>;

/// A parsed request's header fields as [`Fields`] (values lossily as text).
fn fields_of(headers: &hyper::HeaderMap) -> Fields {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// A test upstream on `127.0.0.1:0`.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Distinct TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Requests whose head arrived.
    pub requests: Arc<AtomicUsize>,
    /// Request heads seen by upstreams that record them (raw ones, WebSocket).
    pub seen: Arc<Mutex<Vec<Fields>>>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn bind() -> (TcpListener, Upstream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = Upstream {
        addr: listener.local_addr().unwrap(),
        connections: Arc::new(AtomicUsize::new(0)),
        requests: Arc::new(AtomicUsize::new(0)),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    (listener, up)
}

/// Serves HTTP/1.1 with `handler` on every accepted connection.
async fn serve_http1<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    serve_http1_on(handler, None).await
}

/// Serves HTTP/1.1 with `handler`, over TLS when `tls` is given.
async fn serve_http1_on<F, Fut>(handler: F, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream
where
    F: Fn(Request<Incoming>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let (listener, up) = bind().await;
    let conns = up.connections.clone();
    let reqs = up.requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let conn_id = conns.fetch_add(1, Ordering::SeqCst) + 1;
            let handler = handler.clone();
            let reqs = reqs.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    reqs.fetch_add(1, Ordering::SeqCst);
                    let fut = handler(req, conn_id);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    up
}

/// The echo upstream. Every response carries `x-upstream: <name>`. By path:
///
/// - `/fixed`: `hello world` with an explicit `content-length: 11` (any method,
///   so HEAD answers with the length and no body);
/// - `/status/204`: 204, no body;
/// - `/status/304`: 304 with `etag: "v1"`, no body;
/// - `/empty`: 200 with an explicit `content-length: 0`;
/// - `/delay/<ms>`: waits, then echoes;
/// - `/download/<n>`: `n` zero bytes, streamed, with `content-length: n`;
/// - `/upload`: reads the body frame by frame without keeping it and answers
///   `{"bytes": n, "content_length": …}` (`/upload?slow`: 10 ms per MiB);
/// - anything else: JSON `{"upstream", "method", "uri", "version", "headers":
///   [[name, value], …], "body", "conn"}` (`conn`: which accepted TCP
///   connection, from 1).
pub async fn echo_upstream(name: &'static str) -> Upstream {
    serve_http1(move |req, conn| echo(req, conn, name)).await
}

/// The echo upstream over TLS, with `tls`'s leaf (valid for `127.0.0.1`).
/// Its [`Upstream::url`] is still `http://…`: use `https_url`.
pub async fn echo_upstream_tls(name: &'static str, tls: &TestTls) -> Upstream {
    serve_http1_on(move |req, conn| echo(req, conn, name), Some(tls.acceptor())).await
}

async fn echo(req: Request<Incoming>, conn: usize, name: &'static str) -> Response<Body> {
    let path = req.uri().path().to_string();
    let mut resp = if path.ends_with("/fixed") {
        let mut r = Response::new(full("hello world"));
        r.headers_mut().insert("content-length", HeaderValue::from_static("11"));
        r
    } else if path.ends_with("/status/204") {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    } else if path.ends_with("/status/304") {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut().insert("etag", HeaderValue::from_static("\"v1\""));
        r
    } else if path.ends_with("/empty") {
        let mut r = Response::new(empty());
        r.headers_mut().insert("content-length", HeaderValue::from_static("0"));
        r
    } else if let Some(n) = path.strip_prefix("/download/") {
        let n: u64 = n.parse().unwrap();
        let mut r = Response::new(zeros_body(n));
        r.headers_mut().insert("content-length", HeaderValue::from(n));
        r
    } else if path == "/upload" {
        // `?slow`: a slow reader (10 ms per MiB), so that a gateway without
        // back-pressure would have to hold what it cannot hand over.
        let slow = req.uri().query() == Some("slow");
        let content_length = req
            .headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let mut body = req.into_body();
        let mut n: u64 = 0;
        let mut error = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        let before = n / MIB;
                        n += d.len() as u64;
                        if slow && n / MIB != before {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let j = serde_json::json!({"bytes": n, "content_length": content_length, "error": error});
        json_response(&j)
    } else {
        if let Some(ms) = path.strip_prefix("/delay/") {
            let ms: u64 = ms.parse().unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let version = format!("{:?}", req.version());
        let headers = fields_of(req.headers());
        let body = match req.into_body().collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(e) => format!("<body error: {e}>"),
        };
        json_response(&serde_json::json!({
            "upstream": name,
            "method": method,
            "uri": uri,
            "version": version,
            "headers": headers,
            "body": body,
            "conn": conn,
        }))
    };
    resp.headers_mut().insert("x-upstream", HeaderValue::from_static(name));
    resp
}

fn json_response(v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// An upstream whose single response body the test feeds chunk by chunk
/// (chunked encoding: no length). The body ends when the sender drops.
pub async fn controlled_upstream() -> (Upstream, mpsc::Sender<Bytes>) {
    let (tx, body) = channel_body();
    let slot = Arc::new(Mutex::new(Some(body)));
    let up = serve_http1(move |_req, _conn| {
        let slot = slot.clone();
        async move {
            match slot.lock().unwrap().take() {
                Some(body) => Response::new(body),
                None => {
                    let mut r = Response::new(full("controlled upstream: one request only"));
                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    r
                }
            }
        }
    })
    .await;
    (up, tx)
}

/// An upstream that reports each request body chunk to the test as it
/// arrives, then answers `{"bytes": n}`.
pub async fn probe_upstream() -> (Upstream, mpsc::UnboundedReceiver<Bytes>) {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let up = serve_http1(move |req, _conn| {
        let tx = tx.clone();
        async move {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    n += data.len() as u64;
                    let _ = tx.send(data);
                }
            }
            json_response(&serde_json::json!({ "bytes": n }))
        }
    })
    .await;
    (up, rx)
}

/// An upstream that accepts connections and never answers (nor closes).
pub async fn hung_upstream() -> Upstream {
    let (listener, up) = bind().await;
    let conns = up.connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    up
}

/// A raw HTTP/1.1 upstream: for every request head it reads (bodies are not
/// expected), it records the head's fields in `seen` and writes `response`
/// verbatim, keeping the connection open.
pub async fn raw_upstream(response: &'static [u8]) -> Upstream {
    raw_upstream_with(response, false).await
}

/// Like [`raw_upstream`], but closes the connection right after writing
/// `response` (e.g. to cut a body short of its `Content-Length`).
pub async fn raw_upstream_closing(response: &'static [u8]) -> Upstream {
    raw_upstream_with(response, true).await
}

async fn raw_upstream_with(response: &'static [u8], close: bool) -> Upstream {
    scripted(move |_, _| response.to_vec(), close).await
}

/// A raw HTTP/1.1 upstream: for every request head it reads (bodies are not
/// expected), it records the head's fields in `seen` and writes what
/// `answer` makes of the target and fields, keeping the connection open.
pub async fn scripted_upstream<F>(answer: F) -> Upstream
where
    F: Fn(&str, &Fields) -> Vec<u8> + Send + Sync + 'static,
{
    scripted(answer, false).await
}

/// [`scripted_upstream`], closing each connection after its first answer
/// when `close`.
async fn scripted<F>(answer: F, close: bool) -> Upstream
where
    F: Fn(&str, &Fields) -> Vec<u8> + Send + Sync + 'static,
{
    let (listener, up) = bind().await;
    let (conns, reqs, seen) = (up.connections.clone(), up.requests.clone(), up.seen.clone());
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let (reqs, seen, answer) = (reqs.clone(), seen.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        reqs.fetch_add(1, Ordering::SeqCst);
                        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        let fields = parse_fields(&head);
                        let response = answer(&target, &fields);
                        seen.lock().unwrap().push(fields);
                        if s.write_all(&response).await.is_err() {
                            return;
                        }
                        if close {
                            let _ = s.shutdown().await;
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    up
}

/// A WebSocket echo upstream (text and binary messages sent back as they
/// came). The upgrade request's headers are recorded in `seen`.
pub async fn websocket_upstream() -> Upstream {
    let (listener, up) = bind().await;
    let conns = up.connections.clone();
    let reqs = up.requests.clone();
    let seen = up.seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let reqs = reqs.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                // The callback's signature is tungstenite's, large error and all.
                #[allow(clippy::result_large_err)]
                let cb =
                    move |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        reqs.fetch_add(1, Ordering::SeqCst);
                        let mut fields = fields_of(req.headers());
                        fields.push((":path".into(), req.uri().to_string()));
                        seen.lock().unwrap().push(fields);
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, cb).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                    } else if msg.is_close() {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            });
        }
    });
    up
}

/// One request a [`recording_upstream`] parsed: its method, target, fields
/// and body (`Err` when the body did not arrive whole).
#[derive(Debug, Clone)]
#[allow(dead_code, reason = "method and headers are read through Debug, in failure reports")]
pub struct Received {
    pub method: String,
    pub target: String,
    pub headers: Fields,
    pub body: Result<Vec<u8>, String>,
}

/// Every request a [`recording_upstream`] got, in order.
pub type Log = Arc<Mutex<Vec<Received>>>;

/// An upstream that records every request it parses (head and whole body,
/// or the body's error) and answers `200 ok`: what a smuggling test asserts
/// on, since any extra request the gateway let through shows up here.
pub async fn recording_upstream() -> (Upstream, Log) {
    let log: Log = Arc::default();
    let writer = log.clone();
    let up = serve_http1(move |req, _conn| {
        let log = writer.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(collected) => Ok(collected.to_bytes().to_vec()),
                Err(error) => Err(error.to_string()),
            };
            log.lock().unwrap().push(Received {
                method: parts.method.to_string(),
                target: parts.uri.to_string(),
                headers: fields_of(&parts.headers),
                body,
            });
            let mut resp = Response::new(full("ok"));
            resp.headers_mut()
                .insert("content-length", HeaderValue::from_static("2"));
            resp
        }
    })
    .await;
    (up, log)
}
