//! SPEC §8: no PAT, session token, cookie value, `Authorization` value or
//! assertion in the logs, at any level, over the whole embed flow.

use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; bytes];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    hex::encode(b)
}

/// Runs mint, exchange, proxied requests (with assertions), a WebSocket, a
/// bad PAT and a revoke through `gw`; returns every secret that crossed the
/// wire.
async fn whole_flow(gw: &Gateway, http: &Upstream, ws_up: &Upstream) -> Vec<String> {
    let addr = gw.public_addr;
    let mut secrets = vec![API_TOKEN.to_string()];

    // Mint: one PAT to use on each app, one never used.
    let pat_a = mint_pat(addr, "alice@example.com", APP_A).await;
    let pat_b = mint_pat(addr, "alice@example.com", APP_B).await;
    let unused = mint_pat(addr, "alice@example.com", APP_A).await;
    for p in [&pat_a, &pat_b, &unused] {
        secrets.push(p.clone());
        secrets.push(p["pat_".len()..].to_string());
    }

    // Exchange, keeping another query parameter.
    let r = exchange_query(addr, APP_A, &format!("view=1&personal-access-token={pat_a}")).await;
    assert_eq!(r.status, 303, "{r:?}");
    let session_a = set_cookie_value(&r, "embedgate_session").unwrap();
    let r = exchange(addr, APP_B, &pat_b).await;
    assert_eq!(r.status, 303, "{r:?}");
    let session_b = set_cookie_value(&r, "embedgate_session").unwrap();
    secrets.push(session_a.clone());
    secrets.push(session_b.clone());

    // Proxied requests with other cookies and the app's own Authorization.
    let other_cookie = format!("thirdparty-{}", random_hex(12));
    let app_bearer = format!("app-bearer-{}", random_hex(12));
    secrets.push(other_cookie.clone());
    secrets.push(app_bearer.clone());
    for i in 0..2 {
        let e = get_with(
            addr,
            &format!("/embed-apps/{APP_A}/data?x={i}"),
            &[
                ("cookie", &format!("pref={other_cookie}; embedgate_session={session_a}")),
                ("authorization", &format!("Bearer {app_bearer}")),
                ("x-embed-assertion", "spoofed"),
            ],
        )
        .await
        .echo();
        assert_eq!(e.headers("x-embed-user"), ["alice@example.com"]);
        let jwt = e.headers("x-embed-assertion").pop().expect("no assertion");
        // The whole token and its signature on their own.
        secrets.push(jwt.rsplit('.').next().unwrap().to_string());
        secrets.push(jwt);
    }
    // A request without a session (HTML and JSON answers).
    assert_eq!(
        get_with(addr, &format!("/embed-apps/{APP_A}/nope"), &[("accept", "text/html")])
            .await
            .status,
        401
    );
    assert!(http.requests() >= 2);

    // A WebSocket through the session (ws_up is B's upstream in this config).
    let mut ws = embed_websocket(addr, APP_B, "/ws", &session_b).await;
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, ws.next()).await.unwrap().unwrap().unwrap(),
        Message::text("ping")
    );
    assert_eq!(ws_up.requests(), 1);
    let ws_jwt = {
        let seen = ws_up.seen.lock().unwrap();
        let fields = &seen[0];
        fields
            .iter()
            .find(|(k, _)| k == "x-embed-assertion")
            .map(|(_, v)| v.clone())
            .expect("no assertion on the WebSocket upgrade")
    };
    secrets.push(ws_jwt.rsplit('.').next().unwrap().to_string());
    secrets.push(ws_jwt);

    // Bad PATs: unknown, and the used one again.
    let bad = format!("pat_{}", random_hex(32));
    secrets.push(bad.clone());
    assert_eq!(exchange(addr, APP_A, &bad).await.status, 401);
    assert_eq!(exchange(addr, APP_A, &pat_a).await.status, 401);
    // A wrong API token is a secret too, whoever sent it.
    let wrong_token = format!("wrong-api-token-{}", random_hex(8));
    secrets.push(wrong_token.clone());
    let r = post_json(
        addr,
        "/api/ext/users/personal-access-token",
        Some(&wrong_token),
        &json!({"email": "alice@example.com", "appId": APP_A}).to_string(),
    )
    .await;
    assert_eq!(r.status, 401);

    // Revoke: the sessions end, the WebSocket closes.
    let r = post_json(
        addr,
        "/api/ext/users/sessions/revoke",
        Some(API_TOKEN),
        &json!({"email": "alice@example.com"}).to_string(),
    )
    .await;
    assert_eq!(r.json(), json!({"revokedSessions": 2, "revokedTokens": 1}));
    assert_eq!(embed_get(addr, APP_A, "/after", &session_a).await.status, 401);
    // Let the gateway close the tunnel (and log whatever it logs then);
    // `revoke_closes_open_websocket` holds it to doing so.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    drop(ws);
    secrets
}

async fn run(extra_args: &[&str], trace_marker: &str) {
    let http = echo_upstream("a").await;
    let ws_up = websocket_upstream().await;
    let mut opts = EmbedOpts::new(&http.url(), &ws_up.url());
    opts.extra = "[log]\naudit_file = \"audit.jsonl\"\n".into();
    let mut gw = Gateway::start_full(new_dir(), &opts.config(), extra_args, &[("RUST_LOG", "trace")]).await;
    let secrets = whole_flow(&gw, &http, &ws_up).await;

    gw.signal("TERM");
    assert!(gw.wait_exit(T).await.is_some(), "the gateway did not exit on SIGTERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The audit file is read with the other logs: no secret in either.
    let audit = std::fs::read_to_string(gw.dir.path().join("audit.jsonl")).unwrap_or_default();
    assert!(
        audit.contains("\"event\":\"exchange\"") && audit.contains("\"event\":\"revoke\""),
        "the audit file has the flow's events:\n{audit}"
    );
    let stderr = gw.stderr() + &audit;

    // The capture works and is at trace level, and the access and audit
    // logs are there.
    assert!(stderr.contains("embedgate::audit"), "no audit events:\n{stderr}");
    assert!(stderr.contains(trace_marker), "no TRACE lines were captured:\n{stderr}");
    assert!(
        stderr.contains("personal-access-token=REDACTED"),
        "the access log does not show the exchange path redacted"
    );
    let data_path = format!("/embed-apps/{APP_A}/data?x=1");
    assert!(stderr.contains(&data_path), "the access log lacks {data_path}");
    assert!(secrets.len() >= 16, "{secrets:?}");
    let leaked: Vec<&String> = secrets.iter().filter(|s| stderr.contains(s.as_str())).collect();
    for s in &leaked {
        let line = stderr.lines().find(|l| l.contains(s.as_str())).unwrap();
        eprintln!("secret {s:?} appears in: {line}");
    }
    assert!(
        leaked.is_empty(),
        "{} secret(s) appear in the logs: {leaked:?}",
        leaked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_logs_no_secrets_at_trace() {
    run(&[], "TRACE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_json_logs_no_secrets_at_trace() {
    run(&["--log-format", "json"], "\"level\":\"TRACE\"").await;
}
