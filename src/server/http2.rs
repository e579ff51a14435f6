//! An HTTP/2 connection's driver: hyper's connection, the once-a-second
//! check (an idle connection gets a GOAWAY after the keep-alive time; the
//! responses its client takes nothing of are cut, see [`super::sending`])
//! and the drain.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tracing::debug;

use super::activity::{Activity, ClientHeadWait, IDLE_CHECK};
use super::sending::{Check, Senders};
use super::woken::OwnWaker;
use super::{Connection, DRAIN_LINGER};
use crate::proxy::headers::forwarded::Scheme;
use crate::proxy::Tunnels;
use crate::state::State;

/// HTTP/2 keep-alive pings find dead peers on long-idle connections.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

impl Connection {
    /// Serves HTTP/2 until the client leaves, a limit is broken, or
    /// draining finishes the last request. Bytes that are not HTTP/2's
    /// preface end the connection: HTTP/1.1 is [`serve_http1`]'s alone.
    ///
    /// [`serve_http1`]: Self::serve_http1
    pub(super) async fn serve_http2<I>(self, io: I, scheme: Scheme, state: &State)
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
}
