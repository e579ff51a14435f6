//! The store behaviour suite against a real `redis-server` (Debian's
//! package), one server per test (stopped when the test ends); plus what
//! only the shared store does.
//!
//! Without `redis-server` the tests print why and pass, unless
//! `EMBEDGATE_CI_STRICT` is set, where that is a failure.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::channel::parse_ended;
use super::*;
use crate::session::conformance::{self, pat, session, APP, OTHER, T0, USER};

/// A `redis-server` on a free loopback port, stopped by its PID on drop.
struct RedisServer {
    port: u16,
    child: Child,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server_binary() -> Option<String> {
    let path = std::env::var("EMBEDGATE_REDIS_SERVER").unwrap_or_else(|_| "/usr/bin/redis-server".into());
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("EMBEDGATE_CI_STRICT").is_none(),
        "redis-server is required under EMBEDGATE_CI_STRICT (apt-get install redis-server)"
    );
    eprintln!("skipping: redis-server is not installed (apt-get install redis-server)");
    None
}

/// A server of this test's own (`None`: not installed).
fn server() -> Option<RedisServer> {
    let binary = redis_server_binary()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let server = RedisServer { port, child };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(server)
}

fn url(server: &RedisServer) -> String {
    format!("redis://127.0.0.1:{}/0", server.port)
}

/// A started store on a server of its own.
async fn store() -> Option<(Arc<RedisStore>, RedisServer)> {
    let server = server()?;
    let store = Arc::new(RedisStore::new(&url(&server), Duration::from_secs(2), "eg-test:").expect("a good URL"));
    store.connect().expect("started");
    Some((store, server))
}

async fn dyn_store() -> Option<(Arc<dyn Store>, RedisServer)> {
    let (store, server) = store().await?;
    Some((store as Arc<dyn Store>, server))
}

crate::session::conformance::store_conformance_tests!(async dyn_store());

#[test]
fn a_bad_url_is_refused_without_echoing_it() {
    let error = RedisStore::new("redis://:s3cret@[bad", Duration::from_millis(10), "p:").err();
    let shown = error.map(|e| e.to_string()).unwrap_or_default();
    assert!(shown.starts_with("not a usable"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn a_session_is_extended_once_a_quarter_of_its_idle_window_has_passed() {
    let fresh = session(USER, APP, T0, 100, 1_000);
    assert_eq!(fresh.expires_ms, T0 + 100_000);
    assert!(!extension_due(&fresh, T0), "just started");
    assert!(!extension_due(&fresh, T0 + 24_000), "under a quarter");
    assert!(extension_due(&fresh, T0 + 25_000), "a quarter");
    let capped = session(USER, APP, T0, 100, 110);
    assert!(extension_due(&capped, T0 + 30_000), "up to the cap");
    let at_cap = SessionRecord {
        expires_ms: capped.cap_ms,
        ..capped
    };
    assert!(!extension_due(&at_cap, T0 + 60_000), "never past the cap");
}

#[test]
fn a_published_message_names_its_replica_first() {
    let payload = format!("0a0b {}", hex::encode([7u8; 32]));
    let (from, hashes) = parse_ended(payload.as_bytes());
    assert_eq!(from, b"0a0b");
    assert_eq!(hashes, vec![[7u8; 32]]);
    assert_eq!(parse_ended(b"0a0b"), (&b"0a0b"[..], vec![]));
}

#[test]
fn published_hashes_parse_and_junk_is_skipped() {
    let a = [0xab; 32];
    let b = [0x01; 32];
    let payload = format!("{} zz {}", hex::encode(a), hex::encode(b));
    assert_eq!(parse_hashes(payload.as_bytes()), vec![a, b]);
    assert!(parse_hashes(b"").is_empty());
}

/// Only hashes are stored, under the prefix, with TTLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_prefixed_hashes_with_ttls() {
    let Some((store, _server)) = store().await else { return };
    let now = crate::session::now_ms();
    store
        .insert_pat([0x61; 32], pat(USER, APP, now, 60), now)
        .await
        .unwrap();
    conformance::open(&*store, [0x62; 32], session(USER, APP, now, 30, 600)).await;
    let mut connection = store.connection().unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{}*", store.prefix))
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut names: Vec<String> = keys
        .iter()
        .map(|k| k.strip_prefix(&store.prefix).unwrap_or(k).to_owned())
        .collect();
    names.sort();
    // The PAT `open` exchanged is left as a mark that it was used.
    let mut used = [0x62; 32];
    used[30] ^= 0xA5;
    used[31] ^= 0x5A;
    let mut expected = vec![
        format!("pat:{}", hex::encode([0x61; 32])),
        format!("pat:{}", hex::encode(used)),
        format!("session:{}", hex::encode([0x62; 32])),
        format!("user:{USER}"),
    ];
    expected.sort();
    assert_eq!(names, expected);
    let mark: Option<String> = connection.get(store.key("pat", &used)).await.unwrap();
    assert_eq!(mark.as_deref(), Some("!used"), "nothing of the PAT's record is left");
    for key in &keys {
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has a TTL: {ttl}");
    }
    let session_ttl: i64 = ::redis::cmd("PTTL")
        .arg(store.key("session", &[0x62; 32]))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(session_ttl <= 30_000, "the idle window, not the cap: {session_ttl}");
    let index_ttl: i64 = ::redis::cmd("PTTL")
        .arg(store.user_key(USER))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(index_ttl > 500_000, "the index lives as long as the cap: {index_ttl}");
}

/// A revocation on one replica reaches another's listeners and cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_replica() {
    let Some((a, server)) = store().await else { return };
    let b = Arc::new(RedisStore::new(&url(&server), Duration::from_secs(2), &a.prefix).unwrap());
    b.connect().unwrap();
    let mut heard = b.ended_sessions();
    // B subscribes in the background: wait until it listens.
    let mut connection = a.connection().unwrap();
    for _ in 0..100 {
        let listeners: Vec<(String, usize)> = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(a.channel())
            .query_async(&mut connection)
            .await
            .unwrap();
        if listeners.first().is_some_and(|(_, n)| *n >= 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = crate::session::now_ms();
    conformance::open(&*a, [0x71; 32], session(USER, APP, now, 30, 600)).await;
    assert!(b.use_session(&[0x71; 32], APP, now).await.unwrap().is_some());
    assert!(b.cache.contains_key(&[0x71; 32]), "B caches what it read");
    a.revoke(USER, None).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), heard.recv())
        .await
        .expect("B hears the revocation")
        .unwrap();
    assert_eq!(ended, Ended::Sessions(Arc::from([[0x71u8; 32]].as_slice())));
    assert!(
        b.use_session(&[0x71; 32], APP, now).await.unwrap().is_none(),
        "and drops its cache"
    );
}

/// A store that cannot reach Redis answers errors within its timeout,
/// says it is not ready, and logs nothing per call beyond the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_fast_and_is_not_ready() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let store =
        Arc::new(RedisStore::new(&format!("redis://127.0.0.1:{port}/0"), Duration::from_millis(200), "x:").unwrap());
    assert!(!store.is_ready(), "not ready before it starts");
    store.connect().unwrap();
    let started = std::time::Instant::now();
    let result = store.use_session(&[1; 32], APP, T0).await;
    assert!(result.is_err());
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(!store.is_ready());
}

/// The sweep tells this replica's tunnels which sessions it served have
/// expired in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_announces_served_sessions_that_expired() {
    let Some((store, _server)) = store().await else { return };
    let mut heard = store.ended_sessions();
    let now = crate::session::now_ms();
    conformance::open(&*store, [0x81; 32], session(USER, APP, now, 1, 600)).await;
    conformance::open(&*store, [0x82; 32], session(USER, APP, now, 600, 600)).await;
    assert!(store.use_session(&[0x81; 32], APP, now).await.unwrap().is_some());
    assert!(store.use_session(&[0x82; 32], APP, now).await.unwrap().is_some());
    assert_eq!(store.sweep(now).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(store.sweep(crate::session::now_ms()).await.unwrap(), 1);
    let ended = heard.try_recv().expect("announced");
    assert_eq!(ended, Ended::Sessions(Arc::from([[0x81u8; 32]].as_slice())));
    assert!(!store.served.contains_key(&[0x81; 32]));
}

/// A replica logs the end of each session it served, once: expired in
/// Redis (found by its sweep or its next use) or revoked (with the app
/// each revoked session was for).
#[tokio::test]
async fn ended_sessions_are_audited_once_with_the_reason() {
    let (_guard, audit) = crate::telemetry::audit::testing::capture();
    let Some((store, _server)) = store().await else { return };
    let now = crate::session::now_ms();
    conformance::open(&*store, [0x91; 32], session(USER, APP, now, 1, 600)).await;
    conformance::open(&*store, [0x92; 32], session(USER, APP, now, 1, 600)).await;
    conformance::open(&*store, [0x93; 32], session(USER, OTHER, now, 600, 600)).await;
    for hash in [[0x91; 32], [0x92; 32]] {
        assert!(store.use_session(&hash, APP, now).await.unwrap().is_some());
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let later = crate::session::now_ms();
    assert_eq!(store.sweep(later).await.unwrap(), 2);
    assert_eq!(store.sweep(later).await.unwrap(), 0);
    assert!(store.use_session(&[0x91; 32], APP, later).await.unwrap().is_none());
    assert_eq!(store.revoke(USER, None).await.unwrap().sessions, 1);
    let ended = |b: u8, app: &str, reason: &str| {
        serde_json::json!({
            "message": "audit", "event": "session_end", "user": USER, "app": app,
            "session": crate::telemetry::audit::fingerprint(&[b; 32]), "reason": reason,
        })
    };
    let mut events = audit.events();
    events.sort_by_key(|e| e["session"].as_str().map(str::to_owned));
    assert_eq!(
        events,
        [
            ended(0x91, APP, "idle"),
            ended(0x92, APP, "idle"),
            ended(0x93, OTHER, "revoked")
        ]
    );
}

/// Ready only once Redis has answered: not before its first check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_ready_once_redis_answers() {
    let Some(server) = server() else { return };
    let store = Arc::new(RedisStore::new(&url(&server), Duration::from_secs(2), "r:").unwrap());
    assert!(!store.is_ready(), "not before it has tried");
    store.connect().unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !store.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("ready within a check");
}

/// Counting walks the keyspace in batches: more keys than one batch are
/// all counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_walks_more_than_one_batch() {
    let Some((store, _server)) = store().await else { return };
    let now = crate::session::now_ms();
    let many = BATCH * 2 + 7;
    for i in 0..many {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
        store.insert_pat(hash, pat(USER, APP, now, 60), now).await.unwrap();
    }
    let counts = store.count(now).await.unwrap();
    assert_eq!((counts.sessions, counts.pats), (0, many));
}
