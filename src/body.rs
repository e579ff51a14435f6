//! The one response body type the gateway hands to hyper: either an
//! upstream's streamed body or a small body the gateway wrote itself; and
//! the wrapper that counts a request's bytes in and out for its access line.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

/// A response body: streamed from upstream, or complete in memory.
///
/// Both arms forward `is_end_stream` and `size_hint`, so hyper keeps an
/// upstream's `Content-Length` (including `0`) and never adds chunking that
/// was not there.
#[derive(Debug)]
pub(crate) enum Body {
    /// Streamed through unchanged, frame by frame; `OnEnd` runs once the
    /// last frame is through (the upstream connection goes back to its
    /// pool then, and only then: a body dropped before its end drops it).
    /// An upstream that sends nothing for the stall limit ends it with an
    /// error: the client's connection (or HTTP/2 stream) is aborted.
    /// `UpstreamSeen` is what the access line says of the upstream: it
    /// travels with the body, not in the response's extensions (a map
    /// allocated for every response). `UpstreamHold` is what the response
    /// holds of the upstream until it is done, on a client connection
    /// that may end it early (boxed: only HTTP/2's have one).
    Upstream(Incoming, Option<OnEnd>, Stall, UpstreamSeen, Option<Box<UpstreamHold>>),
    /// Written by the gateway; `None` once sent.
    Full(Option<Bytes>),
}

/// The upstream's side of a proxied request, for its access line: the
/// proxy gives it to the response's body ([`Body::upstream_seen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamSeen {
    /// The address the pooled connection is connected to.
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) status: u16,
}

/// What a streamed response holds of its upstream until its body is done
/// (or dropped), on an HTTP/2 client connection: a way to close the
/// upstream connection from outside, and the client connection's slot for
/// upstream requests (`server.max_upstream_per_connection`). The
/// connection's driver takes it ([`Body::take_hold`]) to end it early, when
/// its client takes nothing of the response for `server.send_timeout_seconds`.
#[derive(Debug)]
pub(crate) struct UpstreamHold {
    /// The upstream connection's task.
    connection: tokio::task::AbortHandle,
    /// The client connection's slot, given back when this is dropped.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl UpstreamHold {
    /// Holds the upstream connection whose task is `connection`, and the
    /// client connection's `slot`.
    pub(crate) fn new(connection: tokio::task::AbortHandle, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        UpstreamHold {
            connection,
            _slot: slot,
        }
    }

    /// Closes the upstream connection now (its response body then fails
    /// if read), and gives the slot back once the connection's task is
    /// gone, so that an upstream never sees a client connection hold more
    /// connections than it has slots (the next request, let in by the
    /// slot, would otherwise connect before the old socket is closed).
    pub(crate) fn release(self) {
        let UpstreamHold { connection, _slot } = self;
        connection.abort();
        if connection.is_finished() {
            return;
        }
        tokio::spawn(async move {
            // Dropped at the runtime's next turn; a second at the most.
            for _ in 0..200 {
                if connection.is_finished() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            drop(_slot);
        });
    }
}

/// The error a response body ends with.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// How long an upstream body may send nothing (`upstream_timeout_seconds`,
/// as nginx's `proxy_read_timeout`: between two reads, not in all). The
/// timer exists only once a frame was not ready at once: a response read
/// whole with its head never arms one.
#[derive(Debug)]
pub(crate) struct Stall {
    limit: Option<std::time::Duration>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was last set.
    moved: bool,
}

impl Stall {
    /// At most `limit` between two frames; `None`: no limit.
    pub(crate) fn new(limit: Option<std::time::Duration>) -> Self {
        Stall {
            limit,
            timer: None,
            moved: false,
        }
    }

    /// On a frame not ready: whether the limit has passed since the last.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(limit) = self.limit else {
            return false;
        };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if std::mem::take(&mut self.moved) {
            timer.as_mut().reset(tokio::time::Instant::now() + limit);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

/// An upstream body that sent nothing for its stall limit.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing of the response body for upstream_timeout_seconds")]
pub(crate) struct Stalled;

/// What to do once an upstream body has been read to its end.
pub(crate) struct OnEnd(Box<dyn FnOnce() + Send + Sync>);

impl OnEnd {
    /// Runs `f` when the body ends.
    pub(crate) fn new(f: impl FnOnce() + Send + Sync + 'static) -> Self {
        OnEnd(Box::new(f))
    }
}

impl std::fmt::Debug for OnEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnEnd")
    }
}

impl Body {
    /// A body with no bytes.
    pub(crate) fn empty() -> Self {
        Body::Full(None)
    }

    /// A complete in-memory body.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::Full(None)
        } else {
            Body::Full(Some(bytes))
        }
    }
}

impl Body {
    /// An upstream body that runs `on_end` (if any) once read to its end —
    /// at once when it is empty: hyper may never poll an ended body — and
    /// fails when it sends nothing for `stall`.
    pub(crate) fn upstream(
        body: Incoming,
        on_end: Option<OnEnd>,
        stall: Option<std::time::Duration>,
        seen: UpstreamSeen,
        hold: Option<Box<UpstreamHold>>,
    ) -> Self {
        let stall = Stall::new(stall);
        match on_end {
            Some(on_end) if http_body::Body::is_end_stream(&body) => {
                (on_end.0)();
                Body::Upstream(body, None, stall, seen, hold)
            }
            on_end => Body::Upstream(body, on_end, stall, seen, hold),
        }
    }

    /// The upstream's side of a proxied response, for its access line;
    /// `None` for a body the gateway wrote.
    pub(crate) fn upstream_seen(&self) -> Option<UpstreamSeen> {
        match self {
            Body::Upstream(_, _, _, seen, _) => Some(*seen),
            Body::Full(_) => None,
        }
    }

    /// What a streamed response holds of its upstream, taken out to be
    /// kept beside the body (dropped with it, or released early); `None`
    /// for a body the gateway wrote, or on a connection without slots.
    pub(crate) fn take_hold(&mut self) -> Option<Box<UpstreamHold>> {
        match self {
            Body::Upstream(_, _, _, _, hold) => hold.take(),
            Body::Full(_) => None,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Upstream(body, on_end, stall, _, _) => {
                let frame = Pin::new(&mut *body).poll_frame(cx);
                let ended = match &frame {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => {
                        stall.moved = true;
                        body.is_end_stream()
                    }
                    Poll::Pending if stall.expired(cx) => return Poll::Ready(Some(Err(Stalled.into()))),
                    Poll::Ready(Some(Err(_))) | Poll::Pending => false,
                };
                if ended {
                    if let Some(on_end) = on_end.take() {
                        (on_end.0)();
                    }
                }
                frame.map_err(Into::into)
            }
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Upstream(body, _, _, _, _) => body.is_end_stream(),
            Body::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Upstream(body, _, _, _, _) => body.size_hint(),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Which way a [`Tallied`] body's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the client: a request body.
    Received,
    /// To the client: a response body.
    Sent,
}

/// What counts the bytes of a request's bodies (its access record).
pub(crate) trait Tally: Send + Sync {
    /// `bytes` more went `direction`.
    fn count(&self, direction: Direction, bytes: u64);
}

/// A body whose data bytes are counted, frame by frame, into a [`Tally`]
/// that the body holds until it is dropped (with no tally, it is the bare
/// body). Size hints and the end of stream pass through unchanged.
pub(crate) struct Tallied<B> {
    inner: B,
    tally: Option<(Arc<dyn Tally>, Direction)>,
}

/// The request body every handler sees.
pub(crate) type RequestBody = Tallied<Incoming>;

impl<B> Tallied<B> {
    /// `inner`, counted into `tally` (when given) as going `direction`.
    pub(crate) fn new(inner: B, tally: Option<Arc<dyn Tally>>, direction: Direction) -> Self {
        Tallied {
            inner,
            tally: tally.map(|t| (t, direction)),
        }
    }

    /// The body inside.
    pub(crate) fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for Tallied<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<B> http_body::Body for Tallied<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some((tally, direction))) = (&polled, &this.tally) {
            if let Some(data) = frame.data_ref() {
                tally.count(*direction, data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How much of a refused request body the gateway reads and throws away
/// before answering; past this the connection is simply closed.
const DISCARD_BYTES: u64 = 1024 * 1024;

/// The length a request body declares (`Content-Length`, as hyper parsed
/// and checked it), or the least it can be for a chunked body: the one
/// place the gateway reads a body's declared size.
pub(crate) fn declared_length(body: &RequestBody) -> u64 {
    http_body::Body::size_hint(body).lower()
}

/// Reads and drops what is left of a request body the gateway refuses
/// (`already` bytes of it read), up to [`DISCARD_BYTES`] and `limit` in time.
/// Like nginx's lingering close: a client still sending gets the answer
/// instead of a reset, and a small body leaves the connection reusable.
///
/// Nothing is read when the body is declared larger than that, nor when a
/// client that sent `Expect: 100-continue` has not been told to go on
/// (`already == 0`): it is waiting for the answer, and reading would make
/// hyper invite the body.
pub(crate) async fn discard(
    headers: &http::HeaderMap,
    mut body: RequestBody,
    already: u64,
    limit: std::time::Duration,
) {
    use http_body_util::BodyExt;
    let expects_continue = headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if (expects_continue && already == 0) || declared_length(&body) > DISCARD_BYTES {
        return;
    }
    let mut seen = already;
    let drain = async {
        while seen <= DISCARD_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len() as u64),
                Some(Err(_)) | None => return,
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_body_reports_exact_size_and_ends() {
        let body = Body::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let bytes = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(bytes.ok().as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn empty_body_is_end_of_stream_with_zero_length() {
        let body = Body::empty();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(Body::full("").is_end_stream());
    }
}
