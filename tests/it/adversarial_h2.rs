//! Adversarial HTTP/2, frame by frame over plain TCP (prior knowledge) and
//! TLS (ALPN `h2`): what an HTTP/2 library would refuse to send —
//! pseudo-header misuse, targets HTTP/1.1 could not carry, oversized header
//! lists, CONTINUATION floods, rapid resets. Each case must end its stream
//! or connection without a success, reach no upstream, and leave the
//! gateway serving HTTP/2 and HTTP/1.1 normally. The two tables run over
//! both transports; their requests say `:scheme http` over TLS too, which
//! the gateway takes (the normal request after each case shows it).

use std::time::Duration;

use crate::common::*;

/// `Ok` when `outcome` refuses the request: a reset, a GOAWAY, a close, or a
/// response that is not a success.
fn refused(outcome: &Outcome) -> Result<(), String> {
    match outcome {
        Outcome::Response { ok: false, .. } | Outcome::Reset(_) | Outcome::GoAway(_) | Outcome::Closed => Ok(()),
        other => Err(format!("not refused: {other:?}")),
    }
}

/// The gateway still serves HTTP/2 and HTTP/1.1 normally over `dial`, and
/// the upstream got exactly the requests counted so far plus these two.
async fn still_serves(gw: &Gateway, dial: Dial<'_>, up: &Upstream, before: usize) -> Result<(), String> {
    let mut raw = Raw::dial(dial, gw).await;
    raw.send(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&get_fields(b"/after", &[])),
    ))
    .await;
    match raw.outcome(T).await {
        Outcome::Response { ok: true, .. } => {}
        other => return Err(format!("a normal HTTP/2 request after it: {other:?}")),
    }
    let mut c = RawConn::dial(dial, gw.public_addr).await;
    let r = match c.send(b"GET /after HTTP/1.1\r\nHost: gw\r\n\r\n").await {
        Ok(()) => c.read_response(false).await.map(|r| r.status),
        Err(e) => Err(e),
    };
    if r.as_ref().ok() != Some(&200) {
        return Err(format!("a normal HTTP/1.1 request after it: {r:?}"));
    }
    if up.requests() != before + 2 {
        return Err(format!(
            "the upstream got {} requests, want {}",
            up.requests(),
            before + 2
        ));
    }
    Ok(())
}

async fn gateway() -> (Gateway, Upstream) {
    let up = echo_upstream("pass").await;
    let gw = Gateway::start(new_dir(), &config("", &passthrough(&up.url()))).await;
    (gw, up)
}

/// As [`gateway`], serving TLS with a certificate from the returned CA.
async fn tls_gateway() -> (Gateway, TestTls, Upstream) {
    let up = echo_upstream("pass").await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let sections = format!("{}\n{}", tls_section(), passthrough(&up.url()));
    let gw = Gateway::start(dir, &config("", &sections)).await;
    (gw, tls, up)
}

/// One HEADERS frame (END_HEADERS | END_STREAM) with these fields on stream 1.
fn request(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(fields))
}

fn malformed_requests() -> Vec<(&'static str, Vec<u8>)> {
    let long = vec![b'a'; 70_000];
    vec![
        // Pseudo-header misuse (RFC 9113 §8.3).
        (
            "no :method",
            request(&[(b":scheme", b"http"), (b":authority", b"gw"), (b":path", b"/x")]),
        ),
        (
            "no :path",
            request(&[(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"gw")]),
        ),
        (
            "no :scheme",
            request(&[(b":method", b"GET"), (b":authority", b"gw"), (b":path", b"/x")]),
        ),
        ("empty :path", request(&get_fields(b"", &[]))),
        ("two :path", request(&get_fields(b"/x", &[(b":path", b"/y")]))),
        (
            "two :method",
            request(&[
                (b":method", b"GET"),
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":authority", b"gw"),
                (b":path", b"/x"),
            ]),
        ),
        (
            "a pseudo-header after a field",
            request(&[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b"x-a", b"b"),
                (b":authority", b"gw"),
                (b":path", b"/x"),
            ]),
        ),
        (
            "an unknown pseudo-header",
            request(&get_fields(b"/x", &[(b":foo", b"bar")])),
        ),
        (
            "a response pseudo-header",
            request(&get_fields(b"/x", &[(b":status", b"200")])),
        ),
        (
            ":protocol without CONNECT",
            request(&get_fields(b"/x", &[(b":protocol", b"websocket")])),
        ),
        // Fields HTTP/2 forbids (RFC 9113 §8.2).
        (
            "an uppercase field name",
            request(&get_fields(b"/x", &[(b"X-Upper", b"v")])),
        ),
        (
            "Connection",
            request(&get_fields(b"/x", &[(b"connection", b"keep-alive")])),
        ),
        (
            "Transfer-Encoding",
            request(&get_fields(b"/x", &[(b"transfer-encoding", b"chunked")])),
        ),
        (
            "TE other than trailers",
            request(&get_fields(b"/x", &[(b"te", b"gzip")])),
        ),
        (
            "Keep-Alive",
            request(&get_fields(b"/x", &[(b"keep-alive", b"timeout=5")])),
        ),
        ("Upgrade", request(&get_fields(b"/x", &[(b"upgrade", b"websocket")]))),
        ("a CR in a value", request(&get_fields(b"/x", &[(b"x-a", b"a\rb")]))),
        (
            "an LF in a value",
            request(&get_fields(b"/x", &[(b"x-a", b"a\nInjected: 1")])),
        ),
        ("a NUL in a value", request(&get_fields(b"/x", &[(b"x-a", b"a\0b")]))),
        (
            "a colon in a field name",
            request(&get_fields(b"/x", &[(b"x:a", b"b")])),
        ),
        (
            "a space in a field name",
            request(&get_fields(b"/x", &[(b"x a", b"b")])),
        ),
        // Targets HTTP/1.1 could not carry.
        ("a space in :path", request(&get_fields(b"/a b", &[]))),
        ("CRLF in :path", request(&get_fields(b"/a\r\nX-Injected: 1", &[]))),
        ("a NUL in :path", request(&get_fields(b"/a\0b", &[]))),
        (":path without a leading slash", request(&get_fields(b"x", &[]))),
        (":path *  with GET", request(&get_fields(b"*", &[]))),
        (":path as an absolute URL", request(&get_fields(b"http://evil/x", &[]))),
        ("a dot-dot :path", request(&get_fields(b"/a/../b", &[]))),
        ("an encoded dot-dot :path", request(&get_fields(b"/a/%2e%2e/b", &[]))),
        (
            "a space in :authority",
            request(&[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"g w"),
                (b":path", b"/x"),
            ]),
        ),
        (
            "userinfo in :authority",
            request(&[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"user@gw"),
                (b":path", b"/x"),
            ]),
        ),
        (
            "CRLF in :authority",
            request(&[
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"gw\r\nx: y"),
                (b":path", b"/x"),
            ]),
        ),
        (
            "Host differing from :authority",
            request(&get_fields(b"/x", &[(b"host", b"other")])),
        ),
        (
            "two Host fields",
            request(&get_fields(b"/x", &[(b"host", b"gw"), (b"host", b"gw")])),
        ),
        (
            "an ftp :scheme",
            request(&[
                (b":method", b"GET"),
                (b":scheme", b"ftp"),
                (b":authority", b"gw"),
                (b":path", b"/x"),
            ]),
        ),
        (
            "CONNECT without :protocol",
            request(&[(b":method", b"CONNECT"), (b":authority", b"gw:443")]),
        ),
        // Size.
        (
            "a header list over the limit",
            request(&get_fields(b"/x", &[(b"x-big", &long)])),
        ),
        (
            "a :path over the limit",
            request(&get_fields(&[b"/".as_slice(), &long].concat(), &[])),
        ),
    ]
}

/// Each case on a new connection: stream 1 must be refused, and the
/// gateway serve on.
async fn refuses_malformed_requests(gw: &Gateway, dial: Dial<'_>, up: &Upstream) {
    let cases = malformed_requests();
    let count = cases.len();
    let mut failures = Vec::new();
    for (name, bytes) in cases {
        let before = up.requests();
        let mut raw = Raw::dial(dial, gw).await;
        raw.send(&bytes).await;
        let outcome = raw.outcome(T).await;
        if let Err(why) = refused(&outcome) {
            failures.push(format!("{name}: {why}"));
        } else if let Err(why) = still_serves(gw, dial, up, before).await {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert_all_passed(count, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http2_requests_are_refused_and_reach_no_upstream() {
    let (gw, up) = gateway().await;
    refuses_malformed_requests(&gw, Dial::Tcp, &up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http2_requests_are_refused_and_reach_no_upstream_over_tls() {
    let (gw, tls, up) = tls_gateway().await;
    refuses_malformed_requests(&gw, Dial::Tls(&tls), &up).await;
}

fn broken_framing() -> Vec<(&'static str, Vec<u8>)> {
    let get1 = block(&get_fields(b"/x", &[]));
    vec![
        (
            "HEADERS on stream 0",
            frame(HEADERS, END_HEADERS | END_STREAM, 0, &get1),
        ),
        (
            "HEADERS on an even stream",
            frame(HEADERS, END_HEADERS | END_STREAM, 2, &get1),
        ),
        ("DATA on an idle stream", frame(DATA, END_STREAM, 1, b"x")),
        (
            "CONTINUATION without HEADERS",
            frame(CONTINUATION, END_HEADERS, 1, &get1),
        ),
        (
            "another frame inside a header block",
            [frame(HEADERS, 0, 1, &get1[..4]), frame(DATA, 0, 1, b"x")].concat(),
        ),
        (
            "a window update to past 2^31-1",
            [
                frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
                frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()),
            ]
            .concat(),
        ),
        ("a zero window update", frame(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes())),
        ("a SETTINGS frame on a stream", frame(SETTINGS, 0, 1, &[])),
        ("a SETTINGS frame of odd length", frame(SETTINGS, 0, 0, &[0, 3, 0, 0])),
        (
            "a frame over the maximum size",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &vec![0u8; 20_000]),
        ),
        (
            "an HPACK index past the tables",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0xff, 0xf0, 0x7f]),
        ),
        (
            "stream ids going down",
            [
                request(&get_fields(b"/status/204", &[])),
                frame(HEADERS, END_HEADERS | END_STREAM, 5, &get1),
                frame(HEADERS, END_HEADERS | END_STREAM, 3, &get1),
            ]
            .concat(),
        ),
    ]
}

/// Each case on a new connection: the connection must end, and the
/// gateway serve on.
async fn ends_broken_framing(gw: &Gateway, dial: Dial<'_>, up: &Upstream) {
    let cases = broken_framing();
    let count = cases.len();
    let mut failures = Vec::new();
    for (name, bytes) in cases {
        let mut raw = Raw::dial(dial, gw).await;
        raw.send(&bytes).await;
        // The connection must end (GOAWAY or close), whatever stream 1 saw.
        let mut outcome = raw.outcome(T).await;
        while matches!(outcome, Outcome::Response { .. } | Outcome::Reset(_)) {
            outcome = raw.outcome(T).await;
        }
        if !matches!(outcome, Outcome::GoAway(_) | Outcome::Closed) {
            failures.push(format!("{name}: the connection went on: {outcome:?}"));
        }
        let before = up.requests();
        if let Err(why) = still_serves(gw, dial, up, before).await {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert_all_passed(count, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_http2_framing_ends_the_connection() {
    let (gw, up) = gateway().await;
    ends_broken_framing(&gw, Dial::Tcp, &up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_http2_framing_ends_the_connection_over_tls() {
    let (gw, tls, up) = tls_gateway().await;
    ends_broken_framing(&gw, Dial::Tls(&tls), &up).await;
}

/// A header block that never ends: CONTINUATION frames without END_HEADERS
/// until the gateway stops reading them (CVE-2024-27316 and kin). It must
/// end the connection long before the flood does, and hold no memory for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    let (gw, up) = gateway().await;
    let mut raw = Raw::connect(&gw).await;
    raw.send(&frame(HEADERS, 0, 1, &block(&get_fields(b"/x", &[])))).await;
    let piece = frame(CONTINUATION, 0, 1, &block(&[(b"x-flood", &[b'a'; 1000])]));
    let mut sent = 0usize;
    let mut cut = false;
    for _ in 0..20_000 {
        if !raw.send(&piece).await {
            cut = true;
            break;
        }
        sent += piece.len();
    }
    let outcome = if cut { Outcome::Closed } else { raw.outcome(T).await };
    assert!(
        matches!(outcome, Outcome::GoAway(_) | Outcome::Closed | Outcome::Reset(_)),
        "after {sent} bytes of CONTINUATION: {outcome:?}"
    );
    assert!(cut, "the gateway took all {sent} bytes of CONTINUATION without closing");
    still_serves(&gw, Dial::Tcp, &up, up.requests()).await.unwrap();
}

/// Rapid reset (CVE-2023-44487): streams opened and cancelled at once, by
/// the thousand. The gateway ends the connection, and the upstream sees a
/// bounded number of requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off() {
    let (gw, up) = gateway().await;
    let mut raw = Raw::connect(&gw).await;
    let headers = block(&get_fields(b"/delay/2000", &[]));
    let mut burst = Vec::new();
    for i in 0..5_000u32 {
        let id = 1 + 2 * i;
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &headers));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = raw.send(&burst).await;
    // Read to the end of the connection: a GOAWAY (ENHANCE_YOUR_CALM) or a close.
    let deadline = tokio::time::Instant::now() + T;
    let mut ended = false;
    while tokio::time::Instant::now() < deadline {
        match raw.outcome(Duration::from_millis(500)).await {
            Outcome::GoAway(_) | Outcome::Closed => {
                ended = true;
                break;
            }
            _ => {}
        }
    }
    assert!(ended, "5000 opened-and-reset streams did not end the connection");
    assert!(up.requests() < 1000, "the upstream got {} requests", up.requests());
    still_serves(&gw, Dial::Tcp, &up, up.requests()).await.unwrap();
}

/// A body shorter or longer than its `content-length` is malformed (RFC
/// 9113 §8.1.1): the stream is reset, and the upstream never gets it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_that_breaks_its_content_length_is_refused() {
    let (pass, log) = recording_upstream().await;
    let gw = Gateway::start(new_dir(), &config("", &passthrough(&pass.url()))).await;
    for (name, body) in [("shorter", &b"12345"[..]), ("longer", &b"123456789012345"[..])] {
        let mut raw = Raw::connect(&gw).await;
        let fields = [
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":authority", b"gw"),
            (b":path", b"/upload"),
            (b"content-length", b"10"),
        ];
        raw.send(&frame(HEADERS, END_HEADERS, 1, &block(&fields))).await;
        raw.send(&frame(DATA, END_STREAM, 1, body)).await;
        let outcome = raw.outcome(T).await;
        assert!(refused(&outcome).is_ok(), "{name}: {outcome:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let whole: Vec<Received> = log.lock().unwrap().iter().filter(|r| r.body.is_ok()).cloned().collect();
        assert!(whole.is_empty(), "{name}: the upstream took {whole:?} as whole");
    }
}
