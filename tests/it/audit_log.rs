//! The audit log (issue 9): one `embedgate::audit` event per mint,
//! exchange, session end and revocation — who, which app, from where, with
//! which API token (its name, or a fingerprint of an unknown one), and the
//! outcome — on stderr and, with `[log] audit_file`, as JSON lines in a file
//! of its own that SIGHUP reopens. Secrets never appear.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// The fields an audit event may have (the rest is the log line's frame:
/// time, level, target, spans).
const AUDIT_KEYS: [&str; 11] = [
    "event",
    "request_id",
    "client",
    "token",
    "user",
    "app",
    "session",
    "reason",
    "sessions",
    "pats",
    "outcome",
];

/// An audit event's own fields.
fn fields(line: &Value) -> Value {
    let object = line.as_object().cloned().unwrap_or_default();
    Value::Object(
        object
            .into_iter()
            .filter(|(k, _)| AUDIT_KEYS.contains(&k.as_str()))
            .collect(),
    )
}

/// The audit events in JSON lines of `text`.
fn audit_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "embedgate::audit")
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The first 8 hex digits of a token's SHA-256.
fn fingerprint(token: &str) -> String {
    sha256_hex(token)[..8].to_string()
}

fn audited_gateway_config(up: &Upstream, session: &str) -> String {
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.extra = "[log]\naudit_file = \"audit.jsonl\"\n".into();
    opts.session = session.into();
    opts.config()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_is_audited_on_stderr_and_in_the_audit_file() {
    let up = echo_upstream("app").await;
    let gw = Gateway::start_with_args(new_dir(), &audited_gateway_config(&up, ""), &["--log-format", "json"]).await;
    let addr = gw.public_addr;
    let token = "token_sha256[0]";
    let mut expected: Vec<Value> = Vec::new();
    // The access lines expected, by request id: method, path, route, app,
    // status, and whether an upstream answered.
    let mut access: Vec<(String, Value)> = Vec::new();
    let id = |r: &Reply| r.header("x-request-id").unwrap_or_default().to_string();
    let mint_path = "/api/ext/users/personal-access-token";

    // Mints: one made, one with an unknown API token, one for a user the
    // app does not admit.
    let r = mint(addr, &json!({"email": "alice@example.com", "appId": APP_A})).await;
    assert_eq!(r.status, 201);
    let pat = r.json()["personalAccessToken"].as_str().unwrap_or_default().to_string();
    expected.push(
        json!({"event": "mint", "request_id": id(&r), "client": "127.0.0.1", "token": token,
        "user": "alice@example.com", "app": APP_A, "outcome": "ok"}),
    );
    access.push((
        id(&r),
        json!({"method": "POST", "path": mint_path, "route": "api", "status": 201, "bytes_out": r.body.len(),
            "bytes_in": json!({"email": "alice@example.com", "appId": APP_A}).to_string().len()}),
    ));
    let body = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    let r = post_json(addr, mint_path, Some("not-a-token"), &body).await;
    assert_eq!(r.status, 401);
    expected.push(json!({"event": "mint", "request_id": id(&r), "client": "127.0.0.1",
        "token": fingerprint("not-a-token"), "outcome": "unauthorized"}));
    let r = mint(addr, &json!({"email": "eve@other.example", "appId": APP_A})).await;
    assert_eq!(r.status, 403);
    expected.push(
        json!({"event": "mint", "request_id": id(&r), "client": "127.0.0.1", "token": token,
        "user": "eve@other.example", "app": APP_A, "outcome": "forbidden"}),
    );

    // The exchange, a page, and the refused exchanges, one of each kind.
    let r = exchange(addr, APP_A, &pat).await;
    assert_eq!(r.status, 303);
    let session = set_cookie_value(&r, "embedgate_session").unwrap_or_default();
    expected.push(json!({"event": "exchange", "request_id": id(&r), "client": "127.0.0.1",
        "user": "alice@example.com", "app": APP_A, "session": fingerprint(&session), "outcome": "ok"}));
    let exchange_path = format!("/embed-apps/{APP_A}?personal-access-token=REDACTED");
    access.push((
        id(&r),
        json!({"method": "GET", "path": exchange_path, "route": "exchange", "app": APP_A,
        "status": 303, "bytes_out": 0}),
    ));
    let r = embed_get(addr, APP_A, "/", &session).await;
    assert_eq!(r.status, 200);
    access.push((
        id(&r),
        json!({"method": "GET", "path": format!("/embed-apps/{APP_A}/"), "route": "embed",
        "app": APP_A, "status": 200, "bytes_out": r.body.len(), "upstream": up.addr.to_string(),
        "upstream_status": 200}),
    ));
    let r = exchange(addr, APP_A, &pat).await;
    expected.push(json!({"event": "exchange", "request_id": id(&r), "client": "127.0.0.1",
        "app": APP_A, "outcome": "used"}));
    access.push((
        id(&r),
        json!({"method": "GET", "path": exchange_path, "route": "exchange", "app": APP_A,
        "status": r.status.as_u16(), "bytes_out": r.body.len()}),
    ));
    let for_a = mint_pat(addr, "alice@example.com", APP_A).await;
    expected.push(json!({"event": "mint", "client": "127.0.0.1", "token": token,
        "user": "alice@example.com", "app": APP_A, "outcome": "ok"}));
    let r = exchange(addr, APP_B, &for_a).await;
    expected.push(json!({"event": "exchange", "request_id": id(&r), "client": "127.0.0.1",
        "app": APP_B, "outcome": "wrong_app"}));
    let r = exchange(addr, APP_A, &format!("pat_{}", "ab".repeat(32))).await;
    expected.push(json!({"event": "exchange", "request_id": id(&r), "client": "127.0.0.1",
        "app": APP_A, "outcome": "unknown"}));
    let r = exchange(addr, APP_A, "hello").await;
    expected.push(json!({"event": "exchange", "request_id": id(&r), "client": "127.0.0.1",
        "app": APP_A, "outcome": "malformed"}));
    let r = mint(
        addr,
        &json!({"email": "alice@example.com", "appId": APP_A, "patExpiry": 1}),
    )
    .await;
    let short = r.json()["personalAccessToken"].as_str().unwrap_or_default().to_string();
    expected.push(
        json!({"event": "mint", "request_id": id(&r), "client": "127.0.0.1", "token": token,
        "user": "alice@example.com", "app": APP_A, "outcome": "ok"}),
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = exchange(addr, APP_A, &short).await;
    expected.push(json!({"event": "exchange", "request_id": id(&r), "client": "127.0.0.1",
        "app": APP_A, "outcome": "expired"}));

    // The revocation, and the session it ended.
    let body = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    let r = post_json(addr, "/api/ext/users/sessions/revoke", Some(API_TOKEN), &body).await;
    assert_eq!(r.status, 200);
    let revoked = r.json();
    assert_eq!(revoked["revokedSessions"], 1);
    // Each session as it ends, then the call with what it ended.
    expected.push(
        json!({"event": "session_end", "user": "alice@example.com", "app": APP_A,
        "session": fingerprint(&session), "reason": "revoked"}),
    );
    expected.push(
        json!({"event": "revoke", "request_id": id(&r), "client": "127.0.0.1", "token": token,
        "user": "alice@example.com", "app": APP_A, "sessions": 1, "pats": revoked["revokedTokens"],
        "outcome": "ok"}),
    );
    // Already ended: nothing more to audit.
    assert_ne!(embed_get(addr, APP_A, "/", &session).await.status, 200);

    let file = gw.dir.path().join("audit.jsonl");
    let complete = eventually(T, || {
        let (gw, file, n, access) = (&gw, &file, expected.len(), &access);
        async move {
            let log = gw.stderr();
            audit_events(&log).len() >= n
                && audit_events(&read(file)).len() >= n
                && access.iter().all(|(id, _)| {
                    log.lines()
                        .any(|l| l.contains("embedgate::access") && l.contains(id.as_str()))
                })
        }
    })
    .await;
    assert!(complete, "stderr:\n{}\nfile:\n{}", gw.stderr(), read(&file));
    for (place, text) in [("stderr", gw.stderr()), ("audit file", read(&file))] {
        let events = audit_events(&text);
        let got: Vec<Value> = events.iter().map(fields).collect();
        // The one mint made by the helper has a request id the test did
        // not see: compare it without.
        let got: Vec<Value> = got
            .into_iter()
            .zip(expected.iter())
            .map(|(mut g, e)| {
                if e.get("request_id").is_none() {
                    g.as_object_mut().map(|o| o.remove("request_id"));
                }
                g
            })
            .collect();
        assert_eq!(got, expected, "{place}:\n{text}");
        for event in &events {
            assert_eq!(event["level"], "INFO", "{place}: {event}");
            assert!(
                event["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
                "{place}: {event}"
            );
        }
        for secret in [
            pat.as_str(),
            for_a.as_str(),
            short.as_str(),
            session.as_str(),
            API_TOKEN,
        ] {
            assert!(!text.contains(secret), "{place} holds a secret");
        }
    }
    // Each request of the flow has its access line, every field as sent.
    let lines: Vec<Value> = gw
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "embedgate::access")
        .collect();
    for (request_id, want) in &access {
        let line = lines
            .iter()
            .find(|l| l["request_id"] == request_id.as_str())
            .unwrap_or_else(|| panic!("no access line for {want}:\n{}", gw.stderr()));
        let mut want = want.as_object().cloned().unwrap_or_default();
        want.insert("client".into(), "127.0.0.1".into());
        want.insert("version".into(), "HTTP/1.1".into());
        want.insert("message".into(), "request".into());
        want.insert("level".into(), "INFO".into());
        want.entry("bytes_in").or_insert(0.into());
        for (key, value) in &want {
            assert_eq!(&line[key], value, "{key} of {line}");
        }
        let upstream = want.contains_key("upstream");
        assert_eq!(line.get("upstream_status").is_some(), upstream, "{line}");
        assert_eq!(line.get("app").is_some(), want.contains_key("app"), "{line}");
        assert!(
            line["elapsed_us"].as_u64().is_some() && line["timestamp"].is_string(),
            "{line}"
        );
    }

    // Each line of the audit file is one JSON object with no key twice.
    for line in read(&file).lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_default();
        let keys = v.as_object().map_or(0, |o| o.len());
        assert_eq!(line.matches("\":").count(), keys, "{line}");
    }
}

/// logrotate moves the file and sends SIGHUP: new events go to a new file
/// at the configured path, none are lost, the moved file keeps the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_audit_file() {
    let up = echo_upstream("app").await;
    let gw = Gateway::start(new_dir(), &audited_gateway_config(&up, "")).await;
    let file = gw.dir.path().join("audit.jsonl");
    let moved = gw.dir.path().join("audit.jsonl.1");
    mint_pat(gw.public_addr, "alice@example.com", APP_A).await;
    assert!(eventually(T, || async { audit_events(&read(&file)).len() == 1 }).await);
    std::fs::rename(&file, &moved).unwrap_or_else(|e| panic!("rename: {e}"));
    gw.signal("HUP");
    assert!(eventually(T, || async { gw.stderr().contains("configuration reloaded") }).await);
    mint_pat(gw.public_addr, "carol@partner.example", APP_A).await;
    assert!(
        eventually(T, || async { audit_events(&read(&file)).len() == 1 }).await,
        "{}",
        gw.stderr()
    );
    assert_eq!(audit_events(&read(&file))[0]["user"], "carol@partner.example");
    let old = audit_events(&read(&moved));
    assert_eq!(old.len(), 1);
    assert_eq!(old[0]["user"], "alice@example.com");
}

/// An audit file that cannot be opened stops the start, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_file_that_cannot_be_opened_is_a_clear_error() {
    let dir = new_dir();
    let up = echo_upstream("app").await;
    let config = audited_gateway_config(&up, "").replace("audit.jsonl", "no-such-dir/audit.jsonl");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap_or_else(|e| panic!("write: {e}"));
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run: {e}"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("log.audit_file: cannot open"), "{stderr}");
}

/// A session left idle past its `sessionExpiry` (a minute at least) ends:
/// one `session_end` event with reason `idle`, when the gateway notices
/// (its next use here, or its sweep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_in_the_audit_log() {
    let up = echo_upstream("app").await;
    let gw = Gateway::start(new_dir(), &audited_gateway_config(&up, "")).await;
    let r = mint(
        gw.public_addr,
        &json!({"email": "alice@example.com", "appId": APP_A, "sessionExpiry": 1}),
    )
    .await;
    let pat = r.json()["personalAccessToken"].as_str().unwrap_or_default().to_string();
    let r = exchange(gw.public_addr, APP_A, &pat).await;
    let session = set_cookie_value(&r, "embedgate_session").unwrap_or_default();
    assert_eq!(embed_get(gw.public_addr, APP_A, "/", &session).await.status, 200);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_ne!(embed_get(gw.public_addr, APP_A, "/", &session).await.status, 200);
    let file = gw.dir.path().join("audit.jsonl");
    let ended = || {
        audit_events(&read(&file))
            .into_iter()
            .filter(|e| e["event"] == "session_end")
            .map(|e| fields(&e))
            .collect::<Vec<_>>()
    };
    assert!(eventually(T, || async { !ended().is_empty() }).await, "{}", read(&file));
    assert_eq!(
        ended(),
        [
            json!({"event": "session_end", "user": "alice@example.com", "app": APP_A,
            "session": fingerprint(&session), "reason": "idle"})
        ]
    );
}
