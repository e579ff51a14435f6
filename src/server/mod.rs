//! The public listener: accept, bound every stage a client controls (TLS
//! handshake, first request, request head size, connection count), serve
//! HTTP/1.1 and HTTP/2 on one port, and drain on shutdown.

pub(crate) mod admin;
mod handler;
mod idle;
mod sending;
mod woken;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, Service};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, debug_span, warn, Instrument};

use self::idle::{Activity, BodyStall, ClientHeadWait, Rewound, Tracked, Turn, IDLE_CHECK};
use self::sending::{Check, Senders};
use self::woken::OwnWaker;
use crate::body::{Body, Tallied};
use crate::config;
use crate::drain::Watch;
use crate::embed;
use crate::metrics;
use crate::proxy::headers::forwarded::Scheme;
use crate::proxy::{Downstream, Tunnels, UpstreamHeadClock, UpstreamHeadWatch};
use crate::state::State;

/// HTTP/2 keep-alive pings find dead peers on long-idle connections.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// How long a connection is still served once draining begins, before it is
/// closed when idle: long enough to read what a client sent just before.
const DRAIN_LINGER: Duration = Duration::from_millis(100);

/// What every connection and request shares for the life of the process.
pub(crate) struct Shared {
    /// The state in force; a reload swaps a whole new one in, and a request
    /// keeps the one it started with.
    state: ArcSwap<State>,
    /// What the embed route keeps in this process about the sessions it
    /// serves; it outlives reloads, like the store.
    pub(crate) embed: Arc<embed::Local>,
}

impl Shared {
    /// Starts with `state`.
    pub(crate) fn new(state: State) -> Self {
        Shared {
            state: ArcSwap::from_pointee(state),
            embed: Arc::default(),
        }
    }

    /// The state in force now.
    pub(crate) fn load(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// Puts `state` in force for every request that starts from now on.
    pub(crate) fn store(&self, state: State) {
        self.state.store(Arc::new(state));
    }
}

/// Accepts public connections until draining begins.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut watch: Watch, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = watch.signaled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly
                // rather than spin; the listener itself is still fine.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(peer = %peer, max_connections, "connection limit reached; closing new connection");
            continue;
        };
        let state = shared.load();
        let conn = Connection {
            shared: shared.clone(),
            peer,
            watch: watch.clone(),
            _slot: slot,
            _open: Counted::new(&metrics::global().connections_open),
        };
        // A debug span: the peer is on every line at `debug`, and at `info`
        // the span costs nothing (a request's lines carry its id, and its
        // access line the client).
        tokio::spawn(conn.serve(stream, state).instrument(debug_span!("conn", peer = %peer)));
    }
}

/// One accepted client connection.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    watch: Watch,
    /// Returned to the connection limit when the connection ends.
    _slot: OwnedSemaphorePermit,
    /// Counted in `embedgate_connections_open` while it lives.
    _open: Counted,
}

/// Counts something in a gauge while it lives: an open connection in
/// `embedgate_connections_open`, a parked one in `…_idle`.
struct Counted(&'static Gauge);

impl Counted {
    fn new(gauge: &'static Gauge) -> Counted {
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Connection {
    async fn serve(self, stream: TcpStream, state: Arc<State>) {
        let _ = stream.set_nodelay(true);
        let server = &state.config.server;
        let tls = match &state.tls {
            // The demo serves plain HTTP on its TLS port too, so a stock
            // browser can open the embed on http://localhost (a secure
            // context) without trusting the dev CA.
            Some(_) if state.config.demo.enabled && !starts_tls(&stream, server.header_read_timeout).await => None,
            tls => tls.as_ref(),
        };
        // Boxed: the TLS stream (over 1 KiB) and the serving future, which
        // live as long as the connection. Inline, the task's state would
        // keep room for each stage's copy, on every connection, idle or not.
        match tls {
            None => match first_bytes(&stream, server.header_read_timeout).await {
                // HTTP/2 with prior knowledge: the whole preface came.
                Some(First::Http2) => Box::pin(self.serve_http2(stream, Scheme::Http, &state)).await,
                Some(First::Http1) => Box::pin(self.serve_http1(stream, Scheme::Http, &state)).await,
                None => debug!("no request within header_read_timeout; closing"),
            },
            Some(acceptor) => {
                match tokio::time::timeout(server.tls_handshake_timeout, Box::pin(acceptor.accept(stream))).await {
                    // ALPN chose h2: nothing else is served on it (RFC 9113
                    // §3.4), so no HTTP/1.1 request misses serve_http1's
                    // guards.
                    Ok(Ok(tls)) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                        Box::pin(self.serve_http2(Box::new(tls), Scheme::Https, &state)).await;
                    }
                    Ok(Ok(tls)) => Box::pin(self.serve_http1(Box::new(tls), Scheme::Https, &state)).await,
                    Ok(Err(error)) => {
                        metrics::global().tls_handshake_failures.inc();
                        debug!(%error, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::global().tls_handshake_failures.inc();
                        debug!("TLS handshake timed out");
                    }
                }
            }
        }
    }

    /// The service every request of this connection goes through. An
    /// HTTP/1.1 connection keeps its upstream wait in `upstream_head`; an
    /// HTTP/2 one has `streams`: its slots for upstream requests and the
    /// watch over the responses it sends.
    fn service(
        &self,
        scheme: Scheme,
        activity: Arc<Activity>,
        tunnels: Tunnels,
        upstream_head: Option<Arc<UpstreamHeadWatch>>,
        streams: Option<(Arc<Semaphore>, Arc<Senders>)>,
    ) -> impl Service<Request<Incoming>, Response = Response<Tracked<Tallied<Body>>>, Error = Infallible, Future: Send>
           + Clone
           + Send
           + Unpin
           + 'static {
        let (upstream_slots, senders) = streams.unzip();
        // What the proxy knows of the connection, and what the embed route
        // remembers of it.
        let downstream = Arc::new((
            Downstream::new(
                self.peer,
                scheme,
                self.watch.clone(),
                tunnels,
                upstream_head,
                upstream_slots,
            ),
            embed::ConnectionMemo::default(),
        ));
        let shared = self.shared.clone();
        service_fn(move |req: Request<Incoming>| {
            let busy = activity.begin();
            let state = shared.load();
            let shared = shared.clone();
            let downstream = downstream.clone();
            let senders = senders.clone();
            // Boxed: a request's future is kilobytes, and hyper moves it
            // whole into its slot for the request (HTTP/1.1) or into the
            // stream's task (HTTP/2); a box is moved as a pointer.
            Box::pin(async move {
                let (connection, memo) = &*downstream;
                let response = handler::handle(req, &state, &shared.embed, (connection, memo)).await;
                Ok::<_, Infallible>(response.map(|mut body| {
                    // On HTTP/2 what the response holds of its upstream
                    // is kept beside it, where the driver can end it.
                    let sending = senders.map(|s| s.watch(body.inner_mut().take_hold()));
                    Tracked::new(body, busy, sending)
                }))
            })
        })
    }

    /// Serves HTTP/2 until the client leaves, a limit is broken, or
    /// draining finishes the last request. Bytes that are not HTTP/2's
    /// preface end the connection: HTTP/1.1 is [`serve_http1`]'s alone.
    ///
    /// [`serve_http1`]: Self::serve_http1
    async fn serve_http2<I>(self, io: I, scheme: Scheme, state: &State)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let server = &state.config.server;
        let activity = Arc::new(Activity::default());
        let tunnels = Tunnels::default();
        let senders = Arc::new(Senders::default());
        let slots = Arc::new(Semaphore::new(server.max_upstream_per_connection));
        let service = self.service(
            scheme,
            activity.clone(),
            tunnels.clone(),
            None,
            Some((slots, senders.clone())),
        );

        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_INTERVAL)
            // WebSockets over HTTP/2 (RFC 8441).
            .enable_connect_protocol();
        // Boxed: an HTTP/2 connection's state is kilobytes, and inline it
        // would size every connection's task, HTTP/1 ones included.
        // HTTP/2's upgrades (extended CONNECT) need no `with_upgrades`.
        let mut conn = Box::pin(builder.serve_connection(TokioIo::new(io), service));

        let mut watch = self.watch.clone();
        // A connection with no stream open and none started for the
        // keep-alive time — its first request included: HTTP/2 has no head
        // timeout of its own — is ended (GOAWAY), as nginx's
        // `keepalive_timeout` does: a silent or idle client holds no slot
        // for ever.
        let mut idle_check = Box::pin(tokio::time::sleep(IDLE_CHECK));
        let mut idle = ClientHeadWait::new();
        // The check and the drain signal are polled when they fire, not
        // at every wake-up of the connection.
        let (check_woken, drain_woken) = (OwnWaker::new(), OwnWaker::new());
        loop {
            {
                let signaled = std::pin::pin!(watch.signaled());
                tokio::select! {
                    biased;
                    result = conn.as_mut() => {
                        if let Err(error) = result {
                            debug!(error = %error, "connection ended with an error");
                        }
                        return;
                    }
                    () = check_woken.when_woken(&mut idle_check) => {
                        // Responses its client took nothing of for the send
                        // timeout free their upstreams; when that is all
                        // the connection has open, it is as good as idle.
                        let stuck = senders.check(server.send_timeout) == Check::AllCut;
                        // An HTTP/2 WebSocket's stream has ended its response
                        // but not its tunnel: open tunnels keep it busy.
                        if tunnels.open() > 0 {
                            idle = ClientHeadWait::new();
                        } else if stuck || idle.check(&activity) >= server.header_read_timeout {
                            if stuck {
                                debug!("the client takes none of its responses; closing");
                            } else {
                                debug!("idle for the keep-alive time; closing");
                            }
                            // HTTP/2's GOAWAY waits for a PING's answer: a
                            // client that never answers is dropped anyway.
                            conn.as_mut().graceful_shutdown();
                            if let Ok(Err(error)) = tokio::time::timeout(IDLE_CHECK, conn.as_mut()).await {
                                debug!(error = %error, "connection ended with an error while closing");
                            }
                            return;
                        }
                        idle_check.as_mut().reset(tokio::time::Instant::now() + IDLE_CHECK);
                    }
                    () = drain_woken.when_woken(signaled) => {}
                }
            }
            if watch.is_draining() {
                // A request the client sent just before the signal may still
                // sit unread in the socket, and closing an idle HTTP/1
                // connection would drop it: serve a moment longer first.
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(error) = result {
                            debug!(error = %error, "connection ended with an error while draining");
                        }
                        return;
                    }
                    () = tokio::time::sleep(DRAIN_LINGER) => {}
                }
                conn.as_mut().graceful_shutdown();
                if let Err(error) = conn.as_mut().await {
                    debug!(error = %error, "connection ended with an error while draining");
                }
                return;
            }
        }
    }

    /// Serves HTTP/1.1 until the client leaves, a limit is broken, or
    /// draining finishes the last request; while the connection is idle,
    /// only the socket is kept (see [`idle`]). The head timeout
    /// ([`ClientHeadWait`], on the connection's idle timer) bounds the wait for
    /// every request head, the first one included, and so is the
    /// keep-alive timeout too.
    async fn serve_http1<I>(self, io: I, scheme: Scheme, state: &State)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let server = &state.config.server;
        let activity = Arc::new(Activity::default());
        // An upgrade ends hyper's connection here, so its tunnel needs no count.
        // The upstream timeout of the request in flight is kept on the
        // connection's once-a-second check too.
        let upstream_head = Arc::new(UpstreamHeadWatch::default());
        let mut upstream_clock = UpstreamHeadClock::default();
        let mut service = self.service(
            scheme,
            activity.clone(),
            Tunnels::default(),
            Some(upstream_head.clone()),
            None,
        );
        let mut io = Rewound::new(io, activity.clone());
        let mut watch = self.watch.clone();
        // Cleared when hyper let go with part of a request unread (the
        // client had begun one while the connection was being parked): the
        // next connection then waits for it under hyper's head timeout,
        // without parking again, so a trickled head is not given a new
        // timeout at every park.
        let mut may_park = true;
        let mut head_wait = ClientHeadWait::new();
        let mut stall = BodyStall::default();
        // The check and the drain signal are polled when they fire, not
        // at every wake-up of the connection (twice a request).
        let (check_woken, drain_woken) = (OwnWaker::new(), OwnWaker::new());
        loop {
            // Boxed, and in this block: a parked connection's task holds
            // none of hyper's connection, not even its box.
            let parts = {
                let mut conn = Box::new(
                    http1_builder(server)
                        .serve_connection(TokioIo::new(io), service)
                        .with_upgrades(),
                );
                let mut idle_check = Box::pin(tokio::time::sleep(IDLE_CHECK));
                let mut signaled = std::pin::pin!(watch.signaled());
                let mut started = activity.started();
                loop {
                    tokio::select! {
                        biased;
                        result = Pin::new(&mut *conn) => {
                            if let Err(error) = result {
                                debug!(error = %error, "connection ended with an error");
                                return;
                            }
                            break;
                        }
                        // Once parking has begun, the elapsed timer is not
                        // looked at again: the check counts whole periods.
                        () = check_woken.when_woken(&mut idle_check), if !activity.is_parking() => {
                            if head_wait.check(&activity) >= server.header_read_timeout {
                                debug!("no request head within header_read_timeout; closing");
                                return;
                            }
                            match stall.check(&activity) {
                                (stalled, Turn::Upstream) if stalled >= server.upstream_timeout => {
                                    debug!("a response gave nothing for upstream_timeout; closing");
                                    return;
                                }
                                (stalled, Turn::Client) if stalled >= server.send_timeout => {
                                    debug!("the client took nothing of a response for send_timeout; closing");
                                    return;
                                }
                                _ => {}
                            }
                            // An expired wait is answered (504) when the
                            // select polls the connection next, at once.
                            upstream_clock.check(&upstream_head, IDLE_CHECK, server.upstream_timeout);
                            let now_started = activity.started();
                            if now_started == started && now_started > 0 && may_park && activity.between_requests() {
                                // hyper closes an idle connection at once (and
                                // would finish a response still being flushed).
                                activity.set_parking(true);
                                Pin::new(&mut *conn).graceful_shutdown();
                            } else {
                                may_park |= now_started != started;
                                started = now_started;
                                idle_check.as_mut().reset(tokio::time::Instant::now() + IDLE_CHECK);
                            }
                        }
                        () = drain_woken.when_woken(signaled.as_mut()), if !activity.is_parking() => {
                            // A request the client sent just before the signal
                            // may still sit unread in the socket: serve a moment
                            // longer, then finish what is in flight and close.
                            tokio::select! {
                                result = Pin::new(&mut *conn) => {
                                    if let Err(error) = result {
                                        debug!(error = %error, "connection ended with an error while draining");
                                    }
                                    return;
                                }
                                () = tokio::time::sleep(DRAIN_LINGER) => {}
                            }
                            Pin::new(&mut *conn).graceful_shutdown();
                            // What is in flight still gets its upstream timeout.
                            loop {
                                idle_check.as_mut().reset(tokio::time::Instant::now() + IDLE_CHECK);
                                tokio::select! {
                                    biased;
                                    result = Pin::new(&mut *conn) => {
                                        if let Err(error) = result {
                                            debug!(error = %error, "connection ended with an error while draining");
                                        }
                                        return;
                                    }
                                    () = idle_check.as_mut() => {
                                        upstream_clock.check(&upstream_head, IDLE_CHECK, server.upstream_timeout);
                                    }
                                }
                            }
                        }
                    }
                }
                // hyper's connection is over: closed, upgraded (the tunnel has
                // the socket now), or let go of for parking.
                if !activity.is_parking() {
                    return;
                }
                match (*conn).into_parts() {
                    Some(parts) => parts,
                    None => {
                        // Upgraded while being parked: the tunnel's own
                        // shutdown must reach the socket.
                        activity.set_parking(false);
                        return;
                    }
                }
            };
            activity.set_parking(false);
            io = parts.io.into_inner();
            may_park = parts.read_buf.is_empty();
            io.unread(parts.read_buf);
            service = parts.service;
            // Parked: only the socket waits, for the rest of the keep-alive
            // time (the head wait began with the last response) or until
            // draining.
            let keep_alive = head_wait.left(server.header_read_timeout);
            let parked_at = tokio::time::Instant::now();
            let parked = Counted::new(&metrics::global().connections_idle);
            let woke = tokio::select! {
                woke = io.wait_for_bytes() => woke,
                () = tokio::time::sleep(keep_alive) => return,
                () = watch.signaled() => {
                    // As above: what the client sent just before is served.
                    match tokio::time::timeout(DRAIN_LINGER, io.wait_for_bytes()).await {
                        Ok(woke) => woke,
                        Err(_) => return,
                    }
                }
            };
            drop(parked);
            head_wait.add(parked_at.elapsed());
            match woke {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => {
                    debug!(%error, "parked connection failed");
                    return;
                }
            }
        }
    }
}

/// The HTTP/1.1 settings of every connection. No head timeout: the
/// driver keeps it ([`ClientHeadWait`]).
fn http1_builder(server: &config::Server) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(server.max_header_bytes)
        .keep_alive(true);
    builder
}

/// What a plain-HTTP client's first bytes say.
enum First {
    Http1,
    /// The whole HTTP/2 preface.
    Http2,
}

/// How often [`first_bytes`] looks again while it has only a beginning of
/// the preface (a peek returns at once while anything is unread).
const PREFACE_POLL: Duration = Duration::from_millis(10);

/// Waits at most `limit` for the client's first bytes and tells HTTP/2's
/// preface from anything else; `None` when nothing (or not enough to tell)
/// came. A beginning of the preface is waited on until it is whole or
/// turns out to be HTTP/1 (`P`, then `OST`).
async fn first_bytes(stream: &TcpStream, limit: Duration) -> Option<First> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut first = [0u8; PREFACE.len()];
    let tell = async {
        loop {
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if !PREFACE.starts_with(&first[..n]) {
                return Some(First::Http1);
            }
            if n == PREFACE.len() {
                return Some(First::Http2);
            }
            tokio::time::sleep(PREFACE_POLL).await;
        }
    };
    tokio::time::timeout(limit, tell).await.ok().flatten()
}

/// Whether the client's first byte opens a TLS handshake record (RFC 8446
/// §5.1: content type 22). Waits at most `limit` for it.
async fn starts_tls(stream: &TcpStream, limit: Duration) -> bool {
    const HANDSHAKE: u8 = 0x16;
    let mut first = [0u8; 1];
    matches!(tokio::time::timeout(limit, stream.peek(&mut first)).await, Ok(Ok(1)) if first[0] == HANDSHAKE)
}
