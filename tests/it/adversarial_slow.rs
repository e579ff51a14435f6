//! Slow and greedy clients: 2,000 connections sending their request head
//! a byte at a time while normal requests go on; the connection cap; idle
//! HTTP/2 connections and the number of streams.

use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLOW: usize = 2_000;

/// `embedgate_connections_open` from the admin listener.
async fn open_connections(gw: &Gateway) -> f64 {
    let text = get(gw.admin(), "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("embedgate_connections_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The 99th percentile of `n` sequential keep-alive requests' latencies.
async fn p99(gw: &Gateway, n: usize) -> Duration {
    let mut h1 = H1::connect(gw.public_addr).await;
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let r = h1.get("/fixed").await;
        assert_eq!(r.status, 200);
        took.push(started.elapsed());
    }
    took.sort();
    took[n * 99 / 100]
}

/// One slow client: its head a byte every `every`; returns whether the
/// gateway closed it (rather than it running out of head), how long that
/// took, and whether it ever got a success.
async fn trickle(addr: std::net::SocketAddr, every: Duration) -> (bool, Duration, bool) {
    let started = Instant::now();
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (true, started.elapsed(), false);
    };
    let head = format!("GET /slow HTTP/1.1\r\nHost: gw\r\nX-Pad: {}\r\n\r\n", "p".repeat(64));
    let mut got = Vec::new();
    for b in head.bytes() {
        if s.write_all(&[b]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return (true, started.elapsed(), false),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    let success = got.starts_with(b"HTTP/1.1 2");
    // Written out (or cut off): does the gateway close it now?
    let mut buf = [0u8; 512];
    let closed = matches!(tokio::time::timeout(T, s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)));
    (closed, started.elapsed(), success)
}

/// 2,000 byte-at-a-time heads: each is closed at `header_read_timeout` (5 s)
/// (never served), the normal requests' p99 meanwhile stays within 3× the
/// baseline's (the baseline floored at 2 ms: loopback p99s of a fraction of
/// a millisecond move by more than that with the machine's other load), and
/// the connection cap turns away what is over it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_heads_time_out_while_normal_requests_go_on() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(
        new_dir(),
        &config(
            &format!("header_read_timeout_seconds = 5\nmax_connections = {}", SLOW + 20),
            &passthrough(&up.url()),
        ),
    )
    .await;
    let baseline = p99(&gw, 300).await;

    let addr = gw.public_addr;
    // In batches, so that the listen backlog never overflows (a refused
    // SYN is retried only a second or more later).
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW / 100 {
        for _ in 0..100 {
            slow.push(tokio::spawn(trickle(addr, Duration::from_millis(500))));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Until the gateway holds them all (connects beyond the listen backlog
    // are retried by the kernel).
    let all_in = eventually(T, || async { open_connections(&gw).await >= SLOW as f64 }).await;
    assert!(
        all_in,
        "{} of {SLOW} slow connections open",
        open_connections(&gw).await
    );

    // The cap: with the slow ones and the measuring connection in, most of
    // 100 more connections are turned away (closed unanswered) at once.
    let mut turned_away = 0;
    let mut extra = Vec::new();
    for _ in 0..100 {
        let mut c = RawConn::connect(addr).await;
        let _ = c.send(b"GET /fixed HTTP/1.1\r\nHost: gw\r\n\r\n").await;
        extra.push(c);
    }
    for c in &mut extra {
        if tokio::time::timeout(Duration::from_secs(2), c.read_head())
            .await
            .is_ok_and(|r| r.is_err())
        {
            turned_away += 1;
        }
    }
    drop(extra);
    assert!(
        turned_away >= 70,
        "only {turned_away} of 100 connections over the cap were turned away"
    );

    let under = p99(&gw, 300).await;
    let bound = 3 * baseline.max(Duration::from_millis(2));
    assert!(
        under <= bound,
        "p99 {under:?} with 2,000 slow clients, baseline {baseline:?}"
    );

    let mut closed = 0;
    let mut latest = Duration::ZERO;
    for task in slow {
        let (was_closed, took, success) = task.await.unwrap();
        assert!(!success, "a trickled head was served");
        closed += usize::from(was_closed);
        latest = latest.max(took);
    }
    assert_eq!(closed, SLOW, "slow connections left open");
    assert!(
        latest < Duration::from_secs(12),
        "the last slow one was closed after {latest:?}"
    );
    assert_eq!(
        up.requests(),
        600 + (100 - turned_away),
        "only the measured requests and the extra ones let in reached the upstream"
    );
    assert_eq!(get(gw.public_addr, "/fixed").await.status, 200);
}

/// An HTTP/2 connection with no stream for the keep-alive time is ended
/// with a GOAWAY; its streams are capped at 256 (SETTINGS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_and_streams_are_capped() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(
        new_dir(),
        &config("header_read_timeout_seconds = 2", &passthrough(&up.url())),
    )
    .await;
    let mut s = TcpStream::connect(gw.public_addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    hello.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&get_fields(b"/fixed", &[])),
    ));
    s.write_all(&hello).await.unwrap();
    let started = Instant::now();
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    let ending = loop {
        match tokio::time::timeout(Duration::from_secs(8), s.read(&mut buf)).await {
            Err(_) => break "still open",
            Ok(Ok(0)) | Ok(Err(_)) => break "closed",
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    let took = started.elapsed();
    // The frames it sent: SETTINGS (MAX_CONCURRENT_STREAMS is 0x3), the
    // response's HEADERS on stream 1, and a GOAWAY.
    let (mut max_streams, mut answered, mut goaway) = (None, false, false);
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = (usize::from(got[at]) << 16) | (usize::from(got[at + 1]) << 8) | usize::from(got[at + 2]);
        let Some(payload) = got.get(at + 9..at + 9 + len) else {
            break;
        };
        let stream = u32::from_be_bytes([got[at + 5], got[at + 6], got[at + 7], got[at + 8]]);
        match got[at + 3] {
            SETTINGS if got[at + 4] & 1 == 0 => {
                for setting in payload.chunks(6).filter(|c| c.len() == 6) {
                    if u16::from_be_bytes([setting[0], setting[1]]) == 3 {
                        max_streams = Some(u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]));
                    }
                }
            }
            HEADERS if stream == 1 => answered = payload.first() == Some(&0x88),
            GOAWAY => goaway = true,
            _ => {}
        }
        at += 9 + len;
    }
    assert!(answered, "no 200 for the one request");
    assert_eq!(max_streams, Some(256), "SETTINGS_MAX_CONCURRENT_STREAMS");
    assert_eq!(ending, "closed", "an idle HTTP/2 connection was kept 8 s");
    assert!(goaway, "closed without a GOAWAY");
    assert!(took < Duration::from_secs(5), "closed after {took:?} (keep-alive 2 s)");
}

/// A connection that opens HTTP/2 and never sends a request holds its
/// slot no longer than `header_read_timeout` (and a second's check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_http2_connection_is_closed_at_the_head_timeout() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(
        new_dir(),
        &config("header_read_timeout_seconds = 2", &passthrough(&up.url())),
    )
    .await;
    let mut raw = Raw::connect(&gw).await;
    let started = Instant::now();
    let mut outcome = raw.outcome(Duration::from_secs(8)).await;
    while matches!(outcome, Outcome::Response { .. } | Outcome::Reset(_)) {
        outcome = raw.outcome(Duration::from_secs(8)).await;
    }
    assert!(matches!(outcome, Outcome::GoAway(_) | Outcome::Closed), "{outcome:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "ended after {took:?} (header_read_timeout_seconds = 2)"
    );
    assert_eq!(get(gw.public_addr, "/fixed").await.status, 200);
}
