//! The access log (issue 9): one line per request on its own target
//! (`embedgate::access`), written when the request is over, with the
//! request's id, the bytes each way and the upstream's side; in JSON no key
//! twice; `[log] access = false` turns it off.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_access_line_has_its_fields_and_one_target() {
    let up = echo_upstream("app").await;
    let gw = Gateway::start_with_args(
        new_dir(),
        &config("", &passthrough(&up.url())),
        &["--log-format", "json"],
    )
    .await;
    let body = "{\"fourteen\": 1}";
    let r = post_json(gw.public_addr, "/hello?x=1", None, body).await;
    assert_eq!(r.status, 200);
    let sent = r.body.len() as u64;
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
    assert_eq!(v["method"], "POST");
    assert_eq!(v["route"], "passthrough");
    assert_eq!(v["status"], 200);
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["version"], "HTTP/1.1");
    assert!(v["elapsed_us"].as_u64().is_some(), "{raw}");
    assert_eq!(v["request_id"], id.as_str(), "{raw}");
    assert_eq!(v["bytes_in"], body.len(), "{raw}");
    assert_eq!(v["bytes_out"], sent, "{raw}");
    assert_eq!(v["upstream"], up.addr.to_string(), "{raw}");
    assert_eq!(v["upstream_status"], 200, "{raw}");
    assert!(v.get("app").is_none(), "no app on the passthrough: {raw}");
    // No key twice anywhere in the line.
    let object = v.as_object().expect("an object");
    assert_eq!(raw.matches("\":").count(), object.len(), "{raw}");
}

/// An embedded app's request names the app; an upstream that cannot be
/// reached leaves no upstream status, and a PAT in the query is redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_access_line_names_the_app_and_redacts_the_pat() {
    let up = echo_upstream("app").await;
    let opts = EmbedOpts::new(&up.url(), "http://127.0.0.1:9");
    let gw = opts.start().await;
    let session = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    assert_eq!(embed_get(gw.public_addr, APP_A, "/page", &session).await.status, 200);
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_B).await;
    assert_eq!(exchange(gw.public_addr, APP_B, &pat).await.status, 303);
    let line = |needle: String| {
        let gw = &gw;
        async move {
            let found = eventually(T, || async { access_lines(gw).iter().any(|l| l.contains(&needle)) }).await;
            assert!(found, "no access line with {needle}:\n{}", gw.stderr());
            access_lines(gw)
                .into_iter()
                .find(|l| l.contains(&needle))
                .unwrap_or_default()
        }
    };
    let page = line(format!("path=/embed-apps/{APP_A}/page")).await;
    for field in [
        "route=embed".to_string(),
        format!("app={APP_A}"),
        "status=200".into(),
        format!("upstream={}", up.addr),
        "upstream_status=200".into(),
        "bytes_in=0".into(),
    ] {
        assert!(page.contains(&format!(" {field}")), "{field} in {page}");
    }
    let exchanged = line(format!("path=/embed-apps/{APP_B}?personal-access-token=REDACTED")).await;
    assert!(
        exchanged.contains(" route=exchange") && exchanged.contains(" status=303"),
        "{exchanged}"
    );
    assert!(!gw.stderr().contains(&pat), "the PAT is in no line");
    // App B's upstream refuses connections: a 502 with no upstream status.
    let b = open_session(gw.public_addr, "alice@example.com", APP_B).await;
    assert_eq!(embed_get(gw.public_addr, APP_B, "/x", &b).await.status, 502);
    let failed = line(format!("path=/embed-apps/{APP_B}/x")).await;
    assert!(
        failed.contains(" status=502") && !failed.contains("upstream_status"),
        "{failed}"
    );
}

fn access_lines(gw: &Gateway) -> Vec<String> {
    gw.stderr()
        .lines()
        .filter(|l| l.contains("embedgate::access"))
        .map(str::to_owned)
        .collect()
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

/// `[log] access` follows a reload (SIGHUP) both ways, and a session lives
/// through it: `bench/run` measures the access log's cost this way, in one
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switches_the_access_log_off_and_on() {
    let up = echo_upstream("app").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    let gw = opts.start().await;
    let session = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let reloads = |n: usize| {
        let gw = &gw;
        async move {
            let landed = eventually(T, || async {
                gw.stderr().matches("configuration reloaded").count() == n
            })
            .await;
            assert!(landed, "reload {n} never landed:\n{}", gw.stderr());
        }
    };
    let logged = |path: &str| access_lines(&gw).iter().any(|l| l.contains(&format!("/{path} ")));
    assert_eq!(embed_get(gw.public_addr, APP_A, "/before", &session).await.status, 200);
    assert!(eventually(T, || async { logged("before") }).await, "{}", gw.stderr());

    opts.extra = "[log]\naccess = false\n".into();
    gw.write_config(&opts.config());
    gw.signal("HUP");
    reloads(1).await;
    assert_eq!(
        embed_get(gw.public_addr, APP_A, "/while-off", &session).await.status,
        200
    );

    opts.extra = "[log]\naccess = true\n".into();
    gw.write_config(&opts.config());
    gw.signal("HUP");
    reloads(2).await;
    assert_eq!(embed_get(gw.public_addr, APP_A, "/after", &session).await.status, 200);
    assert!(eventually(T, || async { logged("after") }).await, "{}", gw.stderr());
    // Lines are written in order: "after" is out, so "while-off" would be too.
    assert!(!logged("while-off"), "{}", gw.stderr());
}
