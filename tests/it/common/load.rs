//! Load for the change-under-load tests: keep-alive clients over TLS — some
//! HTTP/1.1 connections and one HTTP/2 connection with concurrent streams —
//! that loop requests as fast as they go and check every answer, and a
//! prober that keeps opening new connections.
//!
//! Every request is timed, and for HTTP/1.1 the client's socket is watched:
//! [`Sent::written`] is when the request's last byte was handed to the kernel
//! (HTTP/2 streams share one socket, so there it is when the request was
//! handed to the client's connection). A test can then tell a request that
//! was in flight at a given moment from one that was never sent.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::client::{Echo, Reply};
use super::embed::{csp_directives, set_cookie_value, API_TOKEN};
use super::tls::TestTls;
use super::{empty, full, Body, T};

/// When the last bytes were written to a socket since [`WriteLog::arm`].
#[derive(Debug, Default)]
pub struct WriteLog {
    last: Mutex<Option<Instant>>,
}

impl WriteLog {
    /// Forgets earlier writes: call right before sending a request.
    pub fn arm(&self) {
        *self.last.lock().unwrap() = None;
    }
    /// When bytes were last written since [`WriteLog::arm`] (`None`: none).
    pub fn last(&self) -> Option<Instant> {
        *self.last.lock().unwrap()
    }
    fn record(&self, n: usize) {
        if n > 0 {
            *self.last.lock().unwrap() = Some(Instant::now());
        }
    }
}

/// A stream that notes in a [`WriteLog`] when bytes were written to it.
pub struct Logged<S> {
    inner: S,
    log: Arc<WriteLog>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Logged<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Logged<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.log.record(n);
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.log.record(n);
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub type LoggedTls = tokio_rustls::client::TlsStream<Logged<TcpStream>>;

/// A TCP connection to `addr`, refused or not.
pub async fn tcp_connect(addr: SocketAddr) -> io::Result<(Logged<TcpStream>, Arc<WriteLog>)> {
    let tcp = tokio::time::timeout(T, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let log = Arc::new(WriteLog::default());
    Ok((
        Logged {
            inner: tcp,
            log: log.clone(),
        },
        log,
    ))
}

/// TLS as `localhost` over a logged TCP stream; returns the stream and the
/// ALPN protocol the server chose.
pub async fn tls_handshake(
    tls: &TestTls,
    tcp: Logged<TcpStream>,
    alpn: &[&[u8]],
) -> io::Result<(LoggedTls, Option<Vec<u8>>)> {
    let connector = tokio_rustls::TlsConnector::from(tls.client_config(alpn));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(T, connector.connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let alpn = stream.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    Ok((stream, alpn))
}

/// An error and every source under it, on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// Why a request got no good answer, and whether the server had begun to
/// answer it (a response head arrived).
#[derive(Debug, Clone)]
pub struct Broken {
    pub answered: bool,
    pub error: String,
}

fn broken(answered: bool, error: String) -> Broken {
    Broken { answered, error }
}

/// Reads a response whole; a body that breaks off is an error.
async fn read_whole(resp: Response<hyper::body::Incoming>) -> Result<Reply, Broken> {
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| broken(true, format!("response body broke off: {}", error_chain(&e))))?
        .to_bytes();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

/// One request on an HTTP/1.1 client connection, within [`T`].
pub async fn send_h1(sender: &mut http1::SendRequest<Body>, req: Request<Body>) -> Result<Reply, Broken> {
    let fut = async {
        sender
            .ready()
            .await
            .map_err(|e| broken(false, format!("connection not ready: {}", error_chain(&e))))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| broken(false, format!("request failed: {}", error_chain(&e))))?;
        read_whole(resp).await
    };
    tokio::time::timeout(T, fut)
        .await
        .unwrap_or_else(|_| Err(broken(false, format!("no whole answer within {T:?}"))))
}

/// One request on an HTTP/2 client connection, within [`T`]; `handed`
/// learns when the request was handed to the connection.
pub async fn send_h2(
    sender: &mut http2::SendRequest<Body>,
    req: Request<Body>,
    handed: &mut Option<Instant>,
) -> Result<Reply, Broken> {
    let fut = async {
        sender
            .ready()
            .await
            .map_err(|e| broken(false, format!("connection not ready: {}", error_chain(&e))))?;
        *handed = Some(Instant::now());
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| broken(false, format!("request failed: {}", error_chain(&e))))?;
        read_whole(resp).await
    };
    tokio::time::timeout(T, fut)
        .await
        .unwrap_or_else(|_| Err(broken(false, format!("no whole answer within {T:?}"))))
}

/// An HTTP/1.1 client connection over TLS (ALPN `http/1.1`) and its socket's
/// write log.
pub async fn h1_tls(tls: &TestTls, addr: SocketAddr) -> io::Result<(http1::SendRequest<Body>, Arc<WriteLog>)> {
    let (tcp, log) = tcp_connect(addr).await?;
    let (stream, _) = tls_handshake(tls, tcp, &[b"http/1.1"]).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, log))
}

/// An HTTP/2 client connection over TLS, asserting the server picked `h2`.
pub async fn h2_tls(tls: &TestTls, addr: SocketAddr) -> http2::SendRequest<Body> {
    let (tcp, _log) = tcp_connect(addr).await.expect("TCP connect for HTTP/2");
    let (stream, alpn) = tls_handshake(tls, tcp, &[b"h2", b"http/1.1"])
        .await
        .expect("TLS handshake for HTTP/2");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "the gateway did not pick h2 by ALPN");
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// One request on a fresh HTTP/1.1 TLS connection.
pub async fn fetch_h1_tls(tls: &TestTls, addr: SocketAddr, req: Request<Body>) -> Result<Reply, Broken> {
    let (mut sender, _) = h1_tls(tls, addr)
        .await
        .map_err(|e| broken(false, format!("connect: {}", error_chain(&e))))?;
    send_h1(&mut sender, req).await
}

/// Mints a PAT for `email` on `app` and exchanges it, over HTTP/1.1 and TLS;
/// returns the session cookie's value.
pub async fn open_session_tls(tls: &TestTls, addr: SocketAddr, email: &str, app: &str) -> String {
    let host = format!("localhost:{}", addr.port());
    let body = serde_json::json!({"email": email, "appId": app}).to_string();
    let req = Request::post("/api/ext/users/personal-access-token")
        .header("host", &host)
        .header("authorization", format!("Basic {API_TOKEN}"))
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap();
    let r = fetch_h1_tls(tls, addr, req).await.expect("mint over TLS");
    assert_eq!(r.status, 201, "mint for {email} on {app}: {r:?} {}", r.text());
    let pat = r.json()["personalAccessToken"].as_str().unwrap().to_string();
    let req = Request::get(format!("/embed-apps/{app}?personal-access-token={pat}"))
        .header("host", &host)
        .body(empty())
        .unwrap();
    let r = fetch_h1_tls(tls, addr, req).await.expect("exchange over TLS");
    assert_eq!(r.status, 303, "exchange for {email} on {app}: {r:?} {}", r.text());
    set_cookie_value(&r, "embedgate_session").expect("the exchange set no embedgate_session cookie")
}

/// Where a load request goes, and what its answer must be.
#[derive(Debug, Clone)]
pub enum Route {
    /// `[passthrough]` to the echo upstream named `upstream`: no identity.
    Passthrough { upstream: &'static str },
    /// `/embed-apps/<app>/…` with the session cookie, to the echo upstream
    /// named `upstream`, which must be told `user` and `app`; the response's
    /// `Content-Security-Policy` must be one of `csp`.
    Embed {
        app: &'static str,
        session: String,
        user: &'static str,
        upstream: &'static str,
        csp: Vec<String>,
    },
}

impl Route {
    pub fn name(&self) -> &'static str {
        match self {
            Route::Passthrough { .. } => "passthrough",
            Route::Embed { .. } => "embed",
        }
    }

    /// A GET of `upstream_path` through this route. `origin` (for HTTP/2) is
    /// put in front of the path; otherwise `host` becomes the `Host` header.
    pub fn request(&self, upstream_path: &str, origin: Option<&str>, host: &str) -> Request<Body> {
        let path = match self {
            Route::Passthrough { .. } => upstream_path.to_string(),
            Route::Embed { app, .. } => format!("/embed-apps/{app}{upstream_path}"),
        };
        let mut req = match origin {
            Some(o) => Request::get(format!("{o}{path}")),
            None => Request::get(path).header("host", host),
        };
        if let Route::Embed { session, .. } = self {
            req = req.header("cookie", format!("embedgate_session={session}"));
        }
        req.body(empty()).unwrap()
    }

    /// Whether `r` is this route's answer to a GET of `upstream_path`.
    pub fn check(&self, upstream_path: &str, r: &Reply) -> Result<(), String> {
        let upstream = match self {
            Route::Passthrough { upstream } | Route::Embed { upstream, .. } => *upstream,
        };
        if r.status != 200 {
            return Err(format!("status {} ({})", r.status, r.text()));
        }
        if r.header("x-upstream") != Some(upstream) {
            return Err(format!("x-upstream {:?}, not {upstream:?}", r.header("x-upstream")));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&r.body).map_err(|e| format!("body is not the echo ({e}): {}", r.text()))?;
        if json["uri"].as_str() != Some(upstream_path) || !json["headers"].is_array() {
            return Err(format!("the upstream saw {}, not {upstream_path}", json["uri"]));
        }
        let e = Echo(json);
        match self {
            Route::Passthrough { .. } => {
                if !e.headers("x-embed-user").is_empty() {
                    return Err(format!(
                        "passthrough carried X-Embed-User {:?}",
                        e.headers("x-embed-user")
                    ));
                }
            }
            Route::Embed {
                app,
                session,
                user,
                csp,
                ..
            } => {
                if e.headers("x-embed-user") != [*user] || e.headers("x-embed-app") != [*app] {
                    return Err(format!(
                        "identity X-Embed-User {:?} X-Embed-App {:?}, not {user} {app}",
                        e.headers("x-embed-user"),
                        e.headers("x-embed-app")
                    ));
                }
                if e.0.to_string().contains(session.as_str()) {
                    return Err("the session token reached the upstream".into());
                }
                let got = r.header("content-security-policy").map(csp_directives);
                if !csp.iter().any(|c| got.as_ref() == Some(&csp_directives(c))) {
                    return Err(format!(
                        "Content-Security-Policy {:?}, not one of {csp:?}",
                        r.header("content-security-policy")
                    ));
                }
            }
        }
        Ok(())
    }
}

/// One request of the load.
#[derive(Debug, Clone)]
pub struct Sent {
    pub route: &'static str,
    pub path: String,
    /// When the lane began the request (in a failure's report).
    #[allow(dead_code, reason = "read through Debug, in failure reports")]
    pub started: Instant,
    /// HTTP/1.1: when the request's last byte went to the socket (`None`:
    /// nothing was written). HTTP/2: when the request was handed to the
    /// connection (`None`: the connection was not ready for it).
    pub written: Option<Instant>,
    pub ended: Instant,
}

impl Sent {
    /// Whether the request was written before `t`.
    pub fn written_before(&self, t: Instant) -> bool {
        self.written.is_some_and(|w| w < t)
    }
    /// Whether it was written before `t` and ended after it: in flight at `t`.
    pub fn in_flight_at(&self, t: Instant) -> bool {
        self.written_before(t) && self.ended > t
    }
}

/// A request of the load that got no good answer.
#[derive(Debug, Clone)]
pub struct Failure {
    pub lane: String,
    pub sent: Sent,
    /// A response head had arrived: the server was answering it.
    pub answered: bool,
    pub error: String,
}

/// What one lane (an HTTP/1.1 connection or an HTTP/2 stream loop) did.
#[derive(Debug)]
pub struct LaneReport {
    pub lane: String,
    pub ok: Vec<Sent>,
    pub failures: Vec<Failure>,
}

/// What the whole load did.
#[derive(Debug)]
pub struct LoadReport {
    pub lanes: Vec<LaneReport>,
}

impl LoadReport {
    pub fn ok(&self) -> usize {
        self.lanes.iter().map(|l| l.ok.len()).sum()
    }
    pub fn ok_sent(&self) -> impl Iterator<Item = &Sent> {
        self.lanes.iter().flat_map(|l| l.ok.iter())
    }
    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.lanes.iter().flat_map(|l| l.failures.iter())
    }
    /// Good answers by route name.
    pub fn ok_by_route(&self, route: &str) -> usize {
        self.ok_sent().filter(|s| s.route == route).count()
    }
    /// One line per lane.
    pub fn summary(&self) -> String {
        self.lanes
            .iter()
            .map(|l| format!("{}: {} ok, {} failed", l.lane, l.ok.len(), l.failures.len()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The load: `h1` HTTP/1.1 connections and `h2_streams` concurrent stream
/// loops on one HTTP/2 connection, all over TLS, each looping through the
/// routes in turn until stopped (or until its connection ends).
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    lanes: Vec<JoinHandle<LaneReport>>,
    h2: http2::SendRequest<Body>,
    /// `https://localhost:PORT`, for HTTP/2 request URIs.
    pub origin: String,
}

impl Load {
    /// Connects every lane (panicking if one cannot), then lets them go.
    pub async fn start(tls: &TestTls, addr: SocketAddr, routes: Vec<Route>, h1: usize, h2_streams: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let routes = Arc::new(routes);
        let host = format!("localhost:{}", addr.port());
        let origin = format!("https://{host}");
        let mut conns = Vec::new();
        for _ in 0..h1 {
            conns.push(h1_tls(tls, addr).await.expect("connect an HTTP/1.1 load connection"));
        }
        let h2 = h2_tls(tls, addr).await;
        let mut lanes = Vec::new();
        for (n, (sender, log)) in conns.into_iter().enumerate() {
            let lane = LaneCtx {
                name: format!("h1-{n}"),
                routes: routes.clone(),
                stop: stop.clone(),
                ok: ok.clone(),
            };
            lanes.push(tokio::spawn(h1_lane(lane, sender, log, host.clone())));
        }
        for n in 0..h2_streams {
            let lane = LaneCtx {
                name: format!("h2-stream-{n}"),
                routes: routes.clone(),
                stop: stop.clone(),
                ok: ok.clone(),
            };
            lanes.push(tokio::spawn(h2_lane(lane, h2.clone(), origin.clone())));
        }
        Load {
            stop,
            ok,
            lanes,
            h2,
            origin,
        }
    }

    /// Good answers so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Another handle on the load's HTTP/2 connection.
    pub fn h2_sender(&self) -> http2::SendRequest<Body> {
        self.h2.clone()
    }

    /// Stops every lane after its current request and collects the reports.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut lanes = Vec::new();
        for handle in self.lanes {
            let report = tokio::time::timeout(T + Duration::from_secs(5), handle)
                .await
                .expect("a load lane did not stop")
                .expect("a load lane panicked");
            lanes.push(report);
        }
        LoadReport { lanes }
    }
}

struct LaneCtx {
    name: String,
    routes: Arc<Vec<Route>>,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
}

impl LaneCtx {
    /// Files one request's outcome; false once the connection is unusable.
    fn file(&self, report: &mut LaneReport, route: &Route, sent: Sent, result: Result<Reply, Broken>) -> bool {
        let outcome = result.and_then(|r| route.check(&sent.path, &r).map_err(|e| broken(true, e)));
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::SeqCst);
                report.ok.push(sent);
                true
            }
            Err(b) => {
                let usable = b.answered && !b.error.starts_with("response body broke off");
                report.failures.push(Failure {
                    lane: self.name.clone(),
                    sent,
                    answered: b.answered,
                    error: b.error,
                });
                usable
            }
        }
    }

    fn report(&self) -> LaneReport {
        LaneReport {
            lane: self.name.clone(),
            ok: Vec::new(),
            failures: Vec::new(),
        }
    }
}

async fn h1_lane(lane: LaneCtx, mut sender: http1::SendRequest<Body>, log: Arc<WriteLog>, host: String) -> LaneReport {
    let mut report = lane.report();
    let mut i = 0usize;
    while !lane.stop.load(Ordering::SeqCst) {
        let route = &lane.routes[i % lane.routes.len()];
        let path = format!("/load/{}/{i}", lane.name);
        let req = route.request(&path, None, &host);
        log.arm();
        let started = Instant::now();
        let result = send_h1(&mut sender, req).await;
        let sent = Sent {
            route: route.name(),
            path,
            started,
            written: log.last(),
            ended: Instant::now(),
        };
        if !lane.file(&mut report, route, sent, result) {
            break;
        }
        i += 1;
    }
    report
}

async fn h2_lane(lane: LaneCtx, mut sender: http2::SendRequest<Body>, origin: String) -> LaneReport {
    let mut report = lane.report();
    let mut i = 0usize;
    while !lane.stop.load(Ordering::SeqCst) {
        let route = &lane.routes[i % lane.routes.len()];
        let path = format!("/load/{}/{i}", lane.name);
        let req = route.request(&path, Some(&origin), "");
        let started = Instant::now();
        let mut handed = None;
        let result = send_h2(&mut sender, req, &mut handed).await;
        let sent = Sent {
            route: route.name(),
            path,
            started,
            written: handed,
            ended: Instant::now(),
        };
        if !lane.file(&mut report, route, sent, result) {
            break;
        }
        i += 1;
    }
    report
}

/// What became of one new connection the [`Prober`] opened (the causes
/// are read through Debug, in failure reports).
#[derive(Debug, Clone)]
#[allow(dead_code, reason = "the causes are read through Debug")]
pub enum ProbeOutcome {
    /// Connected, and the request got its good answer.
    Served,
    /// The TCP connect failed (refused, reset).
    Refused(String),
    /// Connected, but no good answer.
    Failed(Broken),
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub started: Instant,
    /// When the request's last byte went to the socket (after the TLS
    /// handshake; `None`: it was never written).
    pub written: Option<Instant>,
    pub ended: Instant,
    pub outcome: ProbeOutcome,
}

/// Opens a new TLS connection every `every` and sends one GET through
/// `route` on it, until stopped.
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Probe>>,
}

impl Prober {
    pub fn start(tls: Arc<TestTls>, addr: SocketAddr, route: Route, every: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let host = format!("localhost:{}", addr.port());
            let mut probes = Vec::new();
            let mut n = 0usize;
            while !flag.load(Ordering::SeqCst) {
                probes.push(probe_once(&tls, addr, &route, &host, n).await);
                n += 1;
                tokio::time::sleep(every).await;
            }
            probes
        });
        Prober { stop, handle }
    }

    pub async fn stop(self) -> Vec<Probe> {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(T + Duration::from_secs(5), self.handle)
            .await
            .expect("the prober did not stop")
            .expect("the prober panicked")
    }
}

async fn probe_once(tls: &TestTls, addr: SocketAddr, route: &Route, host: &str, n: usize) -> Probe {
    let started = Instant::now();
    let done = |written, outcome| Probe {
        started,
        written,
        ended: Instant::now(),
        outcome,
    };
    let (tcp, log) = match tcp_connect(addr).await {
        Ok(pair) => pair,
        Err(e) => return done(None, ProbeOutcome::Refused(format!("{:?}: {e}", e.kind()))),
    };
    let result = async {
        let (stream, _) = tls_handshake(tls, tcp, &[b"http/1.1"])
            .await
            .map_err(|e| broken(false, format!("TLS handshake: {}", error_chain(&e))))?;
        let (mut sender, conn) = http1::handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(|e| broken(false, format!("h1 handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        log.arm();
        let path = format!("/probe/{n}");
        let r = send_h1(&mut sender, route.request(&path, None, host)).await?;
        route.check(&path, &r).map_err(|e| broken(true, e))
    }
    .await;
    let written = log.last();
    match result {
        Ok(()) => done(written, ProbeOutcome::Served),
        Err(b) => done(written, ProbeOutcome::Failed(b)),
    }
}

/// Seconds from `t0` to `t` (negative: before), for reports.
pub fn secs_from(t0: Instant, t: Instant) -> f64 {
    if t >= t0 {
        (t - t0).as_secs_f64()
    } else {
        -(t0 - t).as_secs_f64()
    }
}
