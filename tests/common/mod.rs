//! Test harness shared by the integration tests: the real `embedgate` binary
//! started on `127.0.0.1:0`, test upstreams built on hyper, a throw-away CA and
//! leaf certificate made with rcgen, and clients (hyper HTTP/1.1 and HTTP/2
//! over plain TCP or tokio-rustls with ALPN, plus raw TCP for what hyper would
//! not let a client get wrong).
//!
//! Every helper has a timeout so that a misbehaving gateway fails a test
//! instead of hanging the suite.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Upper bound for anything a healthy gateway does "at once".
pub const T: Duration = Duration::from_secs(10);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every test server and client.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// 64 KiB of zeros, the unit of every large body (no allocation per chunk).
pub static ZEROS: [u8; 65536] = [0u8; 65536];

pub const MIB: u64 = 1024 * 1024;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of `n` zero bytes, produced 64 KiB at a time.
pub fn zeros_body(n: u64) -> Body {
    let stream = futures_util::stream::unfold(n, |rem| async move {
        if rem == 0 {
            return None;
        }
        let len = rem.min(ZEROS.len() as u64) as usize;
        Some((
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(&ZEROS[..len]))),
            rem - len as u64,
        ))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// A body whose chunks the test sends one by one; it ends when the sender drops.
pub fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

// ---------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------

/// A `[server]` table on ephemeral loopback ports, with `extra` lines in it,
/// followed by `sections`.
pub fn config(server_extra: &str, sections: &str) -> String {
    format!(
        "[server]\n\
         listen = \"127.0.0.1:0\"\n\
         public_url = \"http://localhost:8080\"\n\
         admin_listen = \"127.0.0.1:0\"\n\
         {server_extra}\n\n\
         {sections}\n"
    )
}

pub fn passthrough(upstream: &str) -> String {
    format!("[passthrough]\nupstream = \"{upstream}\"\n")
}

/// `[tls]` pointing at the files [`TestTls::generate`] writes, relative to the
/// config file's directory (the gateway runs from another directory).
pub fn tls_section() -> String {
    "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n".to_string()
}

// ---------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------

/// A running `embedgate` child process, killed (by PID) on drop.
pub struct Gateway {
    pub dir: TempDir,
    pub config_path: PathBuf,
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` as printed.
    pub public_url: String,
    pub public_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    child: Child,
    exited: Option<ExitStatus>,
    stderr: Arc<Mutex<String>>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_embedgate")
}

pub fn new_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("embedgate-test")
        .tempdir()
        .expect("tempdir")
}

impl Gateway {
    /// Writes `config` to `dir/gateway.toml` and starts the gateway on it.
    pub async fn start(dir: TempDir, config: &str) -> Gateway {
        Gateway::start_with_args(dir, config, &[]).await
    }

    pub async fn start_with_args(dir: TempDir, config: &str, extra: &[&str]) -> Gateway {
        Gateway::start_full(dir, config, extra, &[]).await
    }

    /// `env` entries override the harness's own (`RUST_LOG=info`).
    pub async fn start_full(dir: TempDir, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(&config_path)
            .args(extra)
            // Not the config's directory: relative paths must be resolved
            // against the config file, not the working directory.
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn embedgate");

        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let pipe = child.stderr.take().expect("stderr pipe");
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(pipe);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => sink.lock().unwrap().push_str(&String::from_utf8_lossy(&line)),
                    }
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        {
            let pipe = child.stdout.take().expect("stdout pipe");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        }

        let mut gw = Gateway {
            dir,
            config_path,
            public_url: String::new(),
            public_addr: "127.0.0.1:1".parse().unwrap(),
            admin_addr: None,
            child,
            exited: None,
            stderr,
        };

        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            while let Ok(line) = rx.try_recv() {
                if let Some((public_url, public_addr, admin)) = parse_ready(&line) {
                    gw.public_url = public_url;
                    gw.public_addr = public_addr;
                    gw.admin_addr = admin;
                    return gw;
                }
                seen.push(line);
            }
            if let Ok(Some(status)) = gw.child.try_wait() {
                gw.exited = Some(status);
                // Let the reader threads drain.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "embedgate exited ({status}) before its ready line\nstdout:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    gw.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "embedgate printed no `embedgate ready:` line within 20 s\nstdout:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    gw.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `sig` (`TERM`, `INT`, `HUP`, …) to the gateway by PID.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Replaces the config file (for a reload).
    pub fn write_config(&self, text: &str) {
        // Write then rename, as an operator's editor or deploy tool would, so
        // the gateway never reads half a file.
        let tmp = self.dir.path().join("gateway.toml.new");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return self.exited;
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            _ => true,
        }
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin_addr.expect("gateway has an admin listener")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- embedgate stderr (pid {}) ----\n{}\n---- end ----",
                self.child.id(),
                self.stderr()
            );
        }
    }
}

fn parse_ready(line: &str) -> Option<(String, SocketAddr, Option<SocketAddr>)> {
    let rest = line.trim().strip_prefix("embedgate ready:")?;
    let mut public = None;
    let mut admin = None;
    let mut admin_seen = false;
    for tok in rest.split_whitespace() {
        if let Some(v) = tok.strip_prefix("public=") {
            let addr: SocketAddr = v.split("://").nth(1)?.trim_end_matches('/').parse().ok()?;
            public = Some((v.to_string(), addr));
        } else if let Some(v) = tok.strip_prefix("admin=") {
            admin_seen = true;
            if v != "none" {
                admin = Some(v.split("://").nth(1)?.trim_end_matches('/').parse().ok()?);
            }
        }
    }
    let (url, addr) = public?;
    if !admin_seen {
        return None;
    }
    Some((url, addr, admin))
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} not in /proc/{pid}/status"));
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("parse kB")
}

/// Runs `embedgate check --config PATH` to completion.
pub fn run_check(config_path: &Path) -> std::process::Output {
    Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(config_path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("run embedgate check")
}

/// A loopback port with nothing listening on it.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// Polls `f` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Test upstreams
// ---------------------------------------------------------------------------

/// Header fields of one request head, names lowercased, in order.
pub type Fields = Vec<(String, String)>;

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
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
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
    let (listener, up) = bind().await;
    let conns = up.connections.clone();
    let reqs = up.requests.clone();
    let seen = up.seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let reqs = reqs.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        reqs.fetch_add(1, Ordering::SeqCst);
                        seen.lock().unwrap().push(parse_fields(&head));
                        if s.write_all(response).await.is_err() {
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
                        let mut fields: Fields = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect();
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

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// A throw-away CA and a leaf for `localhost` and `127.0.0.1`, written to
/// `cert.pem` / `key.pem` (PKCS#8) / `ca.pem` in a directory.
pub struct TestTls {
    roots: rustls::RootCertStore,
    leaf: rustls_pki_types::CertificateDer<'static>,
    leaf_key: rustls_pki_types::PrivatePkcs8KeyDer<'static>,
}

impl TestTls {
    pub fn generate(dir: &Path) -> TestTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
            SanType,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "embedgate test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        leaf.distinguished_name.push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();

        std::fs::write(dir.join("cert.pem"), leaf_cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        TestTls {
            roots,
            leaf: leaf_cert.der().clone(),
            leaf_key: rustls_pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        }
    }

    /// A TLS server (HTTP/1.1 only) presenting the leaf, for test upstreams.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf.clone()], self.leaf_key.clone_key().into())
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }

    /// A client config trusting only the test CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// Like [`TestTls::connect`], but a failed handshake is an error, not a
    /// panic.
    pub async fn try_connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(self.client_config(alpn));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(T, connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }

    /// TLS to `addr` as `localhost`; returns the stream and the ALPN protocol
    /// the server chose.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> (tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>) {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let connector = tokio_rustls::TlsConnector::from(self.client_config(alpn));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio::time::timeout(T, connector.connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake");
        let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        (tls, alpn)
    }
}

// ---------------------------------------------------------------------------
// hyper clients
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Raw TCP
// ---------------------------------------------------------------------------

/// A response parsed from the wire by hand.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    /// Field names lowercased, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// How a connection ended while waiting for it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Orderly close (read returned 0).
    Eof,
    /// Reset or another read error.
    Reset,
    /// Still open when the wait ended.
    StillOpen,
}

pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn try_connect(addr: SocketAddr) -> std::io::Result<RawConn> {
        let stream = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        Ok(RawConn {
            stream,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(T, self.stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "raw read timed out"))??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn take_exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn take_line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads one response head (a 1xx counts as one).
    pub async fn read_head(&mut self) -> std::io::Result<RawResponse> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                let head = String::from_utf8_lossy(&head[..end]).into_owned();
                let status_line = head.lines().next().unwrap_or("");
                let status: u16 = status_line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("bad status line {status_line:?}"),
                        )
                    })?;
                return Ok(RawResponse {
                    status,
                    headers: parse_fields(&head),
                    head,
                    body: Vec::new(),
                });
            }
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads a whole response; `head_request`: it answers a HEAD (no body).
    pub async fn read_response(&mut self, head_request: bool) -> std::io::Result<RawResponse> {
        let mut resp = self.read_head().await?;
        let no_body = head_request || resp.status / 100 == 1 || resp.status == 204 || resp.status == 304;
        if no_body {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false);
        if chunked {
            loop {
                let line = self.take_line().await?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad chunk size line {line:?}"))
                })?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.take_line().await?.is_empty() {}
                    break;
                }
                let data = self.take_exact(size).await?;
                resp.body.extend_from_slice(&data);
                let crlf = self.take_exact(2).await?;
                if crlf != b"\r\n" {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "chunk not followed by CRLF",
                    ));
                }
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad content-length"))?;
            resp.body = self.take_exact(len).await?;
        } else {
            while self.fill().await? != 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    /// Reads until the peer closes or `limit` passes; returns what arrived
    /// (including anything already buffered), how it ended and when.
    pub async fn wait_closed(&mut self, limit: Duration) -> (Vec<u8>, Ending, Duration) {
        let start = Instant::now();
        let deadline = start + limit;
        let mut got = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 16384];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Err(_) => return (got, Ending::StillOpen, start.elapsed()),
                Ok(Ok(0)) => return (got, Ending::Eof, start.elapsed()),
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                Ok(Err(_)) => return (got, Ending::Reset, start.elapsed()),
            }
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The header fields of a head (first line skipped), names lowercased.
pub fn parse_fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// PAT API and embed flow (SPEC §3–§6)
// ---------------------------------------------------------------------------

/// The API token the embed configs accept (`[api] token_sha256`).
pub const API_TOKEN: &str = "eg-test-api-token-7f3a9c0d1e2b4a6f";
/// A second accepted API token, for per-token limits.
pub const API_TOKEN_2: &str = "eg-test-api-token-second-5b8e21d4";
/// `server.public_url` of the embed configs: never the address the tests dial,
/// so that a URL built from `Host` shows.
pub const PUBLIC_URL: &str = "https://gw.public.example";
/// Admits alice by address, `*@partner.example` by domain, group `sales`.
pub const APP_A: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";
/// Admits every user (`*`); no `frame_ancestors`.
pub const APP_B: &str = "2f4c6e8a-1b3d-4f5a-9c7e-0d2b4a6c8e1f";
/// Admits nobody the tests mint for.
pub const APP_C: &str = "c0ffee00-1234-4abc-8def-0123456789ab";
/// A well-formed UUID that no app has.
pub const UNKNOWN_APP: &str = "00000000-0000-4000-8000-000000000000";
pub const FRAME_ANCESTORS_A: [&str; 2] = ["https://portal.example.com", "https://portal2.example.com"];

/// alice: admitted to A by address; carol: by `*@partner.example`; dave: by
/// group `sales`; eve: by nothing on A.
pub const DEFAULT_USERS: &str = "\
[[users]]
email = \"alice@example.com\"
groups = [\"sales\", \"eng\"]

[[users]]
email = \"carol@partner.example\"
groups = []

[[users]]
email = \"dave@other.example\"
groups = [\"sales\"]

[[users]]
email = \"eve@other.example\"
groups = [\"support\"]
";

/// Lowercase hex SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The knobs of an embed test config; [`EmbedOpts::config`] renders it.
#[derive(Debug, Clone)]
pub struct EmbedOpts {
    /// Upstream URL of app A (and C).
    pub app_a: String,
    /// Upstream URL of app B.
    pub app_b: String,
    /// Extra lines in `[server]`.
    pub server_extra: String,
    /// Extra lines in `[api]`.
    pub api_extra: String,
    /// Lines of `[pat]`.
    pub pat: String,
    /// Lines of `[session]`.
    pub session: String,
    /// Lines of `[rate_limit]` (default: high enough never to bite).
    pub rate_limit: String,
    /// The `[[users]]` tables.
    pub users: String,
    /// More sections (e.g. [`tls_section`]).
    pub extra: String,
}

impl EmbedOpts {
    pub fn new(app_a: &str, app_b: &str) -> EmbedOpts {
        EmbedOpts {
            app_a: app_a.to_string(),
            app_b: app_b.to_string(),
            server_extra: String::new(),
            api_extra: String::new(),
            pat: String::new(),
            session: String::new(),
            rate_limit: "pat_create_per_minute = 10000\n\
                         pat_create_per_user_per_minute = 10000\n\
                         bad_pat_per_minute = 10000\n"
                .to_string(),
            users: DEFAULT_USERS.to_string(),
            extra: String::new(),
        }
    }

    pub fn config(&self) -> String {
        format!(
            "[server]\n\
             listen = \"127.0.0.1:0\"\n\
             public_url = \"{PUBLIC_URL}\"\n\
             admin_listen = \"127.0.0.1:0\"\n\
             {server_extra}\n\n\
             [api]\n\
             token_sha256 = [\"{h1}\", \"{h2}\"]\n\
             {api_extra}\n\n\
             [pat]\n{pat}\n\n\
             [session]\n{session}\n\n\
             [rate_limit]\n{rate_limit}\n\n\
             {users}\n\n\
             [[apps]]\n\
             id = \"{APP_A}\"\n\
             upstream = \"{app_a}\"\n\
             allow_users = [\"alice@example.com\", \"*@partner.example\"]\n\
             allow_groups = [\"sales\"]\n\
             frame_ancestors = [\"{fa0}\", \"{fa1}\"]\n\n\
             [[apps]]\n\
             id = \"{APP_B}\"\n\
             upstream = \"{app_b}\"\n\
             allow_users = [\"*\"]\n\
             allow_groups = []\n\
             frame_ancestors = []\n\n\
             [[apps]]\n\
             id = \"{APP_C}\"\n\
             upstream = \"{app_a}\"\n\
             allow_users = [\"nobody@example.com\"]\n\
             allow_groups = [\"admins\"]\n\
             frame_ancestors = []\n\n\
             {extra}\n",
            server_extra = self.server_extra,
            h1 = sha256_hex(API_TOKEN),
            h2 = sha256_hex(API_TOKEN_2),
            api_extra = self.api_extra,
            pat = self.pat,
            session = self.session,
            rate_limit = self.rate_limit,
            users = self.users,
            app_a = self.app_a,
            app_b = self.app_b,
            fa0 = FRAME_ANCESTORS_A[0],
            fa1 = FRAME_ANCESTORS_A[1],
            extra = self.extra,
        )
    }

    pub async fn start(&self) -> Gateway {
        Gateway::start(new_dir(), &self.config()).await
    }
}

/// `POST path` with `Authorization: Basic <token>` (when given) and a JSON
/// body, on a fresh connection.
pub async fn post_json(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> Reply {
    let mut req = Request::post(path).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Basic {t}"));
    }
    H1::connect(addr)
        .await
        .request(req.body(full(body.to_string())).unwrap())
        .await
}

/// Mints with [`API_TOKEN`].
pub async fn mint(addr: SocketAddr, body: &serde_json::Value) -> Reply {
    post_json(
        addr,
        "/api/ext/users/personal-access-token",
        Some(API_TOKEN),
        &body.to_string(),
    )
    .await
}

/// Mints a PAT for `email` on `app` (asserting the 201) and returns it.
pub async fn mint_pat(addr: SocketAddr, email: &str, app: &str) -> String {
    let r = mint(addr, &serde_json::json!({"email": email, "appId": app})).await;
    assert_eq!(r.status, 201, "mint for {email} on {app} failed: {r:?} {}", r.text());
    r.json()["personalAccessToken"].as_str().unwrap().to_string()
}

/// `GET /embed-apps/<app>?<query>` on a fresh connection.
pub async fn exchange_query(addr: SocketAddr, app: &str, query: &str) -> Reply {
    get(addr, &format!("/embed-apps/{app}?{query}")).await
}

/// `GET /embed-apps/<app>?personal-access-token=<pat>`.
pub async fn exchange(addr: SocketAddr, app: &str, pat: &str) -> Reply {
    exchange_query(addr, app, &format!("personal-access-token={pat}")).await
}

/// The value of the `name=` cookie set by a reply.
pub fn set_cookie_value(r: &Reply, name: &str) -> Option<String> {
    r.headers.get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let first = v.split(';').next()?.trim();
        let (k, val) = first.split_once('=')?;
        (k == name).then(|| val.to_string())
    })
}

/// Mints for `email` on `app`, exchanges it (asserting the 303) and returns
/// the session cookie's value (cookie `embedgate_session`).
pub async fn open_session(addr: SocketAddr, email: &str, app: &str) -> String {
    let pat = mint_pat(addr, email, app).await;
    let r = exchange(addr, app, &pat).await;
    assert_eq!(
        r.status,
        303,
        "exchange for {email} on {app} failed: {r:?} {}",
        r.text()
    );
    set_cookie_value(&r, "embedgate_session").expect("the exchange set no embedgate_session cookie")
}

/// `GET path` with `Cookie: <cookie>` and more headers, on a fresh connection.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    H1::connect(addr).await.request(req.body(empty()).unwrap()).await
}

/// `GET /embed-apps/<app><rest>` with the gateway's session cookie.
pub async fn embed_get(addr: SocketAddr, app: &str, rest: &str, session: &str) -> Reply {
    let cookie = format!("embedgate_session={session}");
    get_with(addr, &format!("/embed-apps/{app}{rest}"), &[("cookie", &cookie)]).await
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) to
/// seconds since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        frac = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

/// Asserts the SPEC §3 error body: `{"statusCode", "error", "message"}`.
pub fn assert_error_body(r: &Reply, status: u16, error: &str) -> String {
    assert_eq!(r.status, status, "{r:?} {}", r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "error content-type {ct:?}, body {}",
        r.text()
    );
    let j = r.json();
    assert_eq!(j["statusCode"], status, "{j}");
    assert_eq!(j["error"], error, "{j}");
    let msg = j["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no string message: {j}"));
    assert!(!msg.is_empty(), "empty message: {j}");
    msg.to_string()
}

/// A `Retry-After` header as whole seconds, asserting it is one.
pub fn retry_after_secs(r: &Reply) -> u64 {
    let v = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"));
    v.parse::<u64>()
        .unwrap_or_else(|_| panic!("Retry-After {v:?} is not whole seconds"))
}

/// Opens a WebSocket to `/embed-apps/<app><rest>` through the gateway with the
/// session cookie.
pub async fn embed_websocket(
    addr: SocketAddr,
    app: &str,
    rest: &str,
    session: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/embed-apps/{app}{rest}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "cookie",
        HeaderValue::from_str(&format!("embedgate_session={session}")).unwrap(),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = tokio::time::timeout(T, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("websocket handshake timed out")
        .expect("websocket handshake through the gateway");
    assert_eq!(resp.status(), 101);
    ws
}
