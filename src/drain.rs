//! Graceful drain: one signal to stop, and a wait until everything that was
//! running when it fired — connections, in-flight requests, open tunnels —
//! has finished.
//!
//! Each piece of work holds a [`Watch`] for as long as it runs. [`Drain::drain`]
//! raises the signal and then waits until every `Watch` is dropped; the caller
//! bounds that wait with `server.shutdown_grace_seconds`.

use tokio::sync::watch;

/// The owner's side: raises the signal and waits for the watchers to finish.
#[derive(Debug)]
pub(crate) struct Drain {
    tx: watch::Sender<bool>,
}

/// A running piece of work's side: learns that draining began, and keeps the
/// drain waiting while it is alive.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    rx: watch::Receiver<bool>,
}

impl Drain {
    /// A new drain and its first watch.
    pub(crate) fn new() -> (Drain, Watch) {
        let (tx, rx) = watch::channel(false);
        (Drain { tx }, Watch { rx })
    }

    /// Raises the signal, then resolves once every [`Watch`] is dropped.
    pub(crate) async fn drain(self) {
        let _ = self.tx.send(true);
        self.tx.closed().await;
    }
}

impl Watch {
    /// Resolves once draining has begun (at once if it already has).
    pub(crate) async fn signaled(&mut self) {
        // An error means the `Drain` was dropped without draining: treat it
        // as a signal too, so nothing waits forever.
        let _ = self.rx.wait_for(|draining| *draining).await;
    }

    /// Whether draining has begun.
    pub(crate) fn is_draining(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn drain_waits_for_every_watch() {
        let (drain, watch) = Drain::new();
        let mut second = watch.clone();
        drop(watch);
        let task = tokio::spawn(async move {
            second.signaled().await;
            assert!(second.is_draining());
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        let started = std::time::Instant::now();
        drain.drain().await;
        assert!(task.is_finished() || started.elapsed() >= Duration::from_millis(50));
        assert!(task.await.is_ok());
    }
}
