//! What a connection's driver learns from its requests, lock-free
//! ([`Activity`]), and the clocks it keeps on its once-a-second check
//! ([`IDLE_CHECK`]): how long the client's next request head has been
//! awaited ([`ClientHeadWait`]) and how long a response has given nothing
//! ([`BodyStall`]); and the response body that tells it ([`Tracked`]).
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Frame, SizeHint};

use super::sending::Sending;

/// How long a connection must have been idle (no request started, none
/// unfinished) before its hyper connection is freed; parking happens
/// between one and two of these after the last response.
pub(super) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// What a connection's driver learns from its requests, lock-free.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Requests started so far.
    started: AtomicU64,
    /// Requests whose response body has not been dropped yet.
    unfinished: AtomicU64,
    /// Whether hyper has read bytes from the client since the last
    /// response was finished: the beginning of a next request head.
    read_since_finish: AtomicBool,
    /// Set while the driver ends hyper's connection to park the socket:
    /// hyper's closing `shutdown` must then not reach the socket.
    parking: AtomicBool,
    /// Response bodies being sent, and the frames they have given hyper:
    /// a body that gives none for the upstream timeout has stalled.
    responding: AtomicU64,
    frames: AtomicU64,
    /// Whether hyper last asked a body for a frame that was not ready:
    /// the stall, if any, is the upstream's; otherwise the client's
    /// (HTTP/1.1's one response at a time).
    awaited: AtomicBool,
}

impl Activity {
    /// Counts a request in; the guard counts it out when dropped.
    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.unfinished.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Requests started so far.
    pub(super) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Whether the connection is between requests: every response so far
    /// finished, and nothing of a next request read yet.
    pub(super) fn between_requests(&self) -> bool {
        self.unfinished.load(Ordering::Relaxed) == 0 && !self.read_since_finish.load(Ordering::Relaxed)
    }

    /// hyper read bytes of the client's: a next request head has begun.
    pub(super) fn read_begun(&self) {
        self.read_since_finish.store(true, Ordering::Relaxed);
    }

    pub(super) fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    pub(super) fn is_parking(&self) -> bool {
        self.parking.load(Ordering::Relaxed)
    }

    /// Whether every response so far has finished: the connection waits
    /// for (or is reading) a next request head.
    fn awaits_head(&self) -> bool {
        self.unfinished.load(Ordering::Relaxed) == 0
    }
}

/// How long a response being sent has given hyper no frame, read at each
/// [`IDLE_CHECK`], and whose the stall is: an upstream that stopped
/// sending (hyper waits on the body), as nginx's `proxy_read_timeout`, or
/// a client that stopped reading (hyper, its socket full, stops asking),
/// as nginx's `send_timeout`. HTTP/1.1's; on HTTP/2 each stream has its
/// own timer for its upstream ([`crate::body`]'s stall) and its own watch
/// for its client ([`super::sending`]), since one stalled stream must not
/// end the others.
#[derive(Debug, Default)]
pub(super) struct BodyStall {
    frames: u64,
    stalled: Duration,
}

/// Whose a stalled response's turn it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    /// hyper waits for the upstream's next frame.
    Upstream,
    /// The body gave hyper a frame the client has not taken.
    Client,
}

impl BodyStall {
    /// At a check, one `IDLE_CHECK` after the last: how long a response
    /// has surely been stalled, and on whom.
    pub(super) fn check(&mut self, activity: &Activity) -> (Duration, Turn) {
        let frames = activity.frames.load(Ordering::Relaxed);
        let responding = activity.responding.load(Ordering::Relaxed) > 0;
        if responding && frames == self.frames {
            self.stalled += IDLE_CHECK;
        } else {
            self.stalled = Duration::ZERO;
        }
        self.frames = frames;
        let turn = if activity.awaited.load(Ordering::Relaxed) {
            Turn::Upstream
        } else {
            Turn::Client
        };
        (self.stalled, turn)
    }
}

/// How long a connection has waited for its next request head (its first
/// included), read at each [`IDLE_CHECK`]: the head timeout, kept by the
/// connection's driver on the timer it already has rather than by hyper,
/// which arms, boxes and cancels a timer of its own for every request.
///
/// A wait that began between two checks counts from the later one, so the
/// timeout ends a connection up to one `IDLE_CHECK` late, never early.
#[derive(Debug)]
pub(super) struct ClientHeadWait {
    started: u64,
    awaiting: bool,
    waited: Duration,
}

impl ClientHeadWait {
    /// From now, a connection's beginning: its first head is awaited.
    pub(super) fn new() -> Self {
        ClientHeadWait {
            started: 0,
            awaiting: true,
            waited: Duration::ZERO,
        }
    }

    /// At a check, one `IDLE_CHECK` after the last: how long the head has
    /// surely been awaited. Any request started or unfinished since the
    /// last check starts the count again.
    pub(super) fn check(&mut self, activity: &Activity) -> Duration {
        let started = activity.started();
        let awaiting = activity.awaits_head();
        if awaiting && self.awaiting && started == self.started {
            self.waited += IDLE_CHECK;
        } else {
            self.waited = Duration::ZERO;
        }
        self.started = started;
        self.awaiting = awaiting;
        self.waited
    }

    /// Counts time spent parked, when no check runs.
    pub(super) fn add(&mut self, parked: Duration) {
        self.waited += parked;
    }

    /// What is left of `limit` by the last check.
    pub(super) fn left(&self, limit: Duration) -> Duration {
        limit.saturating_sub(self.waited)
    }
}

/// One unfinished request of a connection.
#[derive(Debug)]
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.read_since_finish.store(false, Ordering::Relaxed);
        self.0.unfinished.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`Busy`] until hyper drops it
/// (after its last frame, or when the client went away), and tells how
/// hyper takes it: to the connection's [`Activity`] (HTTP/1.1) or to its
/// own [`Sending`] watch (HTTP/2).
#[derive(Debug)]
pub(super) struct Tracked<B> {
    body: B,
    _busy: Busy,
    sending: Option<Arc<Sending>>,
}

impl<B> Tracked<B> {
    pub(super) fn new(body: B, busy: Busy, sending: Option<Arc<Sending>>) -> Self {
        busy.0.responding.fetch_add(1, Ordering::Relaxed);
        busy.0.awaited.store(false, Ordering::Relaxed);
        Tracked {
            body,
            _busy: busy,
            sending,
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self._busy.0.responding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B> http_body::Body for Tracked<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let activity = &this._busy.0;
        if polled.is_ready() {
            activity.frames.fetch_add(1, Ordering::Relaxed);
        }
        activity.awaited.store(polled.is_pending(), Ordering::Relaxed);
        if let Some(sending) = &this.sending {
            sending.polled(polled.is_ready());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;
