//! Bounds on what a client may hold: head read time, head size, TLS
//! handshake time, concurrent connections. A client that breaks one is
//! dropped; the others are served meanwhile.

use std::time::{Duration, Instant};

use crate::common::*;

/// Reads what the gateway sends on `read` until it closes or `deadline`
/// passes (then `Ending::StillOpen`).
async fn read_until_closed(read: &mut tokio::net::tcp::OwnedReadHalf, deadline: Instant) -> (Vec<u8>, Ending) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, read.read(&mut chunk)).await {
            Err(_) => return (got, Ending::StillOpen),
            Ok(Ok(0)) => return (got, Ending::Eof),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => return (got, Ending::Reset),
        }
    }
}

fn not_a_success(bytes: &[u8]) -> bool {
    !bytes.starts_with(b"HTTP/1.1 2") && !bytes.starts_with(b"HTTP/1.0 2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_drops_a_slowloris_client_while_others_are_served() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(
        new_dir(),
        &config("header_read_timeout_seconds = 1", &passthrough(&up.url())),
    )
    .await;

    let start = Instant::now();
    let mut slow = RawConn::connect(gw.public_addr).await;
    slow.send(b"GET /slow HTTP/1.1\r\nHost: gw.example\r\n").await.unwrap();
    // Trickle a header line every 200 ms: each byte arrives in time, the head
    // as a whole never does.
    let (read_half, mut write_half) = slow.stream.into_split();
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for i in 0..30 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write_half
                .write_all(format!("X-Trickle-{i}: x\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });

    tokio::time::sleep(Duration::from_millis(300)).await;
    let fast = get(gw.public_addr, "/fast").await;
    assert_eq!(fast.status, 200, "another client was not served meanwhile");

    let mut read_half = read_half;
    let (got, ending) = read_until_closed(&mut read_half, start + Duration::from_secs(5)).await;
    let took = start.elapsed();
    trickle.abort();
    assert_ne!(
        ending,
        Ending::StillOpen,
        "a client trickling its head was still connected after 5 s (header_read_timeout_seconds = 1)"
    );
    assert!(took < Duration::from_millis(3500), "dropped only after {took:?}");
    assert!(
        not_a_success(&got),
        "the slow request was served: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(up.requests(), 1, "the incomplete request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_drops_a_silent_connection() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(
        new_dir(),
        &config("header_read_timeout_seconds = 1", &passthrough(&up.url())),
    )
    .await;
    let mut silent = RawConn::connect(gw.public_addr).await;
    let (got, ending, took) = silent.wait_closed(Duration::from_secs(5)).await;
    assert_ne!(
        ending,
        Ending::StillOpen,
        "a connection that sent nothing was still open after 5 s (header_read_timeout_seconds = 1)"
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(3500),
        "silent connection dropped after {took:?}"
    );
    assert!(not_a_success(&got));
    assert_eq!(get(gw.public_addr, "/after").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_request_head_is_refused_while_others_are_served() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(new_dir(), &config("max_header_bytes = 8192", &passthrough(&up.url()))).await;

    // Just under the limit: served.
    let mut ok = RawConn::connect(gw.public_addr).await;
    let under = format!(
        "GET /under HTTP/1.1\r\nHost: gw.example\r\nX-Big: {}\r\n\r\n",
        "a".repeat(6000)
    );
    ok.send(under.as_bytes()).await.unwrap();
    let r = ok.read_response(false).await.unwrap();
    assert_eq!(r.status, 200, "a 6 KB head was refused with max_header_bytes = 8192");
    let e = Echo(serde_json::from_slice(&r.body).unwrap());
    assert_eq!(e.headers("x-big")[0].len(), 6000);
    assert_eq!(up.requests(), 1);

    // Well over it: 431 or closed, never forwarded.
    let mut big = RawConn::connect(gw.public_addr).await;
    let over = format!(
        "GET /over HTTP/1.1\r\nHost: gw.example\r\nX-Big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let _ = big.send(over.as_bytes()).await; // the gateway may close mid-write
    match tokio::time::timeout(Duration::from_secs(5), big.read_response(false)).await {
        Err(_) => panic!("no answer and no close within 5 s for an oversize head"),
        Ok(Ok(resp)) => assert_eq!(resp.status, 431, "{resp:?}"),
        Ok(Err(closed)) => assert!(
            matches!(
                closed.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "neither a 431 nor a close: {closed}"
        ),
    }
    assert_eq!(up.requests(), 1, "the oversize request reached the upstream");

    // Others still served, the first connection included.
    ok.send(b"GET /again HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(ok.read_response(false).await.unwrap().status, 200);
    assert_eq!(get(gw.public_addr, "/other").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_timeout_drops_stalled_handshakes_while_others_are_served() {
    let up = echo_upstream("a").await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let gw = Gateway::start(
        dir,
        &config(
            "tls_handshake_timeout_seconds = 1\nheader_read_timeout_seconds = 30",
            &format!("{}\n{}", tls_section(), passthrough(&up.url())),
        ),
    )
    .await;

    let start = Instant::now();
    // One says nothing; one starts a ClientHello record and stalls.
    let mut silent = RawConn::connect(gw.public_addr).await;
    let mut partial = RawConn::connect(gw.public_addr).await;
    partial
        .send(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(200)).await;
    let stream = tls
        .try_connect(gw.public_addr, &[b"http/1.1"])
        .await
        .expect("a good TLS client could not connect while two handshakes were stalled");
    let mut c = H1::handshake(stream, format!("localhost:{}", gw.public_addr.port())).await;
    assert_eq!(c.get("/good").await.status, 200);

    for (name, conn) in [("silent", &mut silent), ("partial ClientHello", &mut partial)] {
        let (_got, ending, _) = conn.wait_closed(Duration::from_secs(5)).await;
        let took = start.elapsed();
        assert_ne!(
            ending,
            Ending::StillOpen,
            "{name}: handshake still open after 5 s (tls_handshake_timeout_seconds = 1)"
        );
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(3500),
            "{name}: dropped after {took:?}, want about 1 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_closed_and_others_unaffected() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(new_dir(), &config("max_connections = 2", &passthrough(&up.url()))).await;

    let mut c1 = H1::connect(gw.public_addr).await;
    assert_eq!(c1.get("/one").await.status, 200);
    let mut c2 = H1::connect(gw.public_addr).await;
    assert_eq!(c2.get("/two").await.status, 200);

    let mut c3 = RawConn::connect(gw.public_addr).await;
    let _ = c3.send(b"GET /three HTTP/1.1\r\nHost: gw.example\r\n\r\n").await;
    let (got, ending, _) = c3.wait_closed(Duration::from_secs(3)).await;
    assert_ne!(
        ending,
        Ending::StillOpen,
        "a third connection with max_connections = 2 was left hanging"
    );
    assert!(
        not_a_success(&got),
        "a third connection was served with max_connections = 2: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(up.requests(), 2);

    // The two admitted connections are unaffected.
    assert_eq!(c2.get("/two-again").await.status, 200);
    assert_eq!(c1.get("/one-again").await.status, 200);

    // A slot freed is a slot reused.
    drop(c1);
    let addr = gw.public_addr;
    assert!(
        eventually(Duration::from_secs(3), || async {
            probe_status(addr, Duration::from_secs(1)).await == Some(200)
        })
        .await,
        "a closed connection's slot was never given back"
    );
}

// ---- Idle keep-alive connections: parked, holding only their socket ----

/// `embedgate_connections_idle` now.
async fn parked(gw: &Gateway) -> f64 {
    let text = get(gw.admin(), "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("embedgate_connections_idle "))
        .and_then(|v| v.trim().parse().ok())
        .expect("embedgate_connections_idle in /metrics")
}

/// Writes `pieces` (a pause between them) and reads one response with a
/// `Content-Length` body: its head and body as text.
async fn exchange<S>(stream: &mut S, pieces: &[&str]) -> (String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stream.write_all(piece.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned();
                return (head, body);
            }
        }
        let n = tokio::time::timeout(T, stream.read(&mut chunk))
            .await
            .expect("response timed out")
            .unwrap();
        assert!(n > 0, "closed mid-response: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
}

/// A keep-alive connection that has finished its requests is parked (its
/// HTTP buffers freed) within two seconds, and serves the next request —
/// even one whose head arrives in pieces — as if nothing happened.
async fn check_parking<S>(gw: &Gateway, up: &Upstream, mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let host = format!("localhost:{}", gw.public_addr.port());
    let request = format!("GET /fixed HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let (head, body) = exchange(&mut stream, &[&request]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "hello world");
    assert!(
        eventually(Duration::from_secs(5), || async { parked(gw).await == 1.0 }).await,
        "the idle connection was not parked within 5 s"
    );
    // The next head in three pieces: the first wakes the parked socket.
    let (head, body) = exchange(
        &mut stream,
        &["GE", "T /fixed HTTP/1.1\r\nHo", &format!("st: {host}\r\n\r\n")],
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(body, "hello world");
    assert_eq!(parked(gw).await, 0.0, "served, so no longer parked");
    // Still a keep-alive connection, twice in a row without a pause.
    for _ in 0..2 {
        let (head, body) = exchange(&mut stream, &[&request]).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, "hello world");
    }
    assert_eq!(up.requests(), 4, "each request reached the upstream once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_parked_and_serves_its_next_request() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(new_dir(), &config("", &passthrough(&up.url()))).await;
    check_parking(&gw, &up, RawConn::connect(gw.public_addr).await.stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_tls_connection_is_parked_and_serves_its_next_request() {
    let up = echo_upstream("a").await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let gw = Gateway::start(
        dir,
        &config("", &format!("{}\n{}", tls_section(), passthrough(&up.url()))),
    )
    .await;
    let (stream, alpn) = tls.connect(gw.public_addr, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    check_parking(&gw, &up, stream).await;
}

/// Parking does not extend the keep-alive time: an idle connection is
/// still closed about `header_read_timeout_seconds` after its last response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_closes_at_the_keep_alive_timeout() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(
        new_dir(),
        &config("header_read_timeout_seconds = 3", &passthrough(&up.url())),
    )
    .await;
    let mut c = RawConn::connect(gw.public_addr).await;
    let (head, _) = exchange(&mut c.stream, &["GET /fixed HTTP/1.1\r\nHost: gw\r\n\r\n"]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let start = Instant::now();
    let (got, ending, _) = c.wait_closed(Duration::from_secs(8)).await;
    let took = start.elapsed();
    assert_ne!(ending, Ending::StillOpen, "still open 8 s after its last response");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(5000),
        "closed {took:?} after the last response, want about 3 s (header_read_timeout_seconds)"
    );
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(eventually(T, || async { parked(&gw).await == 0.0 }).await);
    assert_eq!(get(gw.public_addr, "/after").await.status, 200);
}

/// A request still waiting for its upstream, and a response the client is
/// slow to read, are unfinished: that connection is not parked (which would
/// end its keep-alive), and goes on once the response is through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_an_unfinished_response_is_not_parked() {
    use tokio::io::AsyncReadExt;
    let up = echo_upstream("a").await;
    let gw = Gateway::start(new_dir(), &config("", &passthrough(&up.url()))).await;
    let mut c = RawConn::connect(gw.public_addr).await;
    // Pipelined: the slow one is read with the first, so only its
    // unfinished response tells that the connection is busy.
    let (head, body) = exchange(
        &mut c.stream,
        &["GET /fixed HTTP/1.1\r\nHost: gw\r\n\r\nGET /delay/3000 HTTP/1.1\r\nHost: gw\r\n\r\n"],
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "hello world");
    let (head, _) = exchange(&mut c.stream, &[]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    const SIZE: usize = 32 * 1024 * 1024;
    c.send(format!("GET /download/{SIZE} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(parked(&gw).await, 0.0, "parked with a response still being sent");
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    while find(&got, b"\r\n\r\n").is_none_or(|end| got.len() < end + 4 + SIZE) {
        let n = tokio::time::timeout(T, c.stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed mid-response after {} bytes", got.len());
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let end = find(&got, b"\r\n\r\n").unwrap();
    assert_eq!(got.len(), end + 4 + SIZE, "exactly the body, nothing after it");
    let (head, body) = exchange(&mut c.stream, &["GET /fixed HTTP/1.1\r\nHost: gw\r\n\r\n"]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "hello world");
}

/// A next request head trickled in after a response is bounded by the head
/// timeout from the end of that response: parking never restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_on_a_keep_alive_connection_still_times_out() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(
        new_dir(),
        &config("header_read_timeout_seconds = 3", &passthrough(&up.url())),
    )
    .await;
    let mut c = RawConn::connect(gw.public_addr).await;
    let (head, _) = exchange(&mut c.stream, &["GET /fixed HTTP/1.1\r\nHost: gw\r\n\r\n"]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let start = Instant::now();
    c.send(b"GET /slow HTTP/1.1\r\nHost: gw\r\n").await.unwrap();
    let (read_half, mut write_half) = c.stream.into_split();
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if write_half.write_all(format!("X-T{i}: x\r\n").as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let mut read_half = read_half;
    let (got, ending) = read_until_closed(&mut read_half, start + Duration::from_secs(8)).await;
    let took = start.elapsed();
    trickle.abort();
    assert_ne!(
        ending,
        Ending::StillOpen,
        "a trickled head was still being read after 8 s"
    );
    // Parked with the head half read, it would have had 3 s more.
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(4500),
        "dropped after {took:?}, want about 3 s (header_read_timeout_seconds)"
    );
    assert!(not_a_success(&got), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(up.requests(), 1, "the trickled request reached the upstream");
    assert_eq!(parked(&gw).await, 0.0);
}

/// A parked connection holds no drain open: SIGTERM ends the gateway at
/// once, and the parked client sees its connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_does_not_hold_the_drain() {
    let up = echo_upstream("a").await;
    let mut gw = Gateway::start(
        new_dir(),
        &config("shutdown_grace_seconds = 10", &passthrough(&up.url())),
    )
    .await;
    let mut c = RawConn::connect(gw.public_addr).await;
    let (head, _) = exchange(&mut c.stream, &["GET /fixed HTTP/1.1\r\nHost: gw\r\n\r\n"]).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(eventually(Duration::from_secs(5), || async { parked(&gw).await == 1.0 }).await);
    let start = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| s.success()), "exit after SIGTERM: {status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the drain took {:?}",
        start.elapsed()
    );
    let (_, ending, _) = c.wait_closed(Duration::from_secs(2)).await;
    assert_ne!(ending, Ending::StillOpen);
}
