//! Cluster mode (SPEC §7, issue 8): gateway replicas sharing one Redis
//! (`[store] kind = "redis"`) and one `[assertion] key`. A PAT minted on one
//! replica is exchanged on another, single use holds across replicas,
//! revocation on one is seen by all, a Redis outage is a fast 503 (never a
//! crash) that heals when Redis returns, only hashes of tokens are stored,
//! and the password in the store URL is never shown.
//!
//! Needs `redis-server` (see [`crate::common::RedisServer`]): without it each test
//! prints why and passes, unless `EMBEDGATE_CI_STRICT` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const REVOKE: &str = "/api/ext/users/sessions/revoke";
/// The warning a replica logs once per outage.
const UNREACHABLE: &str = "session store unreachable";
/// The line a replica logs once Redis answers again.
const REACHABLE_AGAIN: &str = "session store reachable again";
/// A password that must never be shown.
const PASSWORD: &str = "s3cret-pw";
/// Admits `*@portal.example` and sends `department`, `level` and `vip` as
/// `X-Embed-Attr-*`.
const APP_ATTR: &str = "a77a0000-0000-4000-8000-0000000000a1";

/// Replicas of one config behind one Redis.
struct Cluster {
    redis: RedisServer,
    replicas: Vec<Gateway>,
    /// The assertion key every replica signs with.
    key: AssertionKey,
    _key_dir: TempDir,
}

impl Cluster {
    /// Starts `n` replicas of `opts` with the Redis store on `redis`
    /// (`store_extra`: more `[store]` lines), each with `env` set.
    async fn start(redis: RedisServer, n: usize, opts: &EmbedOpts, store_extra: &str, env: &[(&str, &str)]) -> Cluster {
        let key_dir = new_dir();
        let key = AssertionKey::ed25519(key_dir.path(), "assertion-key.pem");
        let config = redis_config(opts, &key.path, &redis.url(), store_extra);
        let mut replicas = Vec::new();
        for _ in 0..n {
            replicas.push(Gateway::start_full(new_dir(), &config, &[], env).await);
        }
        Cluster {
            redis,
            replicas,
            key,
            _key_dir: key_dir,
        }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.replicas[i].public_addr
    }
}

/// `opts` with `[assertion] key` and `[store] kind = "redis"` on `url`.
fn redis_config(opts: &EmbedOpts, key: &Path, url: &str, store_extra: &str) -> String {
    let mut o = opts.clone();
    o.extra.push_str(&format!(
        "\n[assertion]\nkey = \"{}\"\n\n[store]\nkind = \"redis\"\nurl = \"{url}\"\n{store_extra}\n",
        key.display()
    ));
    o.config()
}

/// The embed config on one echo upstream for every app.
fn opts_on(up: &Upstream) -> EmbedOpts {
    EmbedOpts::new(&up.url(), &up.url())
}

/// A bound on Redis calls that a loaded CI machine will not trip, for the
/// tests that are not about the bound.
const ROOMY_TIMEOUT: &str = "timeout_ms = 2000\n";

fn session_cookie(r: &Reply) -> Option<String> {
    set_cookie_value(r, "embedgate_session")
}

/// Exchanges `pat` on `addr`, asserting the 303, and returns the cookie.
async fn exchange_ok(addr: SocketAddr, app: &str, pat: &str) -> String {
    let r = exchange(addr, app, pat).await;
    assert_eq!(r.status, 303, "exchange on {addr}: {r:?} {}", r.text());
    session_cookie(&r).expect("the exchange set no embedgate_session cookie")
}

/// Mints `body` on `addr` (asserting the 201) and returns the PAT.
async fn mint_body(addr: SocketAddr, body: &Value) -> String {
    let r = mint(addr, body).await;
    assert_eq!(r.status, 201, "mint {body} on {addr}: {r:?} {}", r.text());
    r.json()["personalAccessToken"].as_str().unwrap().to_string()
}

async fn revoke(addr: SocketAddr, body: Value) -> Reply {
    post_json(addr, REVOKE, Some(API_TOKEN), &body.to_string()).await
}

/// The upstream's single `X-Embed-Assertion`.
fn assertion_of(e: &Echo) -> String {
    let mut values = e.headers("x-embed-assertion");
    assert_eq!(values.len(), 1, "X-Embed-Assertion: {values:?}");
    values.pop().unwrap()
}

/// Fires `n` exchanges of `pat` at once, spread round-robin over `addrs`
/// (connected first); returns each one's status and cookie.
async fn exchange_concurrently(addrs: &[SocketAddr], app: &str, pat: &str, n: usize) -> Vec<(u16, Option<String>)> {
    let mut conns = Vec::new();
    for i in 0..n {
        conns.push(H1::connect(addrs[i % addrs.len()]).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let path = format!("/embed-apps/{app}?personal-access-token={pat}");
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let r = c.get(&path).await;
                (r.status.as_u16(), session_cookie(&r))
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("exchange task"));
    }
    out
}

/// Reads `ws` until the tunnel ends (close frame, EOF or reset), up to
/// `limit`; false if it is still open then.
async fn closes_within(ws: &mut WebSocketStream<TcpStream>, limit: Duration) -> bool {
    tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Sends `text` on `ws` and expects the echo back.
async fn ws_echoes(ws: &mut WebSocketStream<TcpStream>, text: &str) {
    ws.send(Message::text(text)).await.expect("websocket send");
    let got = tokio::time::timeout(T, ws.next())
        .await
        .expect("websocket echo timed out")
        .expect("websocket ended")
        .expect("websocket error");
    assert_eq!(got, Message::text(text));
}

/// Lines of `log` that contain `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The keys under `prefix` followed by `kind` and 64 lowercase hex.
fn hashed_keys<'a>(keys: &'a [String], prefix: &str, kind: &str) -> Vec<&'a String> {
    let start = format!("{prefix}{kind}");
    keys.iter()
        .filter(|k| k.strip_prefix(&start).is_some_and(|rest| is_lower_hex(rest, 64)))
        .collect()
}

async fn all_keys(client: &mut RedisClient) -> Vec<String> {
    client
        .keys()
        .await
        .into_iter()
        .map(|k| String::from_utf8(k).expect("a key that is not UTF-8"))
        .collect()
}

// ---------------------------------------------------------------------------
// One session, any replica
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pat_minted_on_one_replica_exchanges_on_another_and_the_session_works_on_both() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let up = echo_upstream("a").await;
    let c = Cluster::start(redis, 2, &opts_on(&up), ROOMY_TIMEOUT, &[]).await;
    let (a, b) = (c.addr(0), c.addr(1));

    let pat = mint_pat(a, "alice@example.com", APP_A).await;
    let r = exchange(b, APP_A, &pat).await;
    assert_eq!(r.status, 303, "exchange on B of a PAT minted on A: {r:?} {}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{PUBLIC_URL}/embed-apps/{APP_A}/").as_str())
    );
    let session = session_cookie(&r).expect("no session cookie");

    // Both replicas publish the shared key, so an upstream can verify what
    // either signed.
    let jwks = [fetch_jwks(a).await, fetch_jwks(b).await];
    for (i, j) in jwks.iter().enumerate() {
        assert!(
            c.key.jwk_in(j).is_some(),
            "replica {i} does not publish the shared key: {j}"
        );
    }
    for (i, addr) in [a, b].into_iter().enumerate() {
        let e = embed_get(addr, APP_A, &format!("/on/{i}?q=1"), &session).await.echo();
        assert_eq!(e.uri(), format!("/on/{i}?q=1"));
        assert_eq!(e.headers("x-embed-user"), ["alice@example.com"], "replica {i}");
        assert_eq!(e.headers("x-embed-groups"), ["sales,eng"], "replica {i}");
        assert_eq!(e.headers("x-embed-app"), [APP_A], "replica {i}");
        let jwt = assertion_of(&e);
        for j in &jwks {
            let claims = verify_jwt(j, &jwt).unwrap_or_else(|why| panic!("replica {i}'s assertion: {why}"));
            assert_eq!(claims["sub"], "alice@example.com");
            assert_eq!(claims["aud"], APP_A);
        }
    }
    assert_eq!(up.requests(), 2);
    // Still single use, on the replica that minted it too.
    assert_eq!(exchange(a, APP_A, &pat).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_vouched_groups_and_attributes_survive_across_replicas() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let up = echo_upstream("attr").await;
    let mut opts = opts_on(&up);
    opts.extra = format!(
        "[[apps]]\n\
         id = \"{APP_ATTR}\"\n\
         upstream = \"{u}\"\n\
         allow_users = [\"*@portal.example\"]\n\
         allow_groups = []\n\
         frame_ancestors = []\n\
         attribute_headers = [\"department\", \"level\", \"vip\"]\n\n\
         [identity]\n\
         users = \"portal\"\n",
        u = up.url()
    );
    let c = Cluster::start(redis, 2, &opts, ROOMY_TIMEOUT, &[]).await;
    let (a, b) = (c.addr(0), c.addr(1));

    let attributes = json!({"department": "R&D", "level": 3, "vip": true, "tier": "gold"});
    let pat = mint_body(
        a,
        &json!({
            "email": "Zoe@Portal.Example",
            "appId": APP_ATTR,
            "groups": ["sales", "team:red"],
            "attributes": attributes,
        }),
    )
    .await;
    let session = exchange_ok(b, APP_ATTR, &pat).await;

    let jwks = fetch_jwks(a).await;
    for (i, addr) in [a, b].into_iter().enumerate() {
        let e = embed_get(addr, APP_ATTR, "/who", &session).await.echo();
        assert_eq!(e.headers("x-embed-user"), ["zoe@portal.example"], "replica {i}");
        assert_eq!(groups_header(&e), set_of(&["sales", "team:red"]), "replica {i}");
        assert_eq!(e.headers("x-embed-attr-department"), ["R&D"], "replica {i}");
        assert_eq!(e.headers("x-embed-attr-level"), ["3"], "replica {i}");
        assert_eq!(e.headers("x-embed-attr-vip"), ["true"], "replica {i}");
        assert!(e.headers("x-embed-attr-tier").is_empty(), "replica {i}: {:?}", e.0);
        let claims = verify_jwt(&jwks, &assertion_of(&e)).unwrap_or_else(|why| panic!("replica {i}: {why}"));
        assert_eq!(claims["sub"], "zoe@portal.example", "{claims}");
        let groups: BTreeSet<String> = claims["groups"]
            .as_array()
            .unwrap_or_else(|| panic!("no groups claim: {claims}"))
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect();
        assert_eq!(groups, set_of(&["sales", "team:red"]), "{claims}");
        assert_eq!(claims["attrs"], attributes, "replica {i}: {claims}");
    }
}

// ---------------------------------------------------------------------------
// Single use across replicas
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exchange_is_single_use_across_replicas_under_concurrency() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let up = echo_upstream("a").await;
    let c = Cluster::start(redis, 2, &opts_on(&up), ROOMY_TIMEOUT, &[]).await;
    let addrs = [c.addr(0), c.addr(1)];
    let pat = mint_pat(addrs[0], "alice@example.com", APP_A).await;

    let results = exchange_concurrently(&addrs, APP_A, &pat, 50).await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    let won: Vec<&Option<String>> = results.iter().filter(|(s, _)| *s == 303).map(|(_, c)| c).collect();
    let refused = results.iter().filter(|(s, _)| *s == 401).count();
    assert_eq!((won.len(), refused), (1, 49), "statuses: {statuses:?}");
    assert!(
        results.iter().filter(|(s, _)| *s != 303).all(|(_, c)| c.is_none()),
        "a refused exchange set a cookie"
    );
    let session = won[0].clone().expect("the one 303 set no session cookie");
    for addr in addrs {
        assert_eq!(embed_get(addr, APP_A, "/", &session).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reusable_pat_exchanges_on_every_replica_when_single_use_false() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let up = echo_upstream("a").await;
    let mut opts = opts_on(&up);
    opts.pat = "single_use = false\n".into();
    let c = Cluster::start(redis, 2, &opts, ROOMY_TIMEOUT, &[]).await;
    let addrs = [c.addr(0), c.addr(1)];
    let pat = mint_pat(addrs[0], "alice@example.com", APP_A).await;

    let results = exchange_concurrently(&addrs, APP_A, &pat, 50).await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert!(statuses.iter().all(|&s| s == 303), "statuses: {statuses:?}");
    let sessions: BTreeSet<String> = results
        .into_iter()
        .map(|(_, c)| c.expect("a 303 without a session cookie"))
        .collect();
    assert_eq!(sessions.len(), 50, "each exchange must make its own session");
    // A session made on one replica works on the other.
    for (i, s) in sessions.iter().take(4).enumerate() {
        assert_eq!(embed_get(addrs[i % 2], APP_A, "/", s).await.status, 200);
    }
}

// ---------------------------------------------------------------------------
// Revocation across replicas
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_on_one_replica_ends_sessions_and_websockets_on_another() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let http = echo_upstream("a").await;
    let ws_up = websocket_upstream().await;
    let c = Cluster::start(redis, 2, &EmbedOpts::new(&http.url(), &ws_up.url()), ROOMY_TIMEOUT, &[]).await;
    let (a, b) = (c.addr(0), c.addr(1));

    // alice: an HTTP session on app A and a WebSocket on app B, both used
    // on replica A; an unused PAT minted on B. carol: a WebSocket on A too.
    let alice_http = open_session(a, "alice@example.com", APP_A).await;
    assert_eq!(embed_get(a, APP_A, "/before", &alice_http).await.status, 200);
    let alice_ws_session = exchange_ok(b, APP_B, &mint_pat(a, "alice@example.com", APP_B).await).await;
    let alice_pat = mint_pat(b, "alice@example.com", APP_A).await;
    let carol_ws_session = open_session(b, "carol@partner.example", APP_B).await;
    let mut alice_ws = embed_websocket(a, APP_B, "/ws", &alice_ws_session).await;
    ws_echoes(&mut alice_ws, "hello").await;
    let mut carol_ws = embed_websocket(a, APP_B, "/ws", &carol_ws_session).await;
    ws_echoes(&mut carol_ws, "hello").await;

    let t0 = Instant::now();
    let r = revoke(b, json!({"email": "alice@example.com"})).await;
    assert_eq!(r.status, 200, "{r:?} {}", r.text());
    assert_eq!(r.json(), json!({"revokedSessions": 2, "revokedTokens": 1}));

    let limit = Duration::from_secs(5);
    let refused_on_a = async {
        loop {
            let r = embed_get(a, APP_A, "/after", &alice_http).await;
            match r.status.as_u16() {
                401 => return Some(t0.elapsed()),
                200 if t0.elapsed() < limit => tokio::time::sleep(Duration::from_millis(50)).await,
                200 => return None,
                other => panic!("a revoked session got {other} on replica A: {}", r.text()),
            }
        }
    };
    let ws_closed = async {
        let left = limit.saturating_sub(t0.elapsed());
        closes_within(&mut alice_ws, left).await.then(|| t0.elapsed())
    };
    let (refused_after, closed_after) = tokio::join!(refused_on_a, ws_closed);
    assert!(
        refused_after.is_some(),
        "alice's revoked session still got 200 on replica A 5 s after the revoke on B"
    );
    assert!(
        closed_after.is_some(),
        "alice's WebSocket on replica A was still open 5 s after the revoke on B"
    );

    assert_eq!(embed_get(b, APP_A, "/after", &alice_http).await.status, 401);
    assert_eq!(
        exchange(a, APP_A, &alice_pat).await.status,
        401,
        "a revoked PAT exchanged"
    );
    // carol's tunnel on the same replica and app is untouched.
    ws_echoes(&mut carol_ws, "still here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_racing_exchanges_on_another_replica_leaves_no_session() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let up = echo_upstream("a").await;
    let c = Cluster::start(redis, 2, &opts_on(&up), ROOMY_TIMEOUT, &[]).await;
    let (a, b) = (c.addr(0), c.addr(1));
    let n = 20;
    let mut pats = Vec::new();
    for _ in 0..n {
        pats.push(mint_pat(a, "alice@example.com", APP_A).await);
    }
    let carol = open_session(b, "carol@partner.example", APP_A).await;

    // Exchanges on B and the revoke on A, fired together.
    let start = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::new();
    for pat in pats {
        let mut conn = H1::connect(b).await;
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let r = conn
                .get(&format!("/embed-apps/{APP_A}?personal-access-token={pat}"))
                .await;
            (r.status.as_u16(), session_cookie(&r))
        }));
    }
    let body = json!({"email": "alice@example.com"}).to_string();
    let mut conn = H1::connect(a).await;
    let req = hyper::Request::post(REVOKE)
        .header("content-type", "application/json")
        .header("authorization", format!("Basic {API_TOKEN}"))
        .body(full(body))
        .unwrap();
    start.wait().await;
    let revoked = conn.request(req).await;
    assert_eq!(revoked.status, 200, "{revoked:?} {}", revoked.text());
    let mut sessions = Vec::new();
    for t in tasks {
        let (status, cookie) = t.await.unwrap();
        assert!(
            matches!(status, 303 | 401),
            "an exchange racing the revoke got {status}"
        );
        if status == 303 {
            sessions.push(cookie.expect("a 303 without a session cookie"));
        }
    }

    // Whichever way each race went, nothing of alice's outlives the revoke.
    for (i, s) in sessions.iter().enumerate() {
        for addr in [a, b] {
            let dead = eventually(Duration::from_secs(2), || {
                let s = s.clone();
                async move { embed_get(addr, APP_A, "/", &s).await.status == 401 }
            })
            .await;
            assert!(
                dead,
                "session {i} of {} made while the revoke ran still works on {addr}",
                sessions.len()
            );
        }
    }
    assert_eq!(embed_get(a, APP_A, "/", &carol).await.status, 200);
}

// ---------------------------------------------------------------------------
// Redis outage
// ---------------------------------------------------------------------------

/// Awaits `f`, failing past 3 s (`timeout_ms = 250` plus slack).
async fn answered_fast(what: &str, f: impl Future<Output = Reply>) -> Reply {
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(3), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 3 s while Redis is down (timeout_ms = 250)"));
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "{what}: answered after {took:?}");
    r
}

/// The SPEC §3 error body with 503 and a `Retry-After` in whole seconds.
fn assert_store_unavailable(r: &Reply, what: &str) {
    assert_eq!(r.status, 503, "{what}: {r:?} {}", r.text());
    assert_error_body(r, 503, "Service Unavailable");
    let v = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: a 503 without Retry-After: {r:?}"));
    let secs: u64 = v
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {v:?} is not whole seconds"));
    assert!((1..=60).contains(&secs), "{what}: Retry-After {secs}");
}

/// Polls the admin `/readyz` of `gw` until it answers `status`.
async fn readyz_becomes(gw: &Gateway, status: u16, limit: Duration) -> bool {
    let admin = gw.admin();
    eventually(limit, || async move { get(admin, "/readyz").await.status == status }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_a_fast_503_and_heals_without_restarting_the_gateways() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let up = echo_upstream("app").await;
    let pass = echo_upstream("pass").await;
    let mut opts = opts_on(&up);
    opts.extra = passthrough(&pass.url());
    let mut c = Cluster::start(redis, 2, &opts, "timeout_ms = 250\n", &[]).await;
    let (a, b) = (c.addr(0), c.addr(1));
    let pids = [c.replicas[0].pid(), c.replicas[1].pid()];

    let session = open_session(a, "alice@example.com", APP_A).await;
    assert_eq!(embed_get(a, APP_A, "/before", &session).await.status, 200);
    let pat = mint_pat(b, "alice@example.com", APP_A).await;
    for gw in &c.replicas {
        assert_eq!(
            get(gw.admin(), "/readyz").await.status,
            200,
            "not ready before the outage"
        );
    }

    c.redis.stop();
    // A replica may answer from what it checked within the last second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let r = answered_fast("an embed request", embed_get(a, APP_A, "/during", &session)).await;
    assert_store_unavailable(&r, "an embed request during the outage");
    let r = answered_fast(
        "a mint",
        mint(b, &json!({"email": "alice@example.com", "appId": APP_A})),
    )
    .await;
    assert_store_unavailable(&r, "a mint during the outage");
    let r = answered_fast("an exchange", exchange(a, APP_A, &pat)).await;
    assert_store_unavailable(&r, "an exchange during the outage (not an invalid PAT)");
    assert!(session_cookie(&r).is_none());

    // Many requests, on both replicas: each a 503, and not a log line each.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let addr = [a, b][i % 2];
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            answered_fast(
                "a burst request",
                embed_get(addr, APP_A, &format!("/burst/{i}"), &session),
            )
            .await
        }));
    }
    for t in tasks {
        assert_store_unavailable(&t.await.unwrap(), "a burst request during the outage");
    }

    // What needs no store is served as ever.
    for addr in [a, b] {
        let e = get(addr, "/plain/path").await.echo();
        assert_eq!(e.upstream(), "pass");
    }
    for (i, gw) in c.replicas.iter().enumerate() {
        assert!(
            readyz_becomes(gw, 503, Duration::from_secs(5)).await,
            "replica {i}: /readyz did not turn 503 within 5 s of the outage"
        );
        assert_eq!(get(gw.admin(), "/healthz").await.status, 200, "replica {i}: /healthz");
    }

    c.redis.restart().await;
    let back = Instant::now();
    let limit = Duration::from_secs(10);
    let mut minted = None;
    while minted.is_none() {
        let r = mint(a, &json!({"email": "alice@example.com", "appId": APP_A})).await;
        match r.status.as_u16() {
            201 => minted = Some(r.json()["personalAccessToken"].as_str().unwrap().to_string()),
            503 if back.elapsed() < limit => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!(
                "minting {other} {:?} after {:?} since Redis came back",
                r.text(),
                back.elapsed()
            ),
        }
    }
    let fresh = exchange_ok(b, APP_A, &minted.unwrap()).await;
    assert_eq!(embed_get(a, APP_A, "/after", &fresh).await.echo().uri(), "/after");
    assert_eq!(embed_get(b, APP_A, "/after", &fresh).await.status, 200);
    for (i, gw) in c.replicas.iter().enumerate() {
        let left = limit.saturating_sub(back.elapsed()).max(Duration::from_millis(100));
        assert!(
            readyz_becomes(gw, 200, left).await,
            "replica {i}: /readyz not 200 again within 10 s of Redis coming back"
        );
    }
    // The restarted Redis is empty: the old session is gone, not served.
    assert_eq!(embed_get(a, APP_A, "/old", &session).await.status, 401);

    for (i, gw) in c.replicas.iter_mut().enumerate() {
        assert!(gw.is_running(), "replica {i} exited");
        assert_eq!(gw.pid(), pids[i]);
        let log = gw.stderr();
        let warned = lines_with(&log, UNREACHABLE);
        assert!(
            (1..=2).contains(&warned.len()),
            "replica {i}: want the outage warning ({UNREACHABLE:?}) once, got {} lines:\n{}",
            warned.len(),
            warned.join("\n")
        );
        assert!(
            !lines_with(&log, REACHABLE_AGAIN).is_empty(),
            "replica {i}: no {REACHABLE_AGAIN:?} line after the outage:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_starts_while_redis_is_down_and_serves_once_it_is_up() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    redis.stop();
    let up = echo_upstream("a").await;
    let mut c = Cluster::start(redis, 1, &opts_on(&up), "timeout_ms = 250\n", &[]).await;
    let a = c.addr(0);
    let gw = &c.replicas[0];
    assert_eq!(get(gw.admin(), "/healthz").await.status, 200);
    // Readiness follows a PING each second.
    assert!(
        readyz_becomes(gw, 503, Duration::from_secs(5)).await,
        "/readyz is not 503 within 5 s of starting without Redis"
    );
    let r = answered_fast(
        "a mint",
        mint(a, &json!({"email": "alice@example.com", "appId": APP_A})),
    )
    .await;
    assert_store_unavailable(&r, "a mint before Redis is up");
    // More of them: each a 503, and not a log line each.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(tokio::spawn(async move {
            answered_fast(
                "a burst mint",
                mint(a, &json!({"email": "alice@example.com", "appId": APP_A})),
            )
            .await
        }));
    }
    for t in tasks {
        assert_store_unavailable(&t.await.unwrap(), "a burst mint before Redis is up");
    }

    c.redis.restart().await;
    let gw = &c.replicas[0];
    assert!(
        readyz_becomes(gw, 200, Duration::from_secs(10)).await,
        "/readyz not 200 within 10 s of Redis coming up"
    );
    let session = open_session(a, "alice@example.com", APP_A).await;
    assert_eq!(embed_get(a, APP_A, "/", &session).await.status, 200);
    let log = gw.stderr();
    let warned = lines_with(&log, UNREACHABLE);
    assert!(
        (1..=2).contains(&warned.len()),
        "want the outage warning ({UNREACHABLE:?}) once, got {} lines:\n{}",
        warned.len(),
        warned.join("\n")
    );
}

// ---------------------------------------------------------------------------
// What is stored
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_hashes_of_tokens_are_stored_under_the_key_prefix() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let prefix = "eg-test:";
    let up = echo_upstream("a").await;
    let c = Cluster::start(
        redis,
        2,
        &opts_on(&up),
        &format!("{ROOMY_TIMEOUT}key_prefix = \"{prefix}\"\n"),
        &[],
    )
    .await;
    let (a, b) = (c.addr(0), c.addr(1));

    let used = mint_pat(a, "alice@example.com", APP_A).await;
    let unused = mint_pat(b, "alice@example.com", APP_A).await;
    let session = exchange_ok(b, APP_A, &used).await;
    assert_eq!(embed_get(a, APP_A, "/x", &session).await.status, 200);

    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for (what, token) in [
        ("the used PAT", used.as_str()),
        ("the unused PAT", unused.as_str()),
        ("the session token", session.as_str()),
    ] {
        let hex_part = token.strip_prefix("pat_").unwrap_or(token);
        secrets.push((format!("{what} as sent"), token.as_bytes().to_vec()));
        secrets.push((format!("{what}'s hex"), hex_part.as_bytes().to_vec()));
        if let Ok(raw) = hex::decode(hex_part) {
            secrets.push((format!("{what}'s bytes"), raw));
        }
    }

    let mut client = c.redis.client().await;
    let keys = all_keys(&mut client).await;
    assert!(!keys.is_empty(), "nothing was stored in Redis");
    let stray: Vec<&String> = keys.iter().filter(|k| !k.starts_with(prefix)).collect();
    assert!(stray.is_empty(), "keys outside the prefix {prefix:?}: {stray:?}");
    assert!(
        !hashed_keys(&keys, prefix, "session:").is_empty(),
        "no {prefix}session:<64 hex> key: {keys:?}"
    );
    assert!(
        !hashed_keys(&keys, prefix, "pat:").is_empty(),
        "no {prefix}pat:<64 hex> key for the unused PAT: {keys:?}"
    );
    for key in &keys {
        let mut blobs = vec![key.as_bytes().to_vec()];
        blobs.extend(client.value_strings(key.as_bytes()).await);
        for blob in &blobs {
            let lower = blob.to_ascii_lowercase();
            for (what, secret) in &secrets {
                assert!(
                    !contains_bytes(blob, secret) && !contains_bytes(&lower, secret),
                    "{what} is stored under {key:?}: {:?}",
                    String::from_utf8_lossy(blob)
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_expire_with_the_pat_and_session_expiry() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let prefix = "embedgate:";
    let up = echo_upstream("a").await;
    let c = Cluster::start(redis, 1, &opts_on(&up), ROOMY_TIMEOUT, &[]).await;
    let a = c.addr(0);
    let mut client = c.redis.client().await;

    let short = mint_body(
        a,
        &json!({"email": "alice@example.com", "appId": APP_A, "patExpiry": 600, "sessionExpiry": 30}),
    )
    .await;
    mint_body(
        a,
        &json!({"email": "alice@example.com", "appId": APP_A, "patExpiry": 900}),
    )
    .await;
    let keys = all_keys(&mut client).await;
    let pats = hashed_keys(&keys, prefix, "pat:");
    assert_eq!(
        pats.len(),
        2,
        "want two {prefix}pat:<64 hex> keys (default prefix): {keys:?}"
    );
    let mut ttls = Vec::new();
    for k in &pats {
        ttls.push(client.pttl(k.as_bytes()).await);
    }
    ttls.sort_unstable();
    let within = |ttl: i64, secs: i64| ttl > (secs - 30) * 1000 && ttl <= secs * 1000;
    assert!(
        within(ttls[0], 600) && within(ttls[1], 900),
        "PAT key PTTLs {ttls:?} ms, want patExpiry 600 s and 900 s"
    );

    let session = exchange_ok(a, APP_A, &short).await;
    assert_eq!(embed_get(a, APP_A, "/", &session).await.status, 200);
    let keys = all_keys(&mut client).await;
    let sessions = hashed_keys(&keys, prefix, "session:");
    assert_eq!(sessions.len(), 1, "want one {prefix}session:<64 hex> key: {keys:?}");
    let ttl = client.pttl(sessions[0].as_bytes()).await;
    assert!(
        within(ttl, 30 * 60),
        "session key PTTL {ttl} ms, want the 30-minute idle window"
    );
    // A PAT past its patExpiry is refused, whichever replica sees it.
    let brief = mint_body(
        a,
        &json!({"email": "alice@example.com", "appId": APP_A, "patExpiry": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(exchange(a, APP_A, &brief).await.status, 401, "an expired PAT exchanged");
    // Nothing that belongs to a token or a user lives forever.
    for k in keys.iter().filter(|k| {
        ["pat:", "session:", "user:"]
            .iter()
            .any(|p| k.starts_with(&format!("{prefix}{p}")))
    }) {
        let ttl = client.pttl(k.as_bytes()).await;
        assert!(ttl > 0, "{k} has no TTL ({ttl})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_idle_expiry_slides_in_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let up = echo_upstream("a").await;
    let c = Cluster::start(redis, 2, &opts_on(&up), ROOMY_TIMEOUT, &[]).await;
    let (a, b) = (c.addr(0), c.addr(1));
    let mut client = c.redis.client().await;

    // A one-minute idle window: an extension is written once a quarter of
    // it (15 s) has passed.
    let pat = mint_body(
        a,
        &json!({"email": "alice@example.com", "appId": APP_A, "sessionExpiry": 1}),
    )
    .await;
    let session = exchange_ok(a, APP_A, &pat).await;
    let keys = all_keys(&mut client).await;
    let key = hashed_keys(&keys, "embedgate:", "session:")
        .first()
        .map(|k| k.to_string())
        .unwrap_or_else(|| panic!("no session key: {keys:?}"));
    let first = client.pttl(key.as_bytes()).await;
    assert!(first > 50_000 && first <= 60_000, "PTTL {first} ms after the exchange");

    tokio::time::sleep(Duration::from_secs(17)).await;
    let idle = client.pttl(key.as_bytes()).await;
    assert!(idle < 45_000, "PTTL {idle} ms after 17 s idle");
    // A request on the other replica moves the expiry for both.
    assert_eq!(embed_get(b, APP_A, "/", &session).await.status, 200);
    let moved = eventually(Duration::from_secs(2), || {
        let key = key.clone();
        let port = c.redis.port;
        async move {
            let mut cl = RedisClient::connect(port, None).await.unwrap();
            cl.pttl(key.as_bytes()).await > 55_000
        }
    })
    .await;
    assert!(
        moved,
        "the request after 17 s idle did not move the session's expiry in Redis (PTTL {} ms)",
        client.pttl(key.as_bytes()).await
    );
    assert_eq!(embed_get(a, APP_A, "/", &session).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_with_different_key_prefixes_share_one_redis_apart() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let up = echo_upstream("a").await;
    let key_dir = new_dir();
    let key = AssertionKey::ed25519(key_dir.path(), "assertion-key.pem");
    let opts = opts_on(&up);
    // One on the default prefix, one on its own.
    let x = Gateway::start(new_dir(), &redis_config(&opts, &key.path, &redis.url(), ROOMY_TIMEOUT)).await;
    let y = Gateway::start(
        new_dir(),
        &redis_config(
            &opts,
            &key.path,
            &redis.url(),
            &format!("{ROOMY_TIMEOUT}key_prefix = \"eg-other:\"\n"),
        ),
    )
    .await;

    let pat = mint_pat(x.public_addr, "alice@example.com", APP_A).await;
    assert_eq!(
        exchange(y.public_addr, APP_A, &pat).await.status,
        401,
        "a PAT minted under another prefix exchanged"
    );
    let session = exchange_ok(x.public_addr, APP_A, &pat).await;
    assert_eq!(embed_get(x.public_addr, APP_A, "/", &session).await.status, 200);
    assert_eq!(
        embed_get(y.public_addr, APP_A, "/", &session).await.status,
        401,
        "a session stored under another prefix was served"
    );
    let other = open_session(y.public_addr, "carol@partner.example", APP_A).await;
    assert_eq!(embed_get(x.public_addr, APP_A, "/", &other).await.status, 401);

    let keys = all_keys(&mut redis.client().await).await;
    let stray: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with("embedgate:") && !k.starts_with("eg-other:"))
        .collect();
    assert!(stray.is_empty(), "keys under neither prefix: {stray:?}");
    assert!(
        !hashed_keys(&keys, "embedgate:", "session:").is_empty()
            && !hashed_keys(&keys, "eg-other:", "session:").is_empty(),
        "want a session under each prefix: {keys:?}"
    );
}

// ---------------------------------------------------------------------------
// The password in the URL
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_password_in_the_url_works_and_is_never_shown() {
    let Some(redis) = RedisServer::start_with_password(PASSWORD).await else {
        return;
    };
    assert!(redis.url().contains(PASSWORD));
    let up = echo_upstream("a").await;
    let mut c = Cluster::start(redis, 1, &opts_on(&up), ROOMY_TIMEOUT, &[("RUST_LOG", "debug")]).await;
    let a = c.addr(0);

    let session = open_session(a, "alice@example.com", APP_A).await;
    assert_eq!(embed_get(a, APP_A, "/x", &session).await.echo().uri(), "/x");

    // An outage and the recovery, where connection errors get logged.
    c.redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(embed_get(a, APP_A, "/down", &session).await.status, 503);
    c.redis.restart().await;
    let back = eventually(Duration::from_secs(10), || async {
        mint(a, &json!({"email": "alice@example.com", "appId": APP_A}))
            .await
            .status
            == 201
    })
    .await;
    assert!(back, "minting did not work again within 10 s of Redis coming back");

    let gw = &mut c.replicas[0];
    gw.signal("TERM");
    assert!(gw.wait_exit(T).await.is_some(), "the gateway did not exit on SIGTERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = gw.stderr();
    assert!(log.contains("DEBUG"), "no DEBUG lines were captured:\n{log}");
    let leaked = lines_with(&log, PASSWORD);
    assert!(
        leaked.is_empty(),
        "the Redis password is in the log:\n{}",
        leaked.join("\n")
    );

    // `embedgate check`, of this config and of broken URLs holding it.
    let closed = closed_port().await.port();
    let good = c.redis.url();
    let cases = [
        ("the working URL", good.clone(), Some(0)),
        (
            "a URL of another scheme",
            format!("http://:{PASSWORD}@127.0.0.1:{closed}/0"),
            Some(1),
        ),
        (
            "an unreachable URL",
            format!("redis://:{PASSWORD}@127.0.0.1:{closed}/0"),
            None,
        ),
        (
            "a URL with a bad port",
            format!("redis://:{PASSWORD}@127.0.0.1:notaport/0"),
            None,
        ),
        (
            "a URL with a bad database",
            format!("redis://:{PASSWORD}@127.0.0.1:{closed}/x"),
            None,
        ),
    ];
    for (what, url, code) in cases {
        let dir = new_dir();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, redis_config(&opts_on(&up), &c.key.path, &url, ROOMY_TIMEOUT)).unwrap();
        let out = run_check(&path);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(code) = code {
            assert_eq!(out.status.code(), Some(code), "check of {what}:\n{text}");
        }
        if code == Some(1) {
            assert!(
                text.contains("store.url"),
                "check of {what} does not name store.url:\n{text}"
            );
        }
        assert!(!text.contains(PASSWORD), "check of {what} shows the password:\n{text}");
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// Runs `embedgate check` on `text` (with an assertion key `k.pem` beside
/// it); returns the exit code, the config's path and stderr.
fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = new_dir();
    AssertionKey::ed25519(dir.path(), "k.pem");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = run_check(&path);
    (
        out.status.code(),
        path.display().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a `file:line: key: why` line for `key` at one of `lines`.
fn assert_names(text: &str, key: &str, lines: &[usize], why: &str) {
    let (code, path, stderr) = check(text);
    assert_eq!(code, Some(1), "{key}: check must exit 1:\n{stderr}");
    let found = stderr.lines().any(|l| {
        lines.iter().any(|n| {
            l.strip_prefix(&format!("{path}:{n}: {key}: "))
                .is_some_and(|reason| reason.contains(why))
        })
    });
    assert!(
        found,
        "no `{path}:<{lines:?}>: {key}: …{why}…` line in:\n{stderr}\nconfig:\n{text}"
    );
}

#[test]
fn check_names_the_missing_url_and_assertion_key_of_the_redis_store() {
    let server = "[server]\npublic_url = \"http://localhost:8080\"\n\n";
    // Lines: 4 [assertion], 5 key, 7 [store], 8 kind.
    assert_names(
        &format!("{server}[assertion]\nkey = \"k.pem\"\n\n[store]\nkind = \"redis\"\n"),
        "store.url",
        &[7, 8],
        "",
    );
    // Lines: 4 [store], 5 kind, 6 url.
    assert_names(
        &format!("{server}[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n"),
        "assertion.key",
        &[4, 5],
        "",
    );
}

#[test]
fn check_validates_the_redis_store_keys() {
    let head = "[server]\npublic_url = \"http://localhost:8080\"\n\n[assertion]\nkey = \"k.pem\"\n\n\
                [store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n";
    // Line 10 is the key under test.
    for bad in ["timeout_ms = 0", "timeout_ms = 60001", "timeout_ms = \"soon\""] {
        assert_names(&format!("{head}{bad}\n"), "store.timeout_ms", &[10], "");
    }
    let long = "p".repeat(65);
    for bad in [
        format!("key_prefix = \"{long}\""),
        "key_prefix = \"has space:\"".to_string(),
        "key_prefix = \"tab\\there\"".to_string(),
    ] {
        assert_names(&format!("{head}{bad}\n"), "store.key_prefix", &[10], "");
    }
    // Within bounds: accepted as far as the keys go.
    for good in ["timeout_ms = 1", "timeout_ms = 60000", "key_prefix = \"\""] {
        let (_, _, stderr) = check(&format!("{head}{good}\n"));
        assert!(
            !stderr.contains("store.timeout_ms") && !stderr.contains("store.key_prefix"),
            "{good} refused:\n{stderr}"
        );
    }
    // Redis-only keys with the memory store.
    let memory = "[server]\npublic_url = \"http://localhost:8080\"\n\n[store]\nkind = \"memory\"\n";
    for (line, key) in [
        ("timeout_ms = 250", "store.timeout_ms"),
        ("key_prefix = \"x:\"", "store.key_prefix"),
    ] {
        assert_names(&format!("{memory}{line}\n"), key, &[6], "only with kind = \"redis\"");
    }
}

// ---------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------

/// `GET /embed-apps/<APP_A>/n/<i>` with `cookie` on a kept-alive connection.
async fn send(conn: &mut H1, i: usize, cookie: &str) -> Reply {
    let req = hyper::Request::get(format!("/embed-apps/{APP_A}/n/{i}"))
        .header("cookie", cookie)
        .body(empty())
        .unwrap();
    conn.request(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_embed_requests_cost_few_redis_commands() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let up = echo_upstream("a").await;
    let c = Cluster::start(redis, 1, &opts_on(&up), ROOMY_TIMEOUT, &[]).await;
    let a = c.addr(0);
    let session = open_session(a, "alice@example.com", APP_A).await;
    let cookie = format!("embedgate_session={session}");
    let mut conn = H1::connect(a).await;
    for i in 0..5 {
        assert_eq!(send(&mut conn, i, &cookie).await.status, 200, "warm-up request {i}");
    }

    let mut client = c.redis.client().await;
    client.reset_stats().await;
    let before = up.requests();
    let t0 = Instant::now();
    // Paced over about two seconds, so that what a replica remembers of the
    // session (at most 1 s) runs out along the way.
    for i in 0..200 {
        let r = send(&mut conn, i, &cookie).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = t0.elapsed();
    let calls = client.command_calls().await;
    assert_eq!(up.requests() - before, 200);
    // Our own INFO and CONFIG are not the gateway's.
    let gateway_calls: BTreeMap<&String, &u64> = calls
        .iter()
        .filter(|(name, _)| !name.starts_with("info") && !name.starts_with("config"))
        .collect();
    let total: u64 = gateway_calls.values().copied().sum();
    assert!(
        total < 50,
        "200 requests of one session ({took:?}) cost {total} Redis commands: {gateway_calls:?}"
    );
}
