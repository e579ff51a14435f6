//! Ending sessions: `POST /api/ext/users/sessions/revoke` (SPEC §6).

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const REVOKE: &str = "/api/ext/users/sessions/revoke";

async fn revoke(addr: std::net::SocketAddr, body: serde_json::Value) -> Reply {
    post_json(addr, REVOKE, Some(API_TOKEN), &body.to_string()).await
}

fn assert_counts(r: &Reply, sessions: u64, tokens: u64) {
    assert_eq!(r.status, 200, "{r:?} {}", r.text());
    assert!(
        r.header("content-type").unwrap_or("").starts_with("application/json"),
        "{r:?}"
    );
    assert_eq!(
        r.json(),
        json!({"revokedSessions": sessions, "revokedTokens": tokens}),
        "revoke counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_ends_sessions_and_unused_pats() {
    let a = echo_upstream("a").await;
    let gw = EmbedOpts::new(&a.url(), &a.url()).start().await;
    let addr = gw.public_addr;
    // alice: two sessions on A, one on B, two unused PATs on A, one on B.
    let sessions = [
        (APP_A, open_session(addr, "alice@example.com", APP_A).await),
        (APP_A, open_session(addr, "alice@example.com", APP_A).await),
        (APP_B, open_session(addr, "alice@example.com", APP_B).await),
    ];
    let pats = [
        (APP_A, mint_pat(addr, "alice@example.com", APP_A).await),
        (APP_A, mint_pat(addr, "alice@example.com", APP_A).await),
        (APP_B, mint_pat(addr, "alice@example.com", APP_B).await),
    ];
    // carol's session and PAT on A must survive.
    let carol = open_session(addr, "carol@partner.example", APP_A).await;
    let carol_pat = mint_pat(addr, "carol@partner.example", APP_A).await;
    for (app, s) in &sessions {
        assert_eq!(embed_get(addr, app, "/before", s).await.status, 200);
    }

    // The address matched as the config does, case-insensitively.
    let r = revoke(addr, json!({"email": "Alice@Example.com"})).await;
    assert_counts(&r, 3, 3);

    for (app, s) in &sessions {
        let r = embed_get(addr, app, "/after", s).await;
        assert_eq!(r.status, 401, "a revoked session on {app} still works: {r:?}");
    }
    for (app, pat) in &pats {
        let r = exchange(addr, app, pat).await;
        assert_eq!(r.status, 401, "a revoked PAT on {app} still exchanges: {r:?}");
    }
    assert_eq!(embed_get(addr, APP_A, "/carol", &carol).await.status, 200);
    assert_eq!(exchange(addr, APP_A, &carol_pat).await.status, 303);

    // Nothing left to revoke; alice can start over.
    assert_counts(&revoke(addr, json!({"email": "alice@example.com"})).await, 0, 0);
    let s = open_session(addr, "alice@example.com", APP_A).await;
    assert_eq!(embed_get(addr, APP_A, "/again", &s).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_scoped_to_app() {
    let a = echo_upstream("a").await;
    let gw = EmbedOpts::new(&a.url(), &a.url()).start().await;
    let addr = gw.public_addr;
    let sa = open_session(addr, "alice@example.com", APP_A).await;
    let pa = mint_pat(addr, "alice@example.com", APP_A).await;
    let sb = open_session(addr, "alice@example.com", APP_B).await;
    let pb = mint_pat(addr, "alice@example.com", APP_B).await;

    assert_counts(
        &revoke(addr, json!({"email": "alice@example.com", "appId": APP_B})).await,
        1,
        1,
    );
    assert_eq!(embed_get(addr, APP_B, "/", &sb).await.status, 401);
    assert_eq!(exchange(addr, APP_B, &pb).await.status, 401);
    assert_eq!(embed_get(addr, APP_A, "/", &sa).await.status, 200);
    assert_eq!(exchange(addr, APP_A, &pa).await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_requires_api_token_and_valid_body() {
    let a = echo_upstream("a").await;
    let gw = EmbedOpts::new(&a.url(), &a.url()).start().await;
    let addr = gw.public_addr;
    let s = open_session(addr, "alice@example.com", APP_A).await;
    let body = json!({"email": "alice@example.com"}).to_string();
    for token in [None, Some("wrong-token")] {
        let r = post_json(addr, REVOKE, token, &body).await;
        assert_eq!(r.status, 401, "token {token:?}: {r:?}");
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"embedgate\""));
        assert_error_body(&r, 401, "Unauthorized");
    }
    let r = post_json(addr, REVOKE, Some(API_TOKEN), &json!({"appId": APP_A}).to_string()).await;
    assert_eq!(assert_error_body(&r, 400, "Bad Request"), "email: required");
    let r = post_json(
        addr,
        REVOKE,
        Some(API_TOKEN),
        &json!({"email": "alice@example.com", "appId": "nope"}).to_string(),
    )
    .await;
    assert_eq!(assert_error_body(&r, 400, "Bad Request"), "appId: must be a UUID");
    let r = post_json(
        addr,
        REVOKE,
        Some(API_TOKEN),
        &json!({"email": "alice@example.com", "everything": true}).to_string(),
    )
    .await;
    assert_eq!(assert_error_body(&r, 400, "Bad Request"), "everything: unknown field");
    // None of that ended the session.
    assert_eq!(embed_get(addr, APP_A, "/", &s).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_closes_open_websocket() {
    let ws_up = websocket_upstream().await;
    let gw = EmbedOpts::new(&ws_up.url(), &ws_up.url()).start().await;
    let addr = gw.public_addr;
    let alice = open_session(addr, "alice@example.com", APP_A).await;
    let carol = open_session(addr, "carol@partner.example", APP_A).await;

    let mut ws = embed_websocket(addr, APP_A, "/ws?room=1", &alice).await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, ws.next()).await.unwrap().unwrap().unwrap(),
        Message::text("hello")
    );
    let mut other = embed_websocket(addr, APP_A, "/ws", &carol).await;
    {
        let seen = ws_up.seen.lock().unwrap();
        let first = &seen[0];
        let get = |name: &str| first.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get(":path"), Some("/ws?room=1"));
        assert_eq!(get("x-embed-user"), Some("alice@example.com"));
        assert_eq!(get("x-embed-app"), Some(APP_A));
        assert!(get("x-embed-assertion").is_some(), "{first:?}");
    }

    let t0 = Instant::now();
    assert_counts(&revoke(addr, json!({"email": "alice@example.com"})).await, 1, 0);
    // Read until the tunnel ends (close frame, EOF or reset).
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    if closed.is_err() {
        // Say whether the tunnel still relays or merely hangs.
        let relays = ws.send(Message::text("after revoke")).await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(1), ws.next()).await,
                Ok(Some(Ok(m))) if m == Message::text("after revoke")
            );
        panic!("alice's WebSocket was still open 5 s after her sessions were revoked (still relaying: {relays})");
    }
    assert!(t0.elapsed() < Duration::from_secs(5));

    // carol's tunnel is untouched.
    other.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, other.next()).await.unwrap().unwrap().unwrap(),
        Message::text("still here")
    );
}
