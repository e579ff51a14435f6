//! The shared store (`store.kind = "redis"`, SPEC §7): PATs and sessions in
//! Redis with native TTLs, so any number of replicas serve the same users.
//!
//! Keys, each under `store.key_prefix` (P):
//! - `P pat:<hex>` — a PAT's record (JSON; a claimed one starts with `!`),
//!   expiring with the PAT;
//! - `P session:<hex>` — a session's record, expiring at the end of its
//!   idle window, never past its lifetime cap;
//! - `P user:<email>` — a set indexing that user's PATs and sessions
//!   (`pat:<hex>:<app>`, `session:<hex>:<app>`), expiring with the
//!   longest-lived of them, so a revocation reads one set, never the
//!   keyspace;
//! - channel `P ended` — the sessions a revocation ended, as hex hashes.
//!
//! `<hex>` is the SHA-256 of the token: no token is ever stored. Every
//! decision (single use, a session started only from a PAT no revocation
//! removed, a revocation with its announcement) is one Lua script, atomic
//! across replicas.
//!
//! What each replica keeps for itself: a session it has just read, for at
//! most [`CACHE_FOR`] (a page load of 50 requests is one round trip; a
//! revocation elsewhere reaches it through the channel at once, or when
//! the entry expires); and the sessions it has served, so that its sweep
//! can tell its tunnels which of them expired.
//!
//! Every call is bounded by `store.timeout_ms`; a failure is a
//! [`StoreError`] (503). The connection manager reconnects by itself; a
//! health check every second keeps [`Store::is_ready`] current and logs an
//! outage once, when it starts, and once when it ends.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands, Client, RedisError, Script};
use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use tokio::sync::broadcast;
use tracing::{info, warn};

mod channel;
mod count;
mod read;

use self::channel::{check_health, follow_channel, parse_hashes};
use self::read::extension_due;
use super::{Counts, Ended, PatRecord, Revoked, SessionRecord, Store, StoreError};
use crate::telemetry::audit::Refusal;
use crate::token::TokenHash;

/// How long a replica reuses a session it has read before reading it again.
pub(crate) const CACHE_FOR: Duration = Duration::from_secs(1);

/// How often the connection is checked (`PING`).
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// What [`RedisStore::health`] holds.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Keys per call when the store walks many of them (count, sweep).
const BATCH: usize = 1000;

/// Batches of ended sessions a listener may fall behind by.
const ENDED_BACKLOG: usize = 1024;

static INSERT_PAT: &str = include_str!("redis/insert_pat.lua");
static TAKE_PAT: &str = include_str!("redis/take_pat.lua");
static START_SESSION: &str = include_str!("redis/start_session.lua");
static REVOKE: &str = include_str!("redis/revoke.lua");

/// The scripts, hashed once (sent by `EVALSHA`, loaded when missing).
struct Scripts {
    insert_pat: Script,
    take_pat: Script,
    start_session: Script,
    revoke: Script,
}

/// A session read a moment ago.
#[derive(Debug, Clone)]
struct CachedSession {
    record: SessionRecord,
    read_at: Instant,
}

/// PATs and sessions in Redis.
pub(crate) struct RedisStore {
    client: Client,
    /// Made at [`RedisStore::connect`] (it needs the runtime), then
    /// reconnecting by itself.
    connection: ArcSwapOption<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    scripts: Scripts,
    cache: DashMap<TokenHash, CachedSession, crate::fast_hash::FastHash>,
    /// Sessions this replica has served and not yet seen end, with what
    /// the audit log says when they do.
    served: DashMap<TokenHash, Served>,
    ended: broadcast::Sender<Ended>,
    /// [`UNKNOWN`] until the first call or check, then [`UP`] or
    /// [`DOWN`] as the last one went.
    health: AtomicU8,
    /// Names this replica in what it publishes, so it does not hear its
    /// own revocations twice (it tells its listeners at once).
    replica: String,
}

impl std::fmt::Debug for RedisStore {
    // The URL may hold a password: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a Redis URL was refused, in words that never echo it.
#[derive(Debug, thiserror::Error)]
#[error("not a usable redis:// or rediss:// URL ({0:?})")]
pub(crate) struct BadUrl(::redis::ErrorKind);

impl RedisStore {
    /// A store for the Redis at `url`, not yet connected (see
    /// [`connect`](Self::connect)). Fails only on a URL that cannot be used.
    pub(crate) fn new(url: &str, timeout: Duration, key_prefix: &str) -> Result<RedisStore, BadUrl> {
        let client = Client::open(url).map_err(|e| BadUrl(e.kind()))?;
        Ok(RedisStore {
            client,
            connection: ArcSwapOption::empty(),
            prefix: key_prefix.to_owned(),
            timeout,
            scripts: Scripts {
                insert_pat: Script::new(INSERT_PAT),
                take_pat: Script::new(TAKE_PAT),
                start_session: Script::new(START_SESSION),
                revoke: Script::new(REVOKE),
            },
            cache: DashMap::default(),
            served: DashMap::new(),
            ended: broadcast::channel(ENDED_BACKLOG).0,
            health: AtomicU8::new(UNKNOWN),
            replica: hex::encode(rand_id()),
        })
    }

    /// Connects (lazily: a Redis that is down now is reached when it is
    /// back) and starts following the channel of ended sessions and
    /// checking the connection. Needs the Tokio runtime.
    pub(crate) fn connect(self: &Arc<Self>) -> Result<(), StoreError> {
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_max_delay(Duration::from_secs(2));
        let manager =
            ConnectionManager::new_lazy_with_config(self.client.clone(), config).map_err(|e| unavailable(&e))?;
        self.connection.store(Some(Arc::new(manager)));
        tokio::spawn(check_health(Arc::downgrade(self)));
        tokio::spawn(follow_channel(Arc::downgrade(self)));
        Ok(())
    }

    fn key(&self, kind: &str, hash: &TokenHash) -> String {
        format!("{}{kind}:{}", self.prefix, hex::encode(hash))
    }

    fn user_key(&self, email: &str) -> String {
        format!("{}user:{email}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}ended", self.prefix)
    }

    /// The connection, if [`connect`](Self::connect) made it.
    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        match self.connection.load().as_deref() {
            Some(manager) => Ok(manager.clone()),
            None => Err(StoreError(Box::new(std::io::Error::other("not connected")))),
        }
    }

    /// Runs one call with the timeout, noting whether Redis answered.
    async fn call<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, RedisError>>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.note(true);
                Ok(value)
            }
            Ok(Err(error)) => {
                self.note(false);
                Err(unavailable(&error))
            }
            Err(_) => {
                self.note(false);
                Err(StoreError(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer within store.timeout_ms",
                ))))
            }
        }
    }

    /// Records whether Redis answered, logging only the changes: one line
    /// when an outage starts, one when it ends.
    fn note(&self, answered: bool) {
        if !answered {
            crate::metrics::global().store_errors.inc();
        }
        let was = self.health.swap(if answered { UP } else { DOWN }, Ordering::Relaxed);
        match (was, answered) {
            (UP | UNKNOWN, false) => warn!("session store unreachable; requests that need it get 503"),
            (DOWN, true) => info!("session store reachable again"),
            _ => {}
        }
    }

    /// Drops these sessions from what this replica keeps.
    fn forget(&self, hashes: &[TokenHash]) {
        for hash in hashes {
            self.cache.remove(hash);
            self.served.remove(hash);
        }
    }

    /// Drops a session that expired from what this replica keeps, and logs
    /// its end if this replica served it (each replica that did says so).
    fn expired(&self, hash: &TokenHash, now_ms: u64) {
        self.cache.remove(hash);
        if let Some((_, served)) = self.served.remove(hash) {
            super::ended(hash, &served.email, &served.app_id, served.cap_ms, false, now_ms);
        }
    }
}

/// A session this replica served, as the audit log names it when it ends.
#[derive(Debug)]
struct Served {
    email: String,
    app_id: String,
    cap_ms: u64,
}

/// Eight random bytes naming a replica.
fn rand_id() -> [u8; 8] {
    use aws_lc_rs::rand::SecureRandom;
    let mut id = [0u8; 8];
    // Only a name: a failure of the OS source leaves zeros, which costs at
    // worst a duplicate announcement.
    let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut id);
    id
}

/// A Redis failure as a store error, in Redis' words: its messages name
/// the command, never the URL or its password.
fn unavailable(error: &RedisError) -> StoreError {
    StoreError(Box::new(std::io::Error::other(format!(
        "redis: {:?}: {}",
        error.kind(),
        error.detail().unwrap_or("no detail")
    ))))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError(Box::new(e)))
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn insert_pat(&self, hash: TokenHash, pat: PatRecord, now_ms: u64) -> Result<(), StoreError> {
        let ttl = pat.expires_ms.saturating_sub(now_ms).max(1);
        let member = format!("pat:{}:{}", hex::encode(hash), pat.app_id);
        let mut connection = self.connection()?;
        let mut invocation = self.scripts.insert_pat.prepare_invoke();
        invocation
            .key(self.key("pat", &hash))
            .key(self.user_key(&pat.email))
            .arg(to_json(&pat)?)
            .arg(ttl)
            .arg(member);
        self.call(invocation.invoke_async::<i64>(&mut connection)).await?;
        Ok(())
    }

    async fn take_pat(
        &self,
        hash: &TokenHash,
        app_id: &str,
        single_use: bool,
        now_ms: u64,
    ) -> Result<Result<PatRecord, Refusal>, StoreError> {
        let mut connection = self.connection()?;
        let mut invocation = self.scripts.take_pat.prepare_invoke();
        invocation
            .key(self.key("pat", hash))
            .arg(app_id)
            .arg(if single_use { "1" } else { "0" });
        // The record, or why not: "unknown", "used" or "wrong_app". Redis
        // drops a PAT when it expires, so an expired one is mostly unknown.
        let (taken, text): (String, String) = self.call(invocation.invoke_async(&mut connection)).await?;
        Ok(match taken.as_str() {
            "ok" => match serde_json::from_str::<PatRecord>(&text) {
                Ok(pat) if pat.is_live(now_ms) => Ok(pat),
                Ok(_) => Err(Refusal::Expired),
                Err(_) => Err(Refusal::Unknown),
            },
            "used" => Err(Refusal::Used),
            "wrong_app" => Err(Refusal::WrongApp),
            _ => Err(Refusal::Unknown),
        })
    }

    async fn start_session(
        &self,
        hash: TokenHash,
        session: SessionRecord,
        pat: &TokenHash,
        single_use: bool,
    ) -> Result<bool, StoreError> {
        let ttl = session.expires_ms.saturating_sub(session.created_ms).max(1);
        let index_ttl = session.cap_ms.saturating_sub(session.created_ms).max(ttl);
        let mut connection = self.connection()?;
        let mut invocation = self.scripts.start_session.prepare_invoke();
        invocation
            .key(self.key("session", &hash))
            .key(self.key("pat", pat))
            .key(self.user_key(&session.subject.email))
            .arg(to_json(&session)?)
            .arg(ttl)
            .arg(if single_use { "1" } else { "0" })
            .arg(format!("session:{}:{}", hex::encode(hash), session.subject.app_id))
            .arg(format!("pat:{}:{}", hex::encode(pat), session.subject.app_id))
            .arg(index_ttl);
        let started: i64 = self.call(invocation.invoke_async(&mut connection)).await?;
        Ok(started == 1)
    }

    async fn use_session(
        &self,
        hash: &TokenHash,
        app_id: &str,
        now_ms: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        if let Some(mut cached) = self.cache.get_mut(hash) {
            if !extension_due(&cached.record, now_ms) {
                if cached.read_at.elapsed() < CACHE_FOR {
                    let record = &cached.record;
                    let usable = record.subject.app_id == app_id && record.is_live(now_ms);
                    return Ok(usable.then(|| record.clone()));
                }
                // Stale: this request reads Redis again, and the requests
                // that come meanwhile keep the copy, so a busy session costs
                // one read a second, not one per request in flight.
                cached.read_at = Instant::now();
            }
        }
        let read = self.read_session(hash, app_id, now_ms).await;
        if read.is_err() {
            // Not served from a copy while Redis does not answer.
            self.cache.remove(hash);
        }
        read
    }

    async fn revoke(&self, email: &str, app_id: Option<&str>) -> Result<Revoked, StoreError> {
        let mut connection = self.connection()?;
        let mut invocation = self.scripts.revoke.prepare_invoke();
        invocation
            .key(self.user_key(email))
            .arg(&self.prefix)
            .arg(app_id.unwrap_or(""))
            .arg(self.channel())
            .arg(&self.replica);
        let (tokens, sessions, apps): (usize, Vec<String>, Vec<String>) =
            self.call(invocation.invoke_async(&mut connection)).await?;
        let ended = parse_hashes(sessions.join(" ").as_bytes());
        for (hash, ended_app) in ended.iter().zip(&apps) {
            super::ended(hash, email, ended_app, 0, true, 0);
        }
        // This replica's listeners hear it at once, whatever the channel does.
        self.forget(&ended);
        let revoked = Revoked {
            sessions: ended.len(),
            tokens,
        };
        if !ended.is_empty() {
            let _ = self.ended.send(Ended::Sessions(ended.into()));
        }
        Ok(revoked)
    }

    /// Walks the keyspace ([`RedisStore::count_live`]).
    async fn count(&self, now_ms: u64) -> Result<Counts, StoreError> {
        self.count_live(now_ms).await
    }

    /// Redis expires the records itself; what is left is telling this
    /// replica's tunnels which of the sessions it served have expired.
    async fn sweep(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.cache.retain(|_, cached| cached.read_at.elapsed() < CACHE_FOR);
        let served: Vec<TokenHash> = self.served.iter().map(|e| *e.key()).collect();
        if served.is_empty() {
            return Ok(0);
        }
        let mut connection = self.connection()?;
        let mut gone: Vec<TokenHash> = Vec::new();
        for batch in served.chunks(BATCH) {
            let keys: Vec<String> = batch.iter().map(|h| self.key("session", h)).collect();
            let values: Vec<Option<String>> = self.call(connection.mget(&keys)).await?;
            let ended = batch.iter().zip(values).filter(|(_, value)| {
                let record = value
                    .as_deref()
                    .and_then(|t| serde_json::from_str::<SessionRecord>(t).ok());
                !record.is_some_and(|r| r.is_live(now_ms))
            });
            gone.extend(ended.map(|(hash, _)| *hash));
        }
        for hash in &gone {
            self.expired(hash, now_ms);
        }
        let count = gone.len();
        if !gone.is_empty() {
            let _ = self.ended.send(Ended::Sessions(gone.into()));
        }
        Ok(count)
    }

    fn ended_sessions(&self) -> broadcast::Receiver<Ended> {
        self.ended.subscribe()
    }

    /// Ready once Redis has answered, until it stops answering.
    fn is_ready(&self) -> bool {
        self.health.load(Ordering::Relaxed) == UP
    }

    fn start(self: Arc<Self>) -> Result<(), StoreError> {
        self.connect()
    }
}

#[cfg(test)]
mod tests;
