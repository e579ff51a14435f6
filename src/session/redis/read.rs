//! Reading a session: from this replica's short cache, or from Redis,
//! sliding its expiry there only when due (no write per request).

use std::time::Instant;

use ::redis::AsyncCommands;

use super::{CachedSession, RedisStore, Served};
use crate::session::{SessionRecord, StoreError};
use crate::token::TokenHash;

impl RedisStore {
    /// Reads a session from Redis, extends it when due, and caches it.
    pub(super) async fn read_session(
        &self,
        hash: &TokenHash,
        app_id: &str,
        now_ms: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let key = self.key("session", hash);
        let mut connection = self.connection()?;
        let text: Option<String> = self.call(connection.get(&key)).await?;
        let Some(mut record) = text.and_then(|t| serde_json::from_str::<SessionRecord>(&t).ok()) else {
            self.expired(hash, now_ms);
            return Ok(None);
        };
        if !record.is_live(now_ms) {
            self.expired(hash, now_ms);
            return Ok(None);
        }
        // A request for another app is no activity of this session's.
        if record.subject.app_id == app_id && extension_due(&record, now_ms) {
            record.touch(now_ms);
            let ttl = record.expires_ms.saturating_sub(now_ms).max(1);
            let json = serde_json::to_string(&record).map_err(|e| StoreError(Box::new(e)))?;
            // XX: only while it exists, so a revocation is never undone.
            let written: Option<String> = self
                .call(
                    ::redis::cmd("SET")
                        .arg(&key)
                        .arg(json)
                        .arg("PX")
                        .arg(ttl)
                        .arg("XX")
                        .query_async(&mut connection),
                )
                .await?;
            if written.is_none() {
                return Ok(None);
            }
        }
        self.cache.insert(
            *hash,
            CachedSession {
                record: record.clone(),
                read_at: Instant::now(),
            },
        );
        self.served.entry(*hash).or_insert_with(|| Served {
            email: record.subject.email.clone(),
            app_id: record.subject.app_id.clone(),
            cap_ms: record.cap_ms,
        });
        Ok((record.subject.app_id == app_id).then_some(record))
    }
}

/// The sliding idle timeout without a write per request: the expiry moves
/// only once a quarter of the idle window has passed since it last moved
/// (so a session ends between ¾ and all of its idle window after its last
/// request), and never past the cap.
pub(super) fn extension_due(record: &SessionRecord, now_ms: u64) -> bool {
    let target = now_ms.saturating_add(record.idle_ms).min(record.cap_ms);
    let left = record.expires_ms.saturating_sub(now_ms);
    target > record.expires_ms && left <= record.idle_ms - record.idle_ms / 4
}
