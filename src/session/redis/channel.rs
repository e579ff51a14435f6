//! What a replica keeps up with in the background: Redis's health (a
//! `PING` every second, so readiness follows it without traffic), and the
//! channel of ended sessions the other replicas publish.

use std::time::Duration;

use ::redis::RedisError;
use futures_util::StreamExt;
use tracing::debug;

use super::{RedisStore, HEALTH_EVERY};
use crate::session::Ended;
use crate::token::TokenHash;

/// `PING` every [`HEALTH_EVERY`], so readiness follows Redis even without
/// traffic; ends with the store.
pub(super) async fn check_health(store: std::sync::Weak<RedisStore>) {
    let mut interval = tokio::time::interval(HEALTH_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(store) = store.upgrade() else { return };
        let Ok(mut connection) = store.connection() else {
            continue;
        };
        let _ = store
            .call(::redis::cmd("PING").query_async::<()>(&mut connection))
            .await;
    }
}

/// Follows the channel of ended sessions: drops them from the store's cache
/// and tells this replica's listeners. After an interruption it cannot know
/// what it missed, so it tells them every session may have ended. Ends with
/// the store.
pub(super) async fn follow_channel(store: std::sync::Weak<RedisStore>) {
    let mut interrupted = false;
    loop {
        let messages = {
            let Some(store) = store.upgrade() else { return };
            let subscribed = async {
                let mut pubsub = store.client.get_async_pubsub().await?;
                pubsub.subscribe(store.channel()).await?;
                Ok::<_, RedisError>(pubsub)
            };
            match tokio::time::timeout(store.timeout.max(Duration::from_secs(1)), subscribed).await {
                Ok(Ok(pubsub)) => {
                    if interrupted {
                        store.cache.clear();
                        let _ = store.ended.send(Ended::Unknown);
                    }
                    Some(pubsub.into_on_message())
                }
                Ok(Err(_)) | Err(_) => None,
            }
        };
        if let Some(mut messages) = messages {
            debug!("following the channel of ended sessions");
            while let Some(message) = messages.next().await {
                let Some(store) = store.upgrade() else { return };
                let (from, hashes) = parse_ended(message.get_payload_bytes());
                if from == store.replica.as_bytes() {
                    continue;
                }
                store.forget(&hashes);
                if !hashes.is_empty() {
                    let _ = store.ended.send(Ended::Sessions(hashes.into()));
                }
            }
            debug!("the channel of ended sessions was interrupted");
        }
        interrupted = true;
        tokio::time::sleep(HEALTH_EVERY).await;
    }
}

/// A published message: the publishing replica, then the sessions' hashes.
pub(super) fn parse_ended(payload: &[u8]) -> (&[u8], Vec<TokenHash>) {
    let (from, hashes) = match payload.iter().position(|&b| b == b' ') {
        Some(space) => (&payload[..space], &payload[space + 1..]),
        None => (payload, &[][..]),
    };
    (from, parse_hashes(hashes))
}

/// Hex hashes, space-separated, as the revoke script publishes them.
pub(super) fn parse_hashes(payload: &[u8]) -> Vec<TokenHash> {
    payload
        .split(|&b| b == b' ')
        .filter_map(|hex| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(hex, &mut hash).ok()?;
            Some(hash)
        })
        .collect()
}
