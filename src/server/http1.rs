//! An HTTP/1.1 connection's driver, and its parking.
//!
//! A connection is in one of four states; the driver moves it on its
//! once-a-second check ([`IDLE_CHECK`]) and when hyper's connection ends:
//!
//! | state         | what is held                          | leaves for                                             |
//! |---------------|---------------------------------------|--------------------------------------------------------|
//! | reading a head| hyper's connection, its buffers       | serving (a head came); closed (`header_read_timeout`)  |
//! | serving       | hyper's connection, a request in flight | reading a head (response done); closed (`send_timeout`, `upstream_timeout` on a body) |
//! | parked        | the socket alone                      | reading a head (bytes came); closed (keep-alive time, drain) |
//! | draining      | hyper's connection                    | closed (what is in flight is done; still timed)        |
//!
//! Parking: idle HTTP/1.1 connections hold no HTTP state. hyper keeps a
//! read buffer (8–16 KiB), a write buffer (8 KiB) and a boxed slot for the
//! request future on every connection for as long as it lives. nginx frees
//! its buffers while a connection waits; so does this: once a connection
//! has started no request and finished every response for [`IDLE_CHECK`],
//! its hyper connection is ended without closing the socket (hyper hands
//! back the socket, the unread bytes and the service; [`Rewound`] keeps
//! hyper's closing `shutdown` from reaching the socket), and the socket
//! alone waits for the client's next bytes. They are then read into a
//! fresh hyper connection. Busy connections never pay for it: the check is
//! one timer per connection per [`IDLE_CHECK`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tracing::debug;

use super::activity::{Activity, BodyStall, ClientHeadWait, Turn, IDLE_CHECK};
use super::woken::OwnWaker;
use super::{Connection, Counted, DRAIN_LINGER};
use crate::config;
use crate::metrics;
use crate::proxy::headers::forwarded::Scheme;
use crate::proxy::{Tunnels, UpstreamHeadClock, UpstreamHeadWatch};
use crate::state::State;

impl Connection {
    /// Serves HTTP/1.1 until the client leaves, a limit is broken, or
    /// draining finishes the last request; while the connection is idle,
    /// only the socket is kept (parked: see the module's doc). The head timeout
    /// ([`ClientHeadWait`], on the connection's idle timer) bounds the wait for
    /// every request head, the first one included, and so is the
    /// keep-alive timeout too.
    pub(super) async fn serve_http1<I>(self, io: I, scheme: Scheme, state: &State)
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

/// A client socket with the bytes already read from it in front: what
/// hyper left unread when it let go, or what woke a parked connection.
pub(super) struct Rewound<I> {
    unread: Bytes,
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> Rewound<I> {
    pub(super) fn new(io: I, activity: Arc<Activity>) -> Self {
        Rewound {
            unread: Bytes::new(),
            io,
            activity,
        }
    }

    /// Puts `bytes` in front of what is still unread.
    pub(super) fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.unread.is_empty() {
            self.unread = bytes;
        } else {
            let mut joined = BytesMut::with_capacity(bytes.len() + self.unread.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.unread);
            self.unread = joined.freeze();
        }
    }

    /// Waits for the client's next bytes while parked. `Ok(false)` when
    /// the client closed the connection instead.
    pub(super) async fn wait_for_bytes(&mut self) -> io::Result<bool> {
        if !self.unread.is_empty() {
            return Ok(true);
        }
        // Small on purpose: it lives in the parked connection's task, and
        // hyper reads the rest of the request itself.
        let mut first = [0u8; 16];
        let n = self.io.read(&mut first).await?;
        self.unread = Bytes::copy_from_slice(&first[..n]);
        Ok(n > 0)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewound<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            this.activity.read_begun();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read_begun();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewound<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// While parking, hyper's end of the connection only flushes: the
    /// socket stays open for the client's next request.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.is_parking() {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
