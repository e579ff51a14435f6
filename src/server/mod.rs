//! The public listener: accept, bound every stage a client controls (TLS
//! handshake, first request, request head size, connection count), serve
//! HTTP/1.1 and HTTP/2 on one port, and drain on shutdown.

pub(crate) mod admin;
mod handler;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, debug_span, warn, Instrument};

use crate::drain::Watch;
use crate::embed;
use crate::metrics;
use crate::proxy::headers::forwarded::Scheme;
use crate::proxy::Downstream;
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
            _open: OpenConnection::count(),
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
    _open: OpenConnection,
}

/// Counts a client connection while it lives.
struct OpenConnection;

impl OpenConnection {
    fn count() -> OpenConnection {
        metrics::global().connections_open.inc();
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::global().connections_open.dec();
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
        match tls {
            None => self.serve_http(stream, Scheme::Http, &state).await,
            Some(acceptor) => match tokio::time::timeout(server.tls_handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => self.serve_http(tls, Scheme::Https, &state).await,
                Ok(Err(error)) => {
                    metrics::global().tls_handshake_failures.inc();
                    debug!(%error, "TLS handshake failed");
                }
                Err(_) => {
                    metrics::global().tls_handshake_failures.inc();
                    debug!("TLS handshake timed out");
                }
            },
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 (by ALPN or preface) until the client
    /// leaves, a limit is broken, or draining finishes the last request.
    async fn serve_http<I>(self, io: I, scheme: Scheme, state: &State)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let server = &state.config.server;
        let first_request_seen = Arc::new(AtomicBool::new(false));
        let downstream = Arc::new(Downstream::new(self.peer, scheme, self.watch.clone()));
        let shared = self.shared.clone();
        let seen = first_request_seen.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            seen.store(true, Ordering::Relaxed);
            let state = shared.load();
            let shared = shared.clone();
            let downstream = downstream.clone();
            async move { Ok::<_, Infallible>(handler::handle(req, &state, &shared.embed, &downstream).await) }
        });

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .max_buf_size(server.max_header_bytes)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_INTERVAL)
            // WebSockets over HTTP/2 (RFC 8441).
            .enable_connect_protocol();
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);

        // HTTP/1's head timeout starts only once hyper knows it is HTTP/1,
        // and HTTP/2 has none: this bounds the wait for the first request of
        // either, so a silent client cannot hold a slot.
        let first_request_deadline = tokio::time::sleep(server.header_read_timeout);
        tokio::pin!(first_request_deadline);
        let mut watch = self.watch.clone();
        let mut deadline_armed = true;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        debug!(error = %error, "connection ended with an error");
                    }
                    return;
                }
                () = &mut first_request_deadline, if deadline_armed => {
                    if !first_request_seen.load(Ordering::Relaxed) {
                        debug!("no request within header_read_timeout; closing");
                        return;
                    }
                    deadline_armed = false;
                }
                () = watch.signaled() => {}
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
}

/// Whether the client's first byte opens a TLS handshake record (RFC 8446
/// §5.1: content type 22). Waits at most `limit` for it.
async fn starts_tls(stream: &TcpStream, limit: Duration) -> bool {
    const HANDSHAKE: u8 = 0x16;
    let mut first = [0u8; 1];
    matches!(tokio::time::timeout(limit, stream.peek(&mut first)).await, Ok(Ok(1)) if first[0] == HANDSHAKE)
}
