//! Upgraded connections (WebSocket and any other HTTP/1.1 `Upgrade`, RFC 9110
//! §7.8): once the upstream answers 101, both sides' connections are taken
//! out of hyper and bytes are copied both ways until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, Instrument};

use crate::drain::Watch;

/// Spawns the tunnel between the client's and the upstream's upgraded
/// connections. It holds `watch` while open, so a drain waits for it (up to
/// the grace period), and ends early when `cancel` resolves.
pub fn spawn_tunnel<F>(client: OnUpgrade, upstream: OnUpgrade, watch: Watch, cancel: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let task = async move {
        let _watch = watch;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                debug!(%error, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
                Ok((up, down)) => debug!(bytes_up = up, bytes_down = down, "tunnel closed"),
                Err(error) => debug!(%error, "tunnel ended with an error"),
            },
            () = cancel => debug!("tunnel cancelled"),
        }
    };
    tokio::spawn(task.in_current_span());
}
