//! Test harness shared by the integration tests: the real `embedgate` binary
//! started on `127.0.0.1:0`, test upstreams built on hyper, a throw-away CA and
//! leaf certificate made with rcgen, and clients (hyper HTTP/1.1 and HTTP/2
//! over plain TCP or tokio-rustls with ALPN, plus raw TCP for what hyper would
//! not let a client get wrong).
//!
//! Every helper has a timeout so that a misbehaving gateway fails a test
//! instead of hanging the suite.
//!
//! One concern a file; every test module says `use crate::common::*;` and
//! gets all of it through the re-exports below:
//!
//! - this file: the time bound [`T`] and the body helpers every other file
//!   builds on;
//! - [`gateway`]: the `embedgate` child process and the configs it starts on;
//! - [`upstreams`]: the test upstreams (echo, controlled, probe, hung, raw,
//!   WebSocket);
//! - [`tls`]: the throw-away CA and leaf;
//! - [`client`]: hyper HTTP/1.1 and HTTP/2 clients and what they read;
//! - [`raw`]: a hand-driven client over TCP or TLS, for what hyper would
//!   not send or read;
//! - [`h2raw`]: raw HTTP/2 frames over TCP or TLS, for what an HTTP/2
//!   library would not send;
//! - [`embed`]: the PAT API and the embed flow (SPEC §3–§6);
//! - [`jwt`]: the JWKS and the assertion as an upstream checks it, and
//!   assertion signing keys;
//! - [`sni`]: a CA with one leaf per host, clients that pick the SNI name;
//! - [`redis`]: `redis-server` as a child process (stopped and restarted
//!   for an outage) and a raw RESP client to look inside it;
//! - [`load`]: keep-alive HTTP/1.1 and HTTP/2 clients looping checked
//!   requests, each timed, and a prober opening new connections.

mod client;
pub mod devtools;
mod embed;
mod gateway;
mod h2raw;
mod jwt;
mod load;
mod raw;
mod redis;
pub mod script_apps;
mod sni;
mod tls;
mod upstreams;

// Likewise for the re-exports: a binary that uses nothing of a file would be
// told its glob is unused.
#[allow(unused_imports)]
pub use self::{
    client::*, embed::*, gateway::*, h2raw::*, jwt::*, load::*, raw::*, redis::*, sni::*, tls::*, upstreams::*,
};

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// Upper bound for anything a healthy gateway does "at once".
pub const T: Duration = Duration::from_secs(10);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every test server and client.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// 64 KiB of zeros, the unit of every large body (no allocation per chunk).
pub static ZEROS: [u8; 65536] = [0u8; 65536];

pub const MIB: u64 = 1024 * 1024;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of `n` zero bytes, produced 64 KiB at a time.
pub fn zeros_body(n: u64) -> Body {
    let stream = futures_util::stream::unfold(n, |rem| async move {
        if rem == 0 {
            return None;
        }
        let len = rem.min(ZEROS.len() as u64) as usize;
        Some((
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(&ZEROS[..len]))),
            rem - len as u64,
        ))
    });
    StreamBody::new(stream).boxed_unsync()
}

/// A body whose chunks the test sends one by one; it ends when the sender drops.
pub fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

/// Polls `f` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails with every failed case listed, when there is one: a table of
/// adversarial cases reports all it found, not only the first.
pub fn assert_all_passed(count: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
