//! Signals: SIGTERM/SIGINT drain, SIGHUP reloads (SPEC §1).

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn exit_code(gw_status: Option<std::process::ExitStatus>, what: &str) -> i32 {
    let status = gw_status.unwrap_or_else(|| panic!("{what}: the gateway did not exit"));
    status
        .code()
        .unwrap_or_else(|| panic!("{what}: the gateway was killed by a signal: {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_request_then_exits_0() {
    let up = echo_upstream("a").await;
    let mut gw = Gateway::start(
        new_dir(),
        &config("shutdown_grace_seconds = 10", &passthrough(&up.url())),
    )
    .await;

    // An idle keep-alive client must not hold the drain open.
    let mut idle = H1::connect(gw.public_addr).await;
    assert_eq!(idle.get("/warm").await.status, 200);

    let addr = gw.public_addr;
    let in_flight = tokio::spawn(async move {
        let mut c = H1::connect(addr).await;
        c.get("/delay/1500").await
    });
    assert!(
        eventually(T, || async { up.requests() == 2 }).await,
        "the slow request never reached the upstream"
    );

    let t0 = Instant::now();
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !new_connection_is_served(addr, Duration::from_secs(2)).await,
        "a new connection was served after SIGTERM"
    );

    let r = tokio::time::timeout(T, in_flight)
        .await
        .expect("in-flight request never finished")
        .unwrap();
    assert_eq!(r.status, 200, "the in-flight request was not finished: {r:?}");
    assert_eq!(r.echo().uri(), "/delay/1500");

    let status = gw.wait_exit(Duration::from_secs(8)).await;
    assert_eq!(exit_code(status, "after SIGTERM"), 0);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "exit took {:?} after SIGTERM: the drain waited for idle connections \
         instead of ending once the in-flight request was done",
        t0.elapsed()
    );
    drop(idle);
}

/// A request waiting on an upstream that never answers still gets its
/// 504 at `upstream_timeout_seconds` while the gateway drains (the
/// connection's driver keeps that timeout, and keeps it during a drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_still_answers_a_hung_upstream_with_504_at_the_upstream_timeout() {
    let up = hung_upstream().await;
    let mut gw = Gateway::start(
        new_dir(),
        &config(
            "shutdown_grace_seconds = 20\nupstream_timeout_seconds = 2",
            &passthrough(&up.url()),
        ),
    )
    .await;
    let addr = gw.public_addr;
    let t0 = Instant::now();
    let in_flight = tokio::spawn(async move {
        let mut c = H1::connect(addr).await;
        c.get("/hang").await
    });
    assert!(eventually(T, || async { up.connections() == 1 }).await);
    gw.signal("TERM");
    let r = tokio::time::timeout(T, in_flight)
        .await
        .expect("the hung request was never answered during the drain")
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "504 after {took:?}, want about 2 s"
    );
    let status = gw.wait_exit(Duration::from_secs(8)).await;
    assert_eq!(exit_code(status, "after SIGTERM"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_up_on_in_flight_requests_after_shutdown_grace() {
    let up = echo_upstream("a").await;
    let mut gw = Gateway::start(
        new_dir(),
        &config("shutdown_grace_seconds = 1", &passthrough(&up.url())),
    )
    .await;
    let addr = gw.public_addr;
    let _in_flight = tokio::spawn(async move {
        let mut c = H1::connect(addr).await;
        let _ = c
            .try_send(hyper::Request::get("/delay/20000").body(empty()).unwrap())
            .await;
    });
    assert!(eventually(T, || async { up.requests() == 1 }).await);

    let t0 = Instant::now();
    gw.signal("TERM");
    let status = gw.wait_exit(Duration::from_secs(8)).await;
    let took = t0.elapsed();
    assert_eq!(exit_code(status, "after SIGTERM"), 0);
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "exit {took:?} after SIGTERM with shutdown_grace_seconds = 1"
    );
}

/// While a drain waits for in-flight work, a balancer's new health check is
/// answered — `/readyz` 503 — not refused; `/healthz` stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_to_new_checks_while_draining() {
    let up = echo_upstream("a").await;
    let mut gw = Gateway::start(
        new_dir(),
        &config("shutdown_grace_seconds = 10", &passthrough(&up.url())),
    )
    .await;
    let (addr, admin) = (gw.public_addr, gw.admin());
    assert_eq!(get(admin, "/readyz").await.status, 200);
    let in_flight = tokio::spawn(async move {
        let mut c = H1::connect(addr).await;
        c.request(hyper::Request::get("/delay/2000").body(empty()).unwrap())
            .await
    });
    assert!(eventually(T, || async { up.requests() == 1 }).await);
    gw.signal("TERM");
    // Each check on a new connection: refused would panic here.
    let draining = eventually(Duration::from_secs(2), || async {
        get(admin, "/readyz").await.status == 503
    })
    .await;
    assert!(draining, "a new connection to /readyz during the drain gets 503");
    let r = get(admin, "/readyz").await;
    assert_eq!(r.text(), "draining\n");
    assert_eq!(get(admin, "/healthz").await.status, 200);
    assert_eq!(
        in_flight.await.expect("the request task").status,
        200,
        "the drain let it finish"
    );
    let status = gw.wait_exit(Duration::from_secs(8)).await;
    assert_eq!(exit_code(status, "after SIGTERM"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_0() {
    let mut gw = Gateway::start(new_dir(), &config("", "")).await;
    assert_eq!(get(gw.admin(), "/healthz").await.status, 200);
    gw.signal("INT");
    let status = gw.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(exit_code(status, "after SIGINT"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_open_websocket_tunnel_until_it_closes() {
    let up = websocket_upstream().await;
    let mut gw = Gateway::start(
        new_dir(),
        &config("shutdown_grace_seconds = 10", &passthrough(&up.url())),
    )
    .await;
    let tcp = TcpStream::connect(gw.public_addr).await.unwrap();
    let url = format!("ws://127.0.0.1:{}/ws", gw.public_addr.port());
    let (mut ws, _) = tokio::time::timeout(T, tokio_tungstenite::client_async(url, tcp))
        .await
        .unwrap()
        .expect("websocket handshake through the gateway");
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, ws.next()).await.unwrap().unwrap().unwrap(),
        Message::text("before")
    );

    let t0 = Instant::now();
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(gw.is_running(), "the gateway exited with a tunnel still open");
    ws.send(Message::text("during drain")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, ws.next())
            .await
            .expect("tunnel silent during drain")
            .expect("tunnel closed during drain")
            .expect("tunnel broken during drain"),
        Message::text("during drain")
    );
    ws.close(None).await.unwrap();
    // Read the close echo so the tunnel ends on both sides.
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    drop(ws);

    let status = gw.wait_exit(Duration::from_secs(8)).await;
    assert_eq!(exit_code(status, "after SIGTERM"), 0);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "exit took {:?}: the drain did not end when the last tunnel closed",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_switches_passthrough_upstream_without_dropping_connections() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let mut gw = Gateway::start(new_dir(), &config("", &passthrough(&a.url()))).await;
    assert_eq!(get(gw.public_addr, "/").await.echo().upstream(), "a");

    let mut held = H1::connect(gw.public_addr).await;
    assert_eq!(held.get("/held").await.echo().upstream(), "a");
    let addr = gw.public_addr;
    let in_flight = tokio::spawn(async move { get(addr, "/delay/1500").await });
    assert!(eventually(T, || async { a.requests() == 3 }).await);

    gw.write_config(&config("", &passthrough(&b.url())));
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(addr, "/which").await.echo().upstream() == "b"
        })
        .await,
        "after SIGHUP new requests still go to the old upstream"
    );

    let r = tokio::time::timeout(T, in_flight).await.unwrap().unwrap();
    assert_eq!(r.status, 200, "the in-flight request was dropped by the reload: {r:?}");
    assert_eq!(r.echo().upstream(), "a");
    let again = held.get("/held-again").await;
    assert_eq!(again.status, 200, "a kept-alive connection was dropped by the reload");
    assert!(gw.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_invalid_config_is_refused_and_old_config_keeps_serving() {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let mut gw = Gateway::start(new_dir(), &config("", &passthrough(&a.url()))).await;
    assert_eq!(get(gw.public_addr, "/").await.echo().upstream(), "a");

    // Points at b, but has an unknown key: all of it must be refused.
    gw.write_config(&config("bogus_reload_key = 1", &passthrough(&b.url())));
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            gw.stderr().contains("bogus_reload_key")
        })
        .await,
        "no error naming `bogus_reload_key` was logged after a bad SIGHUP"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(gw.is_running(), "a bad SIGHUP config stopped the gateway");
    for i in 0..5 {
        let r = get(gw.public_addr, &format!("/after-bad-reload/{i}")).await;
        assert_eq!(r.echo().upstream(), "a", "a refused config was (partly) applied");
    }
    assert_eq!(b.requests(), 0);
    assert_eq!(get(gw.admin(), "/healthz").await.status, 200);

    // The reloader is not wedged: a good file is taken afterwards.
    gw.write_config(&config("", &passthrough(&b.url())));
    gw.signal("HUP");
    let addr = gw.public_addr;
    assert!(
        eventually(Duration::from_secs(5), || async {
            get(addr, "/which").await.echo().upstream() == "b"
        })
        .await,
        "a valid SIGHUP after a refused one was not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_tls_certificates() {
    let up = echo_upstream("a").await;
    let dir = new_dir();
    let old = TestTls::generate(dir.path());
    let gw = Gateway::start(
        dir,
        &config("", &format!("{}\n{}", tls_section(), passthrough(&up.url()))),
    )
    .await;
    assert!(old.try_connect(gw.public_addr, &[b"http/1.1"]).await.is_ok());

    // A new CA and leaf in the same files.
    let new = TestTls::generate(gw.dir.path());
    gw.signal("HUP");
    let addr = gw.public_addr;
    assert!(
        eventually(Duration::from_secs(5), || async {
            new.try_connect(addr, &[b"http/1.1"]).await.is_ok()
        })
        .await,
        "after SIGHUP the gateway still presents the old certificate"
    );
    let refused = old
        .try_connect(addr, &[b"http/1.1"])
        .await
        .expect_err("the old certificate is still served to some connections");
    // rustls's verdict on the certificate, not a refused or dropped connection.
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidData, "{refused}");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    let tls = new.try_connect(addr, &[b"http/1.1"]).await.unwrap();
    let mut c = H1::handshake(tls, format!("localhost:{}", addr.port())).await;
    assert_eq!(c.get("/after-cert-reload").await.echo().uri(), "/after-cert-reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_certificate_keeps_the_old_one() {
    let up = echo_upstream("a").await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let gw = Gateway::start(
        dir,
        &config("", &format!("{}\n{}", tls_section(), passthrough(&up.url()))),
    )
    .await;
    let logged_before = gw.stderr().matches("cert.pem").count();

    std::fs::write(
        gw.dir.path().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    )
    .unwrap();
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || async {
            gw.stderr().matches("cert.pem").count() > logged_before
        })
        .await,
        "no error naming cert.pem was logged after SIGHUP with a broken certificate"
    );
    let stream = tls
        .try_connect(gw.public_addr, &[b"http/1.1"])
        .await
        .expect("after a refused reload the old certificate must still be served");
    let mut c = H1::handshake(stream, format!("localhost:{}", gw.public_addr.port())).await;
    assert_eq!(c.get("/still-here").await.status, 200);
}
