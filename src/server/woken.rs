//! Futures a connection's driver selects on beside hyper's connection —
//! its once-a-second check, the drain signal — polled only when they
//! woke the task themselves.
//!
//! A task's futures share its waker: every time hyper's connection wakes
//! the task (twice a proxied request), `select!` polls every branch, and
//! polling a timer or a watch channel costs more than it looks (a budget
//! check and a waker compare for the timer, the channel's lock for the
//! watch). Here each side
//! future gets a waker of its own that marks it before waking the task;
//! a poll that finds no mark returns `Pending` at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Whether a side future woke the task itself, and the task to wake: made
/// once a connection, used by each [`PolledWhenWoken`] that the driver's
/// loop builds on it.
#[derive(Default)]
pub(super) struct WokeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WokeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// A side future's own waker: it sets its [`WokeFlag`] before waking the
/// task.
#[derive(Clone)]
pub(super) struct OwnWaker {
    flag: Arc<WokeFlag>,
    waker: Waker,
}

impl OwnWaker {
    pub(super) fn new() -> Self {
        let flag = Arc::new(WokeFlag::default());
        let waker = Waker::from(flag.clone());
        OwnWaker { flag, waker }
    }

    /// `inner`, polled only on its first poll and after it woke the task.
    pub(super) fn when_woken<F: Future>(&self, inner: F) -> PolledWhenWoken<'_, F> {
        // A new side future has registered no waker yet: its first poll
        // must reach it.
        self.flag.woken.store(true, Ordering::Relaxed);
        PolledWhenWoken { own: self, inner }
    }
}

/// See [`OwnWaker::when_woken`].
pub(super) struct PolledWhenWoken<'a, F> {
    own: &'a OwnWaker,
    inner: F,
}

impl<F: Future + Unpin> Future for PolledWhenWoken<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mark = &self.own.flag;
        // Registered before the mark is read: a wake between the two is
        // seen now or wakes the task again.
        mark.task.register(cx.waker());
        if !mark.woken.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        let waker = self.own.waker.clone();
        let result = Pin::new(&mut self.inner).poll(&mut Context::from_waker(&waker));
        if result.is_ready() {
            // Whatever is built on this mark next starts marked anyway.
            mark.woken.store(true, Ordering::Relaxed);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Counts its polls; ready once `ready` is set, which wakes it.
    struct Probe {
        polls: usize,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn polled_first_and_after_its_own_wake_only() {
        let ready = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut probe = Probe {
            polls: 0,
            ready: ready.clone(),
            waker: slot.clone(),
        };
        let marked = OwnWaker::new();
        let task = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&task);
        {
            let mut quiet = marked.when_woken(&mut probe);
            assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending());
            // The task woken by something else: the probe is not polled.
            assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending());
            assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending());
        }
        assert_eq!(probe.polls, 1);
        {
            let mut quiet = marked.when_woken(&mut probe);
            assert!(
                Pin::new(&mut quiet).poll(&mut cx).is_pending(),
                "a new one is polled once"
            );
        }
        assert_eq!(probe.polls, 2);
        {
            let mut quiet = marked.when_woken(&mut probe);
            assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending());
            ready.store(true, Ordering::SeqCst);
            assert!(Pin::new(&mut quiet).poll(&mut cx).is_pending(), "not woken yet");
            let waker = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            waker.expect("the probe registered a waker").wake();
            assert!(
                Pin::new(&mut quiet).poll(&mut cx).is_ready(),
                "woken: polled, and ready"
            );
        }
        assert_eq!(probe.polls, 4);
    }

    #[tokio::test]
    async fn a_timer_and_a_watch_still_fire_beside_a_busy_future() {
        let marked = OwnWaker::new();
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let mut sleep = Box::pin(tokio::time::sleep(Duration::from_millis(20)));
        // The timer, while something else keeps waking the task.
        let busy = async {
            loop {
                tokio::task::yield_now().await;
            }
        };
        let fired = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                () = marked.when_woken(&mut sleep) => {}
                () = busy => unreachable!("busy never ends"),
            }
        });
        assert!(fired.await.is_ok(), "the timer never reached the select");
        // The watch, set from another task.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _ = tx.send(true);
        });
        let mut changed = std::pin::pin!(rx.wait_for(|v| *v));
        let busy = async {
            loop {
                tokio::task::yield_now().await;
            }
        };
        let fired = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                r = marked.when_woken(&mut changed) => r.is_ok(),
                () = busy => unreachable!("busy never ends"),
            }
        });
        assert_eq!(fired.await.ok(), Some(true), "the watch never reached the select");
    }
}
