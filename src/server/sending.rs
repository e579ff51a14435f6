//! HTTP/2 responses whose client stops taking them (nginx's `send_timeout`,
//! `server.send_timeout_seconds`).
//!
//! An HTTP/2 client controls how much of each response it takes: one that
//! never opens its flow-control window leaves hyper waiting with the
//! response body unpolled, and the upstream connection behind it checked
//! out, for as long as the client answers PINGs. hyper offers no way to
//! reset one stream from outside, and does not poll a body it cannot send,
//! so each response is watched from the connection's driver instead:
//!
//! | the body last…                      | whose turn | what counts  |
//! |-------------------------------------|------------|--------------|
//! | was asked for a frame, not ready    | upstream   | nothing here (the body's own stall limit, `upstream_timeout_seconds`) |
//! | gave a frame, or was never asked    | client     | whole checks with no new frame |
//!
//! A response stalled on its client for `send_timeout` is *cut*: its
//! upstream connection is closed and its slot given back at once (so the
//! upstream is held no longer), and the stream fails with an error when
//! hyper next asks it for data (a reset). A connection all of whose open
//! responses are cut, with no tunnel open, takes nothing at all: its
//! driver closes it. HTTP/1.1 has one response at a time, and its driver
//! reads the same facts off the connection's [`Activity`](super::idle::Activity).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tracing::debug;

use super::activity::IDLE_CHECK;
use crate::body::UpstreamHold;

/// One HTTP/2 response being sent, as its body tells it.
#[derive(Debug, Default)]
pub(super) struct Sending {
    /// Frames the body has given hyper.
    frames: AtomicU64,
    /// Whether hyper is waiting on the body: it asked for a frame that was
    /// not ready (the upstream's turn).
    awaited: AtomicBool,
    /// Cut for its client's stall.
    cut: AtomicBool,
    /// What the response holds of its upstream, until it is cut.
    hold: Mutex<Option<Box<UpstreamHold>>>,
}

impl Sending {
    /// hyper asked the body for a frame: `ready` whether one came (or the
    /// end).
    pub(super) fn polled(&self, ready: bool) {
        self.awaited.store(!ready, Ordering::Relaxed);
        if ready {
            // One writer: the body's own task.
            self.frames
                .store(self.frames.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    /// Closes the upstream connection and gives the slot back.
    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        let hold = self.hold.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(hold) = hold {
            hold.release();
        }
    }
}

/// A watched response, and what the driver last saw of it.
#[derive(Debug)]
struct Watched {
    sending: Weak<Sending>,
    frames: u64,
    stalled: Duration,
}

/// The responses of one HTTP/2 connection being sent.
#[derive(Debug, Default)]
pub(super) struct Senders {
    live: Mutex<Live>,
}

/// The watched responses, finished ones among them until a prune.
#[derive(Debug, Default)]
struct Live {
    list: Vec<Watched>,
    /// The length at which the list is pruned before it grows.
    prune_at: usize,
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Some response is still being sent, or none is open.
    Sending,
    /// Every open response (one at least) is cut: the client takes nothing.
    AllCut,
}

impl Senders {
    /// Watches a new response, which holds `hold` of its upstream (none:
    /// a body the gateway wrote).
    pub(super) fn watch(&self, hold: Option<Box<UpstreamHold>>) -> Arc<Sending> {
        let sending = Arc::new(Sending {
            hold: Mutex::new(hold),
            ..Sending::default()
        });
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        // Finished responses leave at the checks; between them, a busy
        // connection's list is pruned whenever it has doubled since the
        // last prune, so it stays within twice its open responses (or 64).
        if live.list.len() >= live.prune_at {
            live.list.retain(|w| w.sending.strong_count() > 0);
            live.prune_at = (2 * live.list.len()).max(64);
        }
        live.list.push(Watched {
            sending: Arc::downgrade(&sending),
            frames: 0,
            stalled: Duration::ZERO,
        });
        sending
    }

    /// At a check, one [`IDLE_CHECK`] after the last: cuts every response
    /// whose client has taken nothing for `limit` (counted in whole
    /// checks, so up to one check late, never early).
    pub(super) fn check(&self, limit: Duration) -> Check {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut open = 0;
        let mut cut = 0;
        live.list.retain_mut(|watched| {
            let Some(sending) = watched.sending.upgrade() else {
                return false;
            };
            open += 1;
            if sending.cut.load(Ordering::Relaxed) {
                cut += 1;
                return true;
            }
            let frames = sending.frames.load(Ordering::Relaxed);
            if frames != watched.frames || sending.awaited.load(Ordering::Relaxed) {
                watched.stalled = Duration::ZERO;
            } else {
                watched.stalled += IDLE_CHECK;
            }
            watched.frames = frames;
            if watched.stalled >= limit {
                debug!("a client took nothing of a response for send_timeout; its upstream is closed");
                sending.cut();
                cut += 1;
            }
            true
        });
        if open > 0 && cut == open {
            Check::AllCut
        } else {
            Check::Sending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_response_its_client_does_not_take_is_cut_and_frees_its_upstream() {
        let senders = Senders::default();
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let upstream = tokio::spawn(std::future::pending::<()>());
        let slot = slots.clone().try_acquire_owned().expect("a free slot");
        let hold = Some(Box::new(UpstreamHold::new(upstream.abort_handle(), slot)));
        let sending = senders.watch(hold);
        let limit = 3 * IDLE_CHECK;
        // Never asked for a frame (a window that never opened): the
        // client's turn from the start.
        assert_eq!(senders.check(limit), Check::Sending);
        assert_eq!(senders.check(limit), Check::Sending);
        assert_eq!(slots.available_permits(), 0, "held while sending");
        assert_eq!(senders.check(limit), Check::AllCut);
        let ended = tokio::time::timeout(Duration::from_secs(5), upstream).await;
        assert!(
            matches!(&ended, Ok(Err(e)) if e.is_cancelled()),
            "the upstream connection's task is ended: {ended:?}"
        );
        // The slot comes back once that task is gone, not before.
        let freed = tokio::time::timeout(Duration::from_secs(5), async {
            while slots.available_permits() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(freed.is_ok(), "the slot is given back after the cut");
        drop(sending);
        assert_eq!(senders.check(limit), Check::Sending, "nothing open");
    }

    #[test]
    fn frames_or_a_wait_on_the_upstream_restart_the_count() {
        let senders = Senders::default();
        let limit = 2 * IDLE_CHECK;
        let sending = senders.watch(None);
        let other = senders.watch(None);
        for _ in 0..5 {
            // A frame between every two checks.
            sending.polled(true);
            other.polled(false);
            assert_eq!(senders.check(limit), Check::Sending);
        }
        // The upstream's turn: not the client's stall.
        sending.polled(false);
        for _ in 0..5 {
            assert_eq!(senders.check(limit), Check::Sending);
        }
        assert!(!sending.cut.load(Ordering::Relaxed) && !other.cut.load(Ordering::Relaxed));
        // A frame given and never taken: cut after the limit, and then,
        // with the other still waiting on its upstream, not all are cut.
        sending.polled(true);
        assert_eq!(senders.check(limit), Check::Sending, "a frame since the last check");
        assert_eq!(senders.check(limit), Check::Sending);
        assert!(!sending.cut.load(Ordering::Relaxed));
        assert_eq!(senders.check(limit), Check::Sending);
        assert!(sending.cut.load(Ordering::Relaxed));
        assert!(!other.cut.load(Ordering::Relaxed));
    }

    #[test]
    fn the_list_stays_within_twice_the_open_responses() {
        let senders = Senders::default();
        let open: Vec<_> = (0..10).map(|_| senders.watch(None)).collect();
        for _ in 0..10_000 {
            drop(senders.watch(None));
        }
        let len = senders.live.lock().map(|l| l.list.len()).unwrap_or(usize::MAX);
        assert!(len <= 2 * 64 + 10, "{len}");
        drop(open);
    }
}
