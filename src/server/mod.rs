//! The public listener: accept, bound every stage a client controls (TLS
//! handshake, first request, request head size, connection count), serve
//! HTTP/1.1 and HTTP/2 on one port, and drain on shutdown.
//!
//! In the order a connection meets them: this file accepts it and picks
//! its protocol ([`sniff`] reads its first bytes); [`http1`] and [`http2`]
//! drive it, keeping their clocks in [`activity`] and waking for them
//! through [`woken`] (an HTTP/2 connection also watches its responses'
//! clients in [`sending`]); [`handler`] serves each request.

mod activity;
pub(crate) mod admin;
mod handler;
mod http1;
mod http2;
mod sending;
mod sniff;
mod woken;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper::{Request, Response};
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, debug_span, warn, Instrument};

use self::activity::{Activity, Tracked};
use self::sending::Senders;
use self::sniff::{first_bytes, starts_tls, First};
use crate::body::{Body, Tallied};
use crate::drain::Watch;
use crate::embed;
use crate::metrics;
use crate::proxy::headers::forwarded::Scheme;
use crate::proxy::{Downstream, Tunnels, UpstreamHeadWatch};
use crate::state::State;

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
}
