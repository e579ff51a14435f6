//! What `[passthrough]` traffic looks like on either side of the gateway:
//! headers, framing, protocols and upstream failures. In the spirit of
//! linkerd2-proxy's `transparency.rs`, each test is named for the behaviour it
//! pins.

use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::Request;
use tokio_tungstenite::tungstenite::Message;

/// A plain-HTTP gateway passing everything to `upstream`.
async fn passthrough_gateway(upstream: &Upstream, server_extra: &str) -> Gateway {
    Gateway::start(new_dir(), &config(server_extra, &passthrough(&upstream.url()))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_reuses_one_upstream_connection() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;

    // Ten requests on one client connection…
    let mut client = H1::connect(gw.public_addr).await;
    for i in 0..10 {
        let r = client.get(&format!("/seq/{i}")).await;
        assert_eq!(r.echo().uri(), format!("/seq/{i}"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // …and ten on ten fresh client connections: the pool is the gateway's,
    // not the client connection's.
    for i in 0..10 {
        let r = get(gw.public_addr, &format!("/fresh/{i}")).await;
        assert_eq!(r.echo().conn(), 1, "request {i} went on a new upstream connection");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(up.requests(), 20);
    assert_eq!(
        up.connections(),
        1,
        "20 sequential requests must share one pooled upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_removes_hop_by_hop_request_headers() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(
        b"GET /hop HTTP/1.1\r\n\
          Host: gw.example\r\n\
          Connection: keep-alive, X-Custom-Hop, x-another-hop\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: trailers\r\n\
          Trailer: X-Checksum\r\n\
          Upgrade: example/1\r\n\
          Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
          X-Custom-Hop: a\r\n\
          X-Another-Hop: b\r\n\
          X-End-To-End: kept\r\n\
          \r\n",
    )
    .await
    .unwrap();
    let resp = c.read_response(false).await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    let echo = Echo(serde_json::from_slice(&resp.body).unwrap());

    for name in [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "x-custom-hop",
        "x-another-hop",
        "transfer-encoding",
    ] {
        assert_eq!(
            echo.headers(name),
            Vec::<String>::new(),
            "hop-by-hop `{name}` reached the upstream"
        );
    }
    let conn = echo.headers("connection");
    assert!(
        conn.is_empty() || conn == vec!["keep-alive".to_string()],
        "upstream saw Connection: {conn:?}"
    );
    assert_eq!(echo.headers("x-end-to-end"), vec!["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_removes_hop_by_hop_response_headers() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\n\
          Content-Length: 2\r\n\
          Connection: X-Resp-Hop, x-other-resp-hop\r\n\
          Keep-Alive: timeout=30\r\n\
          Proxy-Connection: keep-alive\r\n\
          Trailer: X-Checksum\r\n\
          Upgrade: example/1\r\n\
          X-Resp-Hop: secret\r\n\
          X-Other-Resp-Hop: secret\r\n\
          X-End-To-End: kept\r\n\
          \r\n\
          ok",
    )
    .await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(b"GET /r HTTP/1.1\r\nHost: gw.example\r\n\r\n").await.unwrap();
    let resp = c.read_response(false).await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"ok");
    for name in [
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
        "x-resp-hop",
        "x-other-resp-hop",
    ] {
        assert_eq!(
            resp.headers_named(name),
            Vec::<&str>::new(),
            "hop-by-hop `{name}` reached the client: {}",
            resp.head
        );
    }
    let conn = resp.headers_named("connection");
    assert!(
        conn.is_empty() || conn == vec!["keep-alive"],
        "client saw Connection: {conn:?}"
    );
    assert_eq!(resp.headers_named("x-end-to-end"), vec!["kept"]);

    // The connection is still usable: the framing was rewritten correctly.
    c.send(b"GET /r2 HTTP/1.1\r\nHost: gw.example\r\n\r\n").await.unwrap();
    let again = c.read_response(false).await.unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.body, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_headers_replace_client_values_when_peer_is_untrusted() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = H1::connect(gw.public_addr).await;
    let r = c
        .request(
            Request::get("/fwd")
                .header("host", "client.example:8080")
                .header("x-forwarded-for", "1.2.3.4")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "evil.example")
                .body(empty())
                .unwrap(),
        )
        .await;
    let e = r.echo();
    assert_eq!(
        e.headers("host"),
        vec![up.addr.to_string()],
        "Host must be the upstream's authority"
    );
    assert_eq!(e.headers("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(e.headers("x-forwarded-proto"), vec!["http"]);
    assert_eq!(e.headers("x-forwarded-host"), vec!["client.example:8080"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_appended_when_peer_is_a_trusted_proxy() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "trusted_proxies = [\"127.0.0.1/32\"]").await;

    let mut c = H1::connect(gw.public_addr).await;
    let one = c
        .request(
            Request::get("/fwd")
                .header("host", "client.example")
                .header("x-forwarded-for", "1.2.3.4")
                .body(empty())
                .unwrap(),
        )
        .await
        .echo();
    assert_eq!(one.headers("x-forwarded-for"), vec!["1.2.3.4, 127.0.0.1"]);
    assert_eq!(one.headers("x-forwarded-host"), vec!["client.example"]);
    assert_eq!(one.headers("x-forwarded-proto"), vec!["http"]);

    // Two incoming field lines are one list (RFC 9110 §5.3).
    let two = c
        .request(
            Request::get("/fwd")
                .header("host", "client.example")
                .header("x-forwarded-for", "1.2.3.4")
                .header("x-forwarded-for", "5.6.7.8")
                .body(empty())
                .unwrap(),
        )
        .await
        .echo();
    assert_eq!(two.headers("x-forwarded-for"), vec!["1.2.3.4, 5.6.7.8, 127.0.0.1"]);

    // None incoming: just the peer.
    let none = c.get("/fwd").await.echo();
    assert_eq!(none.headers("x-forwarded-for"), vec!["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_x_embed_headers_are_stripped() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(
        b"GET /spoof HTTP/1.1\r\n\
          Host: gw.example\r\n\
          X-Embed-User: admin@example.com\r\n\
          x-embed-groups: admins\r\n\
          X-EMBED-APP: 8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc\r\n\
          X-Embed-Assertion: eyJhbGciOiJub25lIn0.e30.\r\n\
          X-Embed-Anything-Else: 1\r\n\
          X-Other: kept\r\n\
          \r\n",
    )
    .await
    .unwrap();
    let resp = c.read_response(false).await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    let e = Echo(serde_json::from_slice(&resp.body).unwrap());
    let embed: Vec<String> = e
        .header_names()
        .into_iter()
        .filter(|n| n.to_ascii_lowercase().starts_with("x-embed-"))
        .collect();
    assert_eq!(
        embed,
        Vec::<String>::new(),
        "client-sent X-Embed-* reached the upstream"
    );
    assert_eq!(e.headers("x-other"), vec!["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_is_forwarded_to_http1_upstream() {
    let up = echo_upstream("a").await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let gw = Gateway::start(
        dir,
        &config("", &format!("{}\n{}", tls_section(), passthrough(&up.url()))),
    )
    .await;
    assert!(
        gw.public_url.starts_with("https://"),
        "ready line must say https: {}",
        gw.public_url
    );

    let mut h2 = H2::connect(&tls, gw.public_addr).await;
    let get = h2
        .request(
            Request::get(format!("{}/h2/path?x=1&y=two", h2.origin))
                .header("x-test", "a")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(get.version, hyper::Version::HTTP_2);
    let e = get.echo();
    assert_eq!(e.version(), "HTTP/1.1");
    assert_eq!(e.method(), "GET");
    assert_eq!(e.uri(), "/h2/path?x=1&y=two");
    assert_eq!(e.headers("host"), vec![up.addr.to_string()]);
    assert_eq!(e.headers("x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        e.headers("x-forwarded-host"),
        vec![format!("localhost:{}", gw.public_addr.port())],
        "the h2 :authority is the client's host"
    );
    assert_eq!(e.headers("x-test"), vec!["a"]);
    assert_eq!(get.header("x-upstream"), Some("a"));

    // A body without a length travels too, on the same h2 connection.
    let post = h2
        .request(
            Request::post(format!("{}/h2/post", h2.origin))
                .body(full("hello over h2"))
                .unwrap(),
        )
        .await
        .echo();
    assert_eq!(post.method(), "POST");
    assert_eq!(post.body(), "hello over h2");
    assert_eq!(up.connections(), 1, "both h2 streams share one upstream connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_split_cookies_are_joined_for_http1_upstream() {
    let up = echo_upstream("a").await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let gw = Gateway::start(
        dir,
        &config("", &format!("{}\n{}", tls_section(), passthrough(&up.url()))),
    )
    .await;
    let mut h2 = H2::connect(&tls, gw.public_addr).await;
    let e = h2
        .request(
            Request::get(format!("{}/cookies", h2.origin))
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(empty())
                .unwrap(),
        )
        .await
        .echo();
    // RFC 9113 §8.2.3: concatenated with "; " into one field for HTTP/1.1.
    assert_eq!(e.headers("cookie"), vec!["a=1; b=2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_head_responses_keep_content_length_and_send_no_body() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(b"HEAD /fixed HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        .await
        .unwrap();
    let head = c.read_response(true).await.unwrap();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.headers_named("content-length"), vec!["11"]);
    assert_eq!(head.headers_named("transfer-encoding"), Vec::<&str>::new());

    // Any stray body bytes after the HEAD response would corrupt this one.
    c.send(b"GET /fixed HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        .await
        .unwrap();
    let get = c.read_response(false).await.unwrap();
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(get.body, b"hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_204_responses_have_no_body_and_no_framing_headers() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(b"GET /status/204 HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        .await
        .unwrap();
    let r = c.read_response(false).await.unwrap();
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.headers_named("content-length"), Vec::<&str>::new());
    assert_eq!(r.headers_named("transfer-encoding"), Vec::<&str>::new());
    assert_eq!(r.headers_named("x-upstream"), vec!["a"]);

    c.send(b"GET /fixed HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        .await
        .unwrap();
    let next = c.read_response(false).await.unwrap();
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.body, b"hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_content_length_zero_is_preserved() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = RawConn::connect(gw.public_addr).await;
    // Response side.
    c.send(b"GET /empty HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        .await
        .unwrap();
    let r = c.read_response(false).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.headers_named("content-length"), vec!["0"]);
    assert_eq!(r.headers_named("transfer-encoding"), Vec::<&str>::new());
    assert!(r.body.is_empty());

    // Request side: an empty POST keeps its `Content-Length: 0`…
    c.send(b"POST /post HTTP/1.1\r\nHost: gw.example\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let r = c.read_response(false).await.unwrap();
    let e = Echo(serde_json::from_slice(&r.body).unwrap());
    assert_eq!(e.method(), "POST");
    assert_eq!(e.headers("content-length"), vec!["0"]);
    assert_eq!(e.headers("transfer-encoding"), Vec::<String>::new());

    // …and a GET without a body gains no framing header.
    c.send(b"GET /get HTTP/1.1\r\nHost: gw.example\r\n\r\n").await.unwrap();
    let r = c.read_response(false).await.unwrap();
    let e = Echo(serde_json::from_slice(&r.body).unwrap());
    assert_eq!(e.headers("content-length"), Vec::<String>::new());
    assert_eq!(e.headers("transfer-encoding"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_is_streamed_before_upstream_finishes() {
    let (up, tx) = controlled_upstream().await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = H1::connect(gw.public_addr).await;
    let req = tokio::spawn(async move {
        let resp = c.send(Request::get("/stream").body(empty()).unwrap()).await;
        (c, resp)
    });
    // The head cannot come before the upstream answers, which it does when
    // the first chunk is fed; the rest of the body is held back.
    tx.send(Bytes::from_static(b"first chunk;")).await.unwrap();
    let (_c, resp) = tokio::time::timeout(T, req).await.expect("no head").unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();

    let frame = tokio::time::timeout(Duration::from_secs(3), body.frame())
        .await
        .expect("the first chunk did not arrive while the upstream was still sending")
        .expect("body ended early")
        .expect("body error");
    assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"first chunk;"));

    tx.send(Bytes::from_static(b"second chunk")).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(3), body.frame())
        .await
        .expect("the second chunk did not arrive")
        .expect("body ended early")
        .expect("body error");
    assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"second chunk"));

    drop(tx);
    let rest = tokio::time::timeout(T, body.collect())
        .await
        .expect("body did not end after the upstream ended it")
        .unwrap()
        .to_bytes();
    assert_eq!(rest, Bytes::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_is_streamed_to_upstream_before_client_finishes() {
    let (up, mut probe) = probe_upstream().await;
    let gw = passthrough_gateway(&up, "").await;

    let (tx, body) = channel_body();
    let mut c = H1::connect(gw.public_addr).await;
    let req = tokio::spawn(async move { c.request(Request::post("/upload-slowly").body(body).unwrap()).await });
    tx.send(Bytes::from_static(b"part one;")).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(3), probe.recv())
        .await
        .expect("the upstream did not get the first chunk while the client was still sending")
        .unwrap();
    assert_eq!(first, Bytes::from_static(b"part one;"));

    tx.send(Bytes::from_static(b"part two")).await.unwrap();
    drop(tx);
    let reply = tokio::time::timeout(T, req).await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["bytes"], 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_expect_100_continue_is_answered_before_the_body() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(
        b"POST /expect HTTP/1.1\r\n\
          Host: gw.example\r\n\
          Content-Length: 5\r\n\
          Expect: 100-continue\r\n\
          \r\n",
    )
    .await
    .unwrap();
    let interim = tokio::time::timeout(Duration::from_secs(3), c.read_head())
        .await
        .expect("no 100 Continue within 3 s: the client would stall")
        .unwrap();
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"hello").await.unwrap();
    let r = c.read_response(false).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let e = Echo(serde_json::from_slice(&r.body).unwrap());
    assert_eq!(e.body(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_tls() {
    let up = websocket_upstream().await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let gw = Gateway::start(
        dir,
        &config("", &format!("{}\n{}", tls_section(), passthrough(&up.url()))),
    )
    .await;

    let (stream, alpn) = tls.connect(gw.public_addr, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let url = format!("wss://localhost:{}/ws/echo?room=1", gw.public_addr.port());
    let (mut ws, resp) = tokio::time::timeout(T, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("websocket handshake timed out")
        .expect("websocket handshake through the gateway");
    assert_eq!(resp.status(), 101);

    ws.send(Message::text("hello through the gateway")).await.unwrap();
    let back = tokio::time::timeout(T, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back, Message::text("hello through the gateway"));

    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    let back = tokio::time::timeout(T, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(back, Message::binary(big));

    ws.close(None).await.unwrap();

    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let field = |name: &str| -> Vec<String> {
        seen[0]
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(field(":path"), vec!["/ws/echo?room=1"]);
    assert_eq!(field("x-forwarded-proto"), vec!["https"]);
    assert_eq!(field("host"), vec![up.addr.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refused_is_502_json_and_gateway_stays_healthy() {
    let dead = closed_port().await;
    let gw = Gateway::start(new_dir(), &config("", &passthrough(&format!("http://{dead}")))).await;

    for _ in 0..3 {
        let r = get(gw.public_addr, "/anything").await;
        assert_eq!(r.status, 502, "{r:?}");
        assert!(
            r.header("content-type").unwrap_or("").starts_with("application/json"),
            "{r:?}"
        );
        let j = r.json();
        assert_eq!(j["statusCode"], 502);
        assert_eq!(j["error"], "Bad Gateway");
        assert!(j["message"].is_string());
    }
    assert_eq!(get(gw.admin(), "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_upstream_is_504_json_after_upstream_timeout() {
    let up = hung_upstream().await;
    let gw = passthrough_gateway(&up, "upstream_timeout_seconds = 1").await;

    let start = Instant::now();
    let r = get(gw.public_addr, "/hang").await;
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    let j = r.json();
    assert_eq!(j["statusCode"], 504);
    assert_eq!(j["error"], "Gateway Timeout");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "504 after {took:?}, want about 1 s"
    );
    assert!(up.connections() >= 1, "the gateway never reached the upstream");
    assert_eq!(get(gw.admin(), "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_path_prefix_is_joined_and_query_kept() {
    let up = echo_upstream("a").await;
    let gw = Gateway::start(new_dir(), &config("", &passthrough(&format!("{}/base", up.url())))).await;
    let mut c = H1::connect(gw.public_addr).await;
    assert_eq!(
        c.get("/foo/bar?x=1&y=%20z").await.echo().uri(),
        "/base/foo/bar?x=1&y=%20z"
    );
    assert_eq!(c.get("/").await.echo().uri(), "/base/");
    assert_eq!(c.get("/?q=1").await.echo().uri(), "/base/?q=1");

    // A trailing slash on the upstream's path does not double up.
    let gw2 = Gateway::start(new_dir(), &config("", &passthrough(&format!("{}/base/", up.url())))).await;
    assert_eq!(get(gw2.public_addr, "/foo?k=v").await.echo().uri(), "/base/foo?k=v");
}

fn assert_404_json(r: &Reply, what: &str) {
    assert_eq!(r.status, 404, "{what}: {r:?}");
    assert!(
        r.header("content-type").unwrap_or("").starts_with("application/json"),
        "{what}: {r:?}"
    );
    let j = r.json();
    assert_eq!(j["statusCode"], 404, "{what}");
    assert_eq!(j["error"], "Not Found", "{what}");
    assert!(
        j["message"].as_str().map(|m| !m.is_empty()).unwrap_or(false),
        "{what}: message must be a non-empty string: {j}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_json_without_passthrough() {
    let gw = Gateway::start(new_dir(), &config("", "")).await;
    for path in [
        "/",
        "/anything/at/all?x=1",
        "/api/ext/nope",
        "/.well-known/embedgate/nope",
    ] {
        assert_404_json(&get(gw.public_addr, path).await, path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_routes_are_never_passed_through() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;
    for path in [
        "/api/ext/no-such-endpoint",
        "/embed-apps/not-an-app/x",
        "/.well-known/embedgate/nope",
    ] {
        assert_404_json(&get(gw.public_addr, path).await, path);
    }
    assert_eq!(up.requests(), 0, "a gateway route reached the passthrough upstream");

    // Paths that merely look alike are ordinary traffic.
    assert_eq!(get(gw.public_addr, "/api/extras").await.echo().uri(), "/api/extras");
    assert_eq!(get(gw.public_addr, "/embed-appsx").await.echo().uri(), "/embed-appsx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_healthz_is_200_and_public_healthz_is_passed_through() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;
    assert_ne!(gw.admin(), gw.public_addr);
    let r = get(gw.admin(), "/healthz").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.requests(), 0);
    // The admin endpoints are never on the public port.
    assert_eq!(get(gw.public_addr, "/healthz").await.echo().uri(), "/healthz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_304_responses_have_no_body() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(b"GET /status/304 HTTP/1.1\r\nHost: gw.example\r\nIf-None-Match: \"v1\"\r\n\r\n")
        .await
        .unwrap();
    let r = c.read_response(false).await.unwrap();
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(r.headers_named("etag"), vec!["\"v1\""]);
    assert_eq!(r.headers_named("transfer-encoding"), Vec::<&str>::new());

    c.send(b"GET /fixed HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        .await
        .unwrap();
    let next = c.read_response(false).await.unwrap();
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(next.body, b"hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_replaced_when_peer_is_outside_trusted_proxies() {
    let up = echo_upstream("a").await;
    let gw = passthrough_gateway(&up, "trusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]").await;
    let mut c = H1::connect(gw.public_addr).await;
    let e = c
        .request(
            Request::get("/fwd")
                .header("x-forwarded-for", "1.2.3.4")
                .body(empty())
                .unwrap(),
        )
        .await
        .echo();
    assert_eq!(e.headers("x-forwarded-for"), vec!["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_verified_against_upstream_ca() {
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let up = echo_upstream_tls("tls-upstream", &tls).await;

    // Trusted through `upstream_ca`: proxied, with the upstream's authority as Host.
    let gw = Gateway::start(dir, &config("upstream_ca = \"ca.pem\"", &passthrough(&up.https_url()))).await;
    let e = get(gw.public_addr, "/over-tls?x=1").await.echo();
    assert_eq!(e.upstream(), "tls-upstream");
    assert_eq!(e.uri(), "/over-tls?x=1");
    assert_eq!(e.headers("host"), vec![up.addr.to_string()]);

    // Not trusted without it (a private CA is not in the Web PKI): 502.
    let gw2 = Gateway::start(new_dir(), &config("", &passthrough(&up.https_url()))).await;
    let before = up.requests();
    let r = get(gw2.public_addr, "/over-tls").await;
    assert_eq!(
        r.status, 502,
        "an upstream certificate from an unknown CA was accepted: {r:?}"
    );
    assert_eq!(r.json()["statusCode"], 502);
    assert_eq!(up.requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_upstream_body_is_not_passed_off_as_complete() {
    // Promises 100 bytes, sends 10, closes.
    let up = raw_upstream_closing(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
    let gw = passthrough_gateway(&up, "").await;

    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(b"GET /cut HTTP/1.1\r\nHost: gw.example\r\n\r\n").await.unwrap();
    match c.read_response(false).await {
        // The head already left: the client must see the cut.
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}"),
        // Or nothing had left yet: a 502.
        Ok(r) => assert_eq!(
            r.status, 502,
            "a body cut short upstream reached the client as a complete response: {r:?}"
        ),
    }
    assert_eq!(get(gw.admin(), "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_aborting_mid_body_leave_the_gateway_serving() {
    let up = echo_upstream("a").await;
    let mut gw = passthrough_gateway(&up, "").await;

    // Download: read a little of 50 MiB, then hang up.
    let mut down = RawConn::connect(gw.public_addr).await;
    down.send(format!("GET /download/{} HTTP/1.1\r\nHost: gw.example\r\n\r\n", 50 * MIB).as_bytes())
        .await
        .unwrap();
    let head = down.read_head().await.unwrap();
    assert_eq!(head.status, 200);
    drop(down);

    // Upload: promise 10 MiB, send 1 MiB, hang up.
    let mut upl = RawConn::connect(gw.public_addr).await;
    upl.send(
        format!(
            "POST /upload HTTP/1.1\r\nHost: gw.example\r\nContent-Length: {}\r\n\r\n",
            10 * MIB
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    upl.send(&ZEROS).await.unwrap();
    for _ in 1..16 {
        let _ = upl.send(&ZEROS).await;
    }
    drop(upl);

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gw.is_running(), "the gateway died when clients hung up mid-body");
    for i in 0..3 {
        assert_eq!(get(gw.public_addr, &format!("/after/{i}")).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_concurrent_streams_are_proxied_in_parallel() {
    let up = echo_upstream("a").await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let gw = Gateway::start(
        dir,
        &config("", &format!("{}\n{}", tls_section(), passthrough(&up.url()))),
    )
    .await;
    let h2 = H2::connect(&tls, gw.public_addr).await;
    let h2 = std::sync::Arc::new(tokio::sync::Mutex::new(h2));
    let origin = h2.lock().await.origin.clone();

    // 20 streams of 300 ms each on one connection: about 300 ms in parallel,
    // 6 s in series.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let h2 = h2.clone();
        let uri = format!("{origin}/delay/300?i={i}");
        tasks.push(tokio::spawn(async move {
            // Clone the sender so the streams are really concurrent.
            let mut sender = h2.lock().await.clone_sender();
            let req = Request::get(uri).body(empty()).unwrap();
            let resp = tokio::time::timeout(T, sender.send_request(req))
                .await
                .expect("h2 stream timed out")
                .expect("h2 stream failed");
            read_reply(resp).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        assert_eq!(r.echo().uri(), format!("/delay/300?i={i}"));
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "20 concurrent h2 streams of 300 ms took {took:?}: they were serialised"
    );
}

/// A raw upstream that answers each request with `body` and counts its
/// connections; `close_after` closes each connection after that many
/// answers (without `Connection: close`, as a server whose keep-alive
/// timer ran out does).
async fn counting_upstream(
    body: &'static [u8],
    close_after: usize,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for _ in 0..close_after {
                    // One request head (these tests send no bodies).
                    loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            break;
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(body).await.is_err() {
                        return;
                    }
                }
                // Closed without a word, keep-alive or not.
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_idle_connections_never_costs_a_502() {
    let (addr, connections) = counting_upstream(b"ok", 1).await;
    let gw = Gateway::start(new_dir(), &config("", &passthrough(&format!("http://{addr}")))).await;
    for i in 0..8 {
        let r = get(gw.public_addr, &format!("/closing/{i}")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "ok");
        // Sometimes the gateway sees the close before the next request,
        // sometimes only when it tries to send it: both must work.
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_client_abandons_is_not_reused_and_the_next_one_is_fine() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // 8 MiB: far more than the sockets between buffer, so the client's
    // leaving stops the body mid-way.
    static BIG: [u8; 8 << 20] = [b'x'; 8 << 20];
    let (addr, connections) = counting_upstream(&BIG, usize::MAX).await;
    let gw = Gateway::start(new_dir(), &config("", &passthrough(&format!("http://{addr}")))).await;

    let mut client = tokio::net::TcpStream::connect(gw.public_addr).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: gw.example\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 64 * 1024];
    let n = client.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n.min(80)])
    );
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The half-read response's connection is not handed to this request
    // (it would read the rest of the old body as its answer).
    let r = get(gw.public_addr, "/after").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), BIG.len());
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    // And a complete one is reused.
    let r = get(gw.public_addr, "/again").await;
    assert_eq!(r.body.len(), BIG.len());
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_waits_behind_another_clients_unfinished_upload() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers every request at its head, as an upstream refusing an upload
    // early does.
    let (addr, _connections) = counting_upstream(b"early", usize::MAX).await;
    let gw = Gateway::start(new_dir(), &config("", &passthrough(&format!("http://{addr}")))).await;

    // A client announces 10 MB, sends 1 KiB, gets the early answer and
    // goes quiet with its upload unfinished.
    let mut uploader = tokio::net::TcpStream::connect(gw.public_addr).await.unwrap();
    uploader
        .write_all(b"POST /upload HTTP/1.1\r\nHost: gw.example\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .unwrap();
    uploader.write_all(&[b'x'; 1024]).await.unwrap();
    let mut answer = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), uploader.read(&mut answer))
        .await
        .expect("the early answer")
        .unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );

    // The upstream connection it used is still busy sending that upload:
    // the next request gets another one, at once.
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), get(gw.public_addr, "/next"))
        .await
        .expect("the next request is not held behind the upload");
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "early"));
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(uploader);
}
