//! Counting what is live in Redis, for the gauges: a walk of the keyspace.

use ::redis::AsyncCommands;

use super::{RedisStore, BATCH};
use crate::session::{Counts, PatRecord, SessionRecord, StoreError};

impl RedisStore {
    /// Walks the keyspace under the prefix a batch at a time (`SCAN` and
    /// `MGET` of [`BATCH`] keys per call, each within the timeout), so a
    /// large store costs many small calls, never one long one.
    pub(super) async fn count_live(&self, now_ms: u64) -> Result<Counts, StoreError> {
        let mut connection = self.connection()?;
        let mut counts = Counts::default();
        let pattern = format!("{}*", self.prefix);
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .call(
                    ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(BATCH)
                        .query_async(&mut connection),
                )
                .await?;
            let kind_is = |key: &str, kind: &str| key.get(self.prefix.len()..).is_some_and(|k| k.starts_with(kind));
            let keys: Vec<String> = keys
                .into_iter()
                .filter(|k| kind_is(k, "session:") || kind_is(k, "pat:"))
                .collect();
            if !keys.is_empty() {
                let values: Vec<Option<String>> = self.call(connection.mget(&keys)).await?;
                for (key, text) in keys.iter().zip(values) {
                    let Some(text) = text else { continue };
                    let text = text.strip_prefix('!').unwrap_or(&text);
                    if kind_is(key, "session:") {
                        let live = serde_json::from_str::<SessionRecord>(text).is_ok_and(|s| s.is_live(now_ms));
                        counts.sessions += usize::from(live);
                    } else {
                        let live = serde_json::from_str::<PatRecord>(text).is_ok_and(|p| p.is_live(now_ms));
                        counts.pats += usize::from(live);
                    }
                }
            }
            if next == 0 {
                return Ok(counts);
            }
            cursor = next;
        }
    }
}
