//! The upstream timeout of an HTTP/1.1 connection's one request in flight:
//! how long it waits for its upstream's response head (the client's own
//! request head is the server's `ClientHeadWait`). Kept by the server's
//! connection driver on the once-a-second check it already runs, instead of
//! a timer armed and cancelled for every request (a timer-wheel entry, its
//! lock and its clock reads).
//!
//! The request marks when it begins and stops waiting for its upstream's
//! response head; the driver counts whole checks of one unbroken wait and,
//! past the timeout, marks the wait expired; the request sees the mark
//! when next polled — the driver polls the connection, and so the request,
//! right after each check — and answers 504. A wait that began between two
//! checks counts from the later one: the timeout ends a wait up to one
//! check late, never early. HTTP/2 streams share a connection and keep a
//! timer each.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// One connection's upstream-head wait, shared by its requests (one at a
/// time, HTTP/1.1's) and its driver.
#[derive(Debug, Default)]
pub(crate) struct UpstreamHeadWatch {
    /// Odd while a request waits; each wait has a number of its own.
    /// Written by the request alone, read by the driver (plain loads and
    /// stores: one writer).
    wait: AtomicU64,
    /// Set by the driver when the current wait ran out.
    expired: AtomicBool,
}

/// Whether a wait ran out before the upstream answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expired;

impl UpstreamHeadWatch {
    /// Runs `request` as a wait for the upstream's head, from now: its
    /// output, or [`Expired`] once the driver says the wait ran out.
    pub(crate) fn wait<F: Future>(&self, request: F) -> Wait<'_, F> {
        self.expired.store(false, Ordering::Relaxed);
        let wait = self.wait.load(Ordering::Relaxed);
        // The plain load and store hold only with one writer: one request
        // at a time (HTTP/1.1's), so no wait is open when one begins.
        debug_assert!(wait.is_multiple_of(2), "a wait began while another was open");
        self.wait.store((wait | 1) + 2, Ordering::Relaxed);
        Wait {
            request,
            waiting: Waiting(self),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request waiting for its upstream's head ([`UpstreamHeadWatch::wait`]).
    pub(crate) struct Wait<'a, F> {
        #[pin]
        request: F,
        waiting: Waiting<'a>,
    }
}

impl<F: Future> Future for Wait<'_, F> {
    type Output = Result<F::Output, Expired>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.waiting.0.expired.load(Ordering::Relaxed) {
            return Poll::Ready(Err(Expired));
        }
        this.request.poll(cx).map(Ok)
    }
}

/// A wait in progress; dropping it (answered, failed or abandoned) ends it.
struct Waiting<'a>(&'a UpstreamHeadWatch);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let wait = self.0.wait.load(Ordering::Relaxed);
        debug_assert!(!wait.is_multiple_of(2), "a wait ended that was not open");
        self.0.wait.store(wait + 1, Ordering::Relaxed);
    }
}

/// The driver's side: how long the current wait has surely lasted.
#[derive(Debug, Default)]
pub(crate) struct UpstreamHeadClock {
    wait: u64,
    waited: Duration,
}

impl UpstreamHeadClock {
    /// At a check, `period` after the last: counts the wait on, and marks
    /// it expired once it has lasted `limit`.
    ///
    /// The mark wakes nothing: the request sees it when it is next polled.
    /// So the driver that calls this must poll the connection (and with it
    /// the request) right after; `serve_http1`'s loop does, its connection
    /// being the first branch of its biased `select!`.
    pub(crate) fn check(&mut self, watch: &UpstreamHeadWatch, period: Duration, limit: Duration) {
        let wait = watch.wait.load(Ordering::Relaxed);
        if wait % 2 == 1 && wait == self.wait {
            self.waited += period;
        } else {
            self.waited = Duration::ZERO;
        }
        self.wait = wait;
        if wait % 2 == 1 && self.waited >= limit {
            watch.expired.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        let waker = futures_util::task::noop_waker();
        Pin::new(future).poll(&mut Context::from_waker(&waker))
    }

    #[tokio::test]
    async fn a_wait_expires_after_whole_checks_and_a_new_one_starts_afresh() {
        let watch = UpstreamHeadWatch::default();
        let mut clock = UpstreamHeadClock::default();
        let mut waiting = Box::pin(watch.wait(std::future::pending::<()>()));
        assert!(poll_once(&mut waiting).is_pending());
        // Begun between checks: the first check only sees it begin.
        clock.check(&watch, SECOND, 2 * SECOND);
        clock.check(&watch, SECOND, 2 * SECOND);
        assert!(poll_once(&mut waiting).is_pending(), "one whole second");
        clock.check(&watch, SECOND, 2 * SECOND);
        assert_eq!(poll_once(&mut waiting), Poll::Ready(Err(Expired)));
        drop(waiting);
        // The next request waits afresh, and an answer ends its wait.
        let answered = watch.wait(async { 7 });
        assert_eq!(answered.await, Ok(7));
        let mut next = Box::pin(watch.wait(std::future::pending::<()>()));
        assert!(poll_once(&mut next).is_pending());
        clock.check(&watch, SECOND, 2 * SECOND);
        clock.check(&watch, SECOND, 2 * SECOND);
        assert!(poll_once(&mut next).is_pending(), "counted from its own start");
    }

    #[test]
    fn no_wait_no_expiry() {
        let watch = UpstreamHeadWatch::default();
        let mut clock = UpstreamHeadClock::default();
        for _ in 0..5 {
            clock.check(&watch, SECOND, SECOND);
        }
        assert!(!watch.expired.load(Ordering::Relaxed));
    }
}
