//! WebSockets over HTTP/2 (RFC 8441 extended CONNECT): the gateway opens
//! the stream for the client and speaks the HTTP/1.1 opening handshake
//! (RFC 6455 §4.1) to the upstream, then relays frames both ways.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Opens a WebSocket by extended CONNECT on an HTTP/2 connection over `io`.
async fn connect_ws<I>(io: I, authority: &str, path: &str, cookie: Option<&str>) -> WebSocketStream<Upgraded>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .version(Version::HTTP_2)
        .uri(format!("https://{authority}{path}"))
        .header("sec-websocket-version", "13");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let mut req = req.body(empty()).expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let fut = async {
        sender.ready().await?;
        sender.send_request(req).await
    };
    let resp = tokio::time::timeout(T, fut)
        .await
        .expect("CONNECT timed out")
        .expect("CONNECT failed");
    assert_eq!(
        resp.status(),
        200,
        "extended CONNECT is answered 200 (RFC 8441 §5): {resp:?}"
    );
    assert!(resp.headers().get("sec-websocket-accept").is_none(), "{resp:?}");
    let upgraded = tokio::time::timeout(T, hyper::upgrade::on(resp))
        .await
        .expect("upgrade timed out")
        .expect("upgrade");
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await
}

async fn echo(ws: &mut WebSocketStream<Upgraded>, message: Message) {
    ws.send(message.clone()).await.expect("send");
    let back = tokio::time::timeout(T, ws.next()).await.expect("echo timed out");
    assert_eq!(back.and_then(Result::ok), Some(message));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_extended_connect_reaches_an_http1_upstream() {
    let up = websocket_upstream().await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let gw = Gateway::start(
        dir,
        &config("", &format!("{}\n{}", tls_section(), passthrough(&up.url()))),
    )
    .await;

    let (stream, alpn) = tls.connect(gw.public_addr, &[b"h2"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let authority = format!("localhost:{}", gw.public_addr.port());
    let mut ws = connect_ws(stream, &authority, "/ws/echo?room=2", None).await;
    echo(&mut ws, Message::text("hello over h2")).await;
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    echo(&mut ws, Message::binary(big)).await;
    ws.close(None).await.expect("close");

    let seen = up.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let field = |name: &str| {
        seen[0]
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    // The upstream got an ordinary HTTP/1.1 opening handshake.
    assert_eq!(field(":path"), vec!["/ws/echo?room=2"]);
    assert_eq!(field("upgrade"), vec!["websocket"]);
    assert_eq!(field("connection"), vec!["upgrade"]);
    assert_eq!(field("sec-websocket-version"), vec!["13"]);
    assert_eq!(
        field("sec-websocket-key").len(),
        1,
        "the gateway supplies the key: {:?}",
        seen[0]
    );
    assert_eq!(field("x-forwarded-proto"), vec!["https"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_closes_a_websocket_opened_over_http2() {
    let ws_up = websocket_upstream().await;
    let gw = EmbedOpts::new(&ws_up.url(), &ws_up.url()).start().await;
    let addr: SocketAddr = gw.public_addr;
    let alice = open_session(addr, "alice@example.com", APP_A).await;

    // HTTP/2 with prior knowledge on the plain listener.
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let cookie = format!("embedgate_session={alice}");
    let mut ws = connect_ws(
        stream,
        &addr.to_string(),
        &format!("/embed-apps/{APP_A}/ws"),
        Some(&cookie),
    )
    .await;
    echo(&mut ws, Message::text("before revoke")).await;
    {
        let seen = ws_up.seen.lock().unwrap();
        let user = seen[0]
            .iter()
            .find(|(k, _)| k == "x-embed-user")
            .map(|(_, v)| v.clone());
        assert_eq!(user.as_deref(), Some("alice@example.com"));
    }

    let r = post_json(
        addr,
        "/api/ext/users/sessions/revoke",
        Some(API_TOKEN),
        r#"{"email": "alice@example.com"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the HTTP/2 WebSocket was still open 5 s after the revoke"
    );
}

/// The HTTP/2 keep-alive (`header_read_timeout_seconds`) ends idle
/// connections, never one carrying a WebSocket: its stream answered long
/// ago, but its tunnel is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_websocket_over_http2_outlives_the_keep_alive() {
    let up = websocket_upstream().await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let gw = Gateway::start(
        dir,
        &config(
            "header_read_timeout_seconds = 1",
            &format!("{}\n{}", tls_section(), passthrough(&up.url())),
        ),
    )
    .await;
    let (stream, _) = tls.connect(gw.public_addr, &[b"h2"]).await;
    let authority = format!("localhost:{}", gw.public_addr.port());
    let mut ws = connect_ws(stream, &authority, "/ws/quiet", None).await;
    echo(&mut ws, Message::text("before")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    echo(&mut ws, Message::text("after four quiet seconds")).await;
    ws.close(None).await.expect("close");
}
