//! The access log (issue 9): one line per request on its own target
//! (`embedgate::access`), with the request's id, and in JSON no `target`
//! key but tracing's own; `[log] access = false` turns it off.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_access_line_has_its_fields_and_one_target() {
    let up = echo_upstream("app").await;
    let gw = Gateway::start_with_args(
        new_dir(),
        &config("", &passthrough(&up.url())),
        &["--log-format", "json"],
    )
    .await;
    let r = get(gw.public_addr, "/hello?x=1").await;
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").expect("an id").to_string();
    let line = eventually(T, || {
        let gw = &gw;
        async move { gw.stderr().lines().any(|l| l.contains("embedgate::access")) }
    })
    .await;
    assert!(line, "an access line:\n{}", gw.stderr());
    let log = gw.stderr();
    let raw = log
        .lines()
        .find(|l| l.contains("embedgate::access") && l.contains("/hello"))
        .expect("the request's access line");
    let v: serde_json::Value = serde_json::from_str(raw).expect("JSON");
    // tracing's own `target` is the only `target` in the line.
    assert_eq!(raw.matches("\"target\":").count(), 1, "{raw}");
    assert_eq!(v["target"], "embedgate::access");
    assert_eq!(v["path"], "/hello?x=1");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["route"], "passthrough");
    assert_eq!(v["status"], 200);
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["version"], "HTTP/1.1");
    assert!(v["elapsed_us"].as_u64().is_some(), "{raw}");
    assert_eq!(v["span"]["request_id"], id.as_str(), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_access_false_turns_the_access_line_off() {
    let up = echo_upstream("app").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.extra = "[log]\naccess = false\n".into();
    let gw = opts.start().await;
    let session = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    assert_eq!(embed_get(gw.public_addr, APP_A, "/", &session).await.status, 200);
    // The other lines still come: the session started.
    assert!(eventually(T, || async { gw.stderr().contains("session started") }).await);
    let log = gw.stderr();
    assert!(!log.contains("embedgate::access"), "{log}");
    assert!(!log.contains("path=/embed-apps"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_log_lines_are_a_metric() {
    let gw = Gateway::start(new_dir(), &config("", "")).await;
    let text = get(gw.admin(), "/metrics").await.text();
    assert!(text.contains("embedgate_log_lines_dropped_total 0"), "{text}");
}
