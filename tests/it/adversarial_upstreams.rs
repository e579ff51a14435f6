//! Broken upstreams: garbage instead of HTTP, resets before and mid-body,
//! oversized or too many response fields, a response that never ends, bad
//! chunked framing, a TLS upstream with a certificate for another name, a
//! WebSocket upstream that vanishes. Each gets 502, 504 or a clean abort
//! (never a response passed off as complete), nothing of it leaks into the
//! next request on a pooled connection, and the gateway stays healthy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a scripted upstream does after reading a request head.
#[derive(Clone)]
enum Then {
    /// Writes these bytes and closes.
    Close(Vec<u8>),
    /// Writes these bytes, then resets the connection (SO_LINGER 0).
    Reset(Vec<u8>),
    /// Writes these bytes and keeps the connection open, silent.
    Hang(Vec<u8>),
}

/// A raw upstream that answers `/ok` properly (keep-alive) and anything
/// else as `script` says; counts the request heads it read.
async fn scripted(script: Then) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let counter = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let script = script.clone();
            let heads = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        heads.fetch_add(1, Ordering::SeqCst);
                        if head.starts_with("GET /ok ") {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                            continue;
                        }
                        match &script {
                            Then::Close(bytes) => {
                                let _ = s.write_all(bytes).await;
                                return;
                            }
                            Then::Reset(bytes) => {
                                let _ = s.write_all(bytes).await;
                                let _ = s.flush().await;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                let _ = s.set_zero_linger();
                                return;
                            }
                            Then::Hang(bytes) => {
                                let _ = s.write_all(bytes).await;
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return;
                            }
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// How a client saw a broken exchange.
#[derive(Debug)]
enum Seen {
    Status(u16),
    /// A 200 head arrived, then the connection ended before the body did.
    Cut,
    /// The connection ended before any head.
    Closed,
    /// A 200 head, then nothing more for [`T`]: the client left waiting.
    StillOpen,
}

/// One request for `/broken` on a new connection, read to its end.
async fn try_broken(gw: &Gateway) -> Seen {
    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(b"GET /broken HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    let head = match c.read_head().await {
        Ok(head) => head,
        Err(_) => return Seen::Closed,
    };
    if head.status != 200 {
        return Seen::Status(head.status);
    }
    // A 200 whose body must not arrive whole, nor keep the client waiting.
    match c.wait_closed(T).await {
        (_, Ending::StillOpen, _) => Seen::StillOpen,
        _ => Seen::Cut,
    }
}

/// The gateway is healthy, and the pooled connections to this upstream
/// carry nothing of the broken exchange into the next requests.
async fn healthy(gw: &Gateway) {
    for _ in 0..3 {
        let r = get(gw.public_addr, "/ok").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "ok");
    }
    assert_eq!(get(gw.admin(), "/healthz").await.status, 200);
}

async fn gateway_for(addr: std::net::SocketAddr, extra: &str) -> Gateway {
    Gateway::start(new_dir(), &config(extra, &passthrough(&format!("http://{addr}")))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstream_answers_are_502_or_a_cut_and_leave_nothing_behind() {
    let big_field = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "a".repeat(200_000)
    );
    let many_fields = format!(
        "HTTP/1.1 200 OK\r\n{}Content-Length: 2\r\n\r\nok",
        (0..200).map(|i| format!("X-F{i}: v\r\n")).collect::<String>()
    );
    let cases: Vec<(&str, Then, &[u16])> = vec![
        (
            "garbage instead of HTTP",
            Then::Close(b"SSH-2.0-OpenSSH_9.0\r\n".to_vec()),
            &[502],
        ),
        (
            "garbage, kept open",
            Then::Hang(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n".to_vec()),
            &[502],
        ),
        ("closed before answering", Then::Close(Vec::new()), &[502]),
        ("reset before answering", Then::Reset(Vec::new()), &[502]),
        (
            "a status line of HTTP/2.0",
            Then::Close(b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()),
            &[502],
        ),
        (
            "a status of 1000",
            Then::Close(b"HTTP/1.1 1000 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()),
            &[502],
        ),
        ("a field over the limit", Then::Close(big_field.into_bytes()), &[502]),
        ("too many fields", Then::Close(many_fields.into_bytes()), &[502]),
        (
            "two different Content-Length",
            Then::Close(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok".to_vec()),
            &[502],
        ),
        (
            "a Content-Length that is no number",
            Then::Close(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok".to_vec()),
            &[502],
        ),
        (
            "obs-fold in a response field",
            Then::Close(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok".to_vec()),
            &[502],
        ),
        (
            "a NUL in a response field",
            Then::Close(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok".to_vec()),
            &[502],
        ),
        (
            "reset mid-body",
            Then::Reset(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec()),
            &[],
        ),
        (
            "closed mid-body",
            Then::Close(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec()),
            &[],
        ),
        (
            "a chunk size that is not hex",
            Then::Close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n".to_vec()),
            &[],
        ),
        (
            "a chunk longer than its size",
            Then::Close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n".to_vec()),
            &[],
        ),
        (
            "chunked without its last chunk",
            Then::Close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec()),
            &[],
        ),
    ];
    let count = cases.len();
    let mut failures = Vec::new();
    for (name, script, statuses) in cases {
        let (addr, heads) = scripted(script).await;
        let gw = gateway_for(addr, "").await;
        let seen = try_broken(&gw).await;
        let ok = match seen {
            Seen::Status(s) => statuses.contains(&s),
            // A cut (after a 200 head, or before any) is the clean abort of
            // a body that broke after its head left.
            Seen::Cut | Seen::Closed => statuses.is_empty(),
            Seen::StillOpen => false,
        };
        if !ok {
            failures.push(format!("{name}: {seen:?}, want {statuses:?} (empty: a cut)"));
        }
        healthy(&gw).await;
        // The broken exchange's connection was never reused: /ok after it
        // got its own answers, 3 of them, plus the broken one (and, for a
        // reused connection closed by the upstream, at most one retry).
        let n = heads.load(Ordering::SeqCst);
        if !(4..=5).contains(&n) {
            failures.push(format!(
                "{name}: the upstream read {n} request heads, want 4 (or 5 with a retry)"
            ));
        }
    }
    assert_all_passed(count, &failures);
}

/// A response body that stops coming is aborted after
/// `upstream_timeout_seconds` of silence, never held open for ever —
/// also when the request's first byte came alone (`P` could begin HTTP/2's
/// preface: the gateway waits to tell, and then serves it as any HTTP/1.1
/// request, with the same guards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_never_ends_is_aborted_after_the_upstream_timeout() {
    let request: &[u8] = b"PUT /broken HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n";
    for (name, script, split) in [
        (
            "Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
            request.len(),
        ),
        (
            "chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            request.len(),
        ),
        (
            "Content-Length, the request's first byte alone",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
            1,
        ),
    ] {
        let (addr, _heads) = scripted(Then::Hang(script)).await;
        let gw = gateway_for(addr, "upstream_timeout_seconds = 1").await;
        let mut c = RawConn::connect(gw.public_addr).await;
        c.send(&request[..split]).await.unwrap();
        if split < request.len() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.send(&request[split..]).await.unwrap();
        }
        let head = c.read_head().await.unwrap();
        assert_eq!(head.status, 200, "{name}");
        let (_, ending, took) = c.wait_closed(Duration::from_secs(8)).await;
        assert_ne!(ending, Ending::StillOpen, "{name}: still open after 8 s");
        assert!(took < Duration::from_secs(4), "{name}: aborted after {took:?}");
        healthy(&gw).await;
    }
}

/// A TLS upstream whose certificate is for another name is refused (502),
/// even from a CA the gateway trusts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_upstream_with_a_certificate_for_another_name_is_502() {
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let up = echo_upstream_tls("tls", &tls).await;
    // The leaf is for 127.0.0.1 and localhost; ask for it by another name
    // that resolves to the same place.
    let url = format!("https://127.0.0.2:{}", up.addr.port());
    let gw = Gateway::start(dir, &config("upstream_ca = \"ca.pem\"", &passthrough(&url))).await;
    let r = get(gw.public_addr, "/x").await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json()["statusCode"], 502);
    assert_eq!(up.requests(), 0);
    assert_eq!(get(gw.admin(), "/healthz").await.status, 200);
}

/// A WebSocket upstream that vanishes mid-tunnel: the client's side is
/// closed, and the gateway serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upstream_that_vanishes_closes_the_clients_side() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                if head.starts_with("GET /ok ") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                        .await;
                    return;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = s.set_zero_linger();
            });
        }
    });
    let gw = gateway_for(addr, "").await;
    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(b"GET /ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let head = c.read_head().await.unwrap();
    assert_eq!(head.status, 101, "{head:?}");
    let (_, ending, took) = c.wait_closed(Duration::from_secs(5)).await;
    assert_ne!(ending, Ending::StillOpen, "the tunnel outlived its upstream by 5 s");
    assert!(took < Duration::from_secs(3));
    healthy(&gw).await;
}

/// The same over HTTP/2: the stalled stream is reset by its own timer
/// (one stalled stream must not end its connection's others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_response_that_never_ends_is_reset_after_the_upstream_timeout() {
    let (addr, _heads) = scripted(Then::Hang(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
    ))
    .await;
    let gw = gateway_for(addr, "upstream_timeout_seconds = 1").await;
    let mut raw = Raw::connect(&gw).await;
    let started = std::time::Instant::now();
    raw.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&get_fields(b"/broken", &[])),
    ))
    .await;
    assert!(
        matches!(raw.outcome(T).await, Outcome::Response { ok: true, .. }),
        "no 200 head"
    );
    let end = raw.outcome(Duration::from_secs(8)).await;
    assert!(matches!(end, Outcome::Reset(_)), "{end:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "reset after {:?}",
        started.elapsed()
    );
    healthy(&gw).await;
}
