//! Bounds on what a client may hold: head read time, head size, TLS
//! handshake time, concurrent connections. A client that breaks one is
//! dropped; the others are served meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::*;

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
    let mut got = Vec::new();
    let ending = {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        loop {
            let left = Duration::from_secs(5).saturating_sub(start.elapsed());
            match tokio::time::timeout(left, read_half.read(&mut chunk)).await {
                Err(_) => break Ending::StillOpen,
                Ok(Ok(0)) => break Ending::Eof,
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                Ok(Err(_)) => break Ending::Reset,
            }
        }
    };
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
