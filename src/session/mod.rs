//! PATs and embed sessions as a store keeps them: plain records with
//! wall-clock times (Unix milliseconds, so another process or replica can
//! read them), keyed by the SHA-256 of their token — never the token — and
//! the [`Store`] interface the handlers use, whatever holds the records.
//!
//! The rules on the records live here too: single use, expiry, the sliding
//! idle timeout capped by a hard lifetime (SPEC §4), the app binding and
//! revocation by user (SPEC §6). What a single process keeps beside them
//! (the open tunnels' revocation signals, the identity headers it last
//! built) is the embed layer's, keyed by the same hash.

mod memory;
mod redis;

#[cfg(test)]
pub(crate) mod conformance;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::error::GatewayError;
use crate::telemetry::audit::{self, EndReason, Refusal};
use crate::token::TokenHash;

pub(crate) use self::redis::RedisStore;
pub(crate) use memory::MemoryStore;

/// Vouched attributes: a flat JSON object of strings, numbers and booleans.
pub(crate) type Attributes = serde_json::Map<String, serde_json::Value>;

/// Now, in milliseconds since the Unix epoch: the clock of every record.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whole milliseconds of a duration, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A minted PAT that has not been exchanged (or, with `single_use = false`,
/// has not expired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PatRecord {
    /// Lowercased.
    pub(crate) email: String,
    /// The groups vouched for when it was minted. With users from the
    /// config file, the exchange reads the directory again instead.
    pub(crate) groups: Vec<String>,
    /// The attributes the portal vouched for (a flat JSON object).
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    pub(crate) attributes: Attributes,
    /// Canonical (lowercase) app id.
    pub(crate) app_id: String,
    /// The idle timeout of the session it will start (`sessionExpiry`).
    pub(crate) session_idle_ms: u64,
    /// Unusable from this instant on.
    pub(crate) expires_ms: u64,
}

impl PatRecord {
    /// Whether the PAT can still be exchanged at `now_ms`.
    pub(crate) fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }
}

/// Who a session is for and the app it opens: what never changes in a
/// session, so that the sessions of one user on one app can share one copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Subject {
    /// Lowercased.
    pub(crate) email: String,
    pub(crate) groups: Vec<String>,
    /// The attributes the portal vouched for at mint time.
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    pub(crate) attributes: Attributes,
    /// Canonical (lowercase) app id: the only app it opens.
    pub(crate) app_id: String,
}

/// A live embed session: who it is for and when it ends.
///
/// The subject is shared (`Arc`): the memory store gives all sessions of
/// one user on one app one copy, so a live session costs its times and a
/// pointer, and a request's clone of the record copies no string.
/// Serialised (for Redis) flat, as before: the subject's fields beside the
/// times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    #[serde(flatten)]
    pub(crate) subject: Arc<Subject>,
    /// The times are the stores' alone (their invariant: `expires_ms` never
    /// past `cap_ms`, moved only by [`SessionRecord::touch`]).
    pub(super) created_ms: u64,
    /// Unusable from this instant on; each use moves it to `now + idle`...
    pub(super) expires_ms: u64,
    /// ...(`sessionExpiry`)...
    pub(super) idle_ms: u64,
    /// ...never past this (`created + session.max_lifetime_minutes`).
    pub(super) cap_ms: u64,
}

impl SessionRecord {
    /// A session starting at `now_ms`, for the identity a PAT carried.
    pub(crate) fn start(pat: &PatRecord, groups: Vec<String>, max_lifetime: Duration, now_ms: u64) -> Self {
        let mut session = SessionRecord {
            subject: Arc::new(Subject {
                email: pat.email.clone(),
                groups,
                attributes: pat.attributes.clone(),
                app_id: pat.app_id.clone(),
            }),
            created_ms: now_ms,
            expires_ms: now_ms,
            idle_ms: pat.session_idle_ms,
            cap_ms: now_ms.saturating_add(millis(max_lifetime)),
        };
        session.touch(now_ms);
        session
    }

    /// A session of `subject` that never ends, for tests of what is built
    /// on a record.
    #[cfg(test)]
    pub(crate) fn unending(subject: Subject) -> Self {
        SessionRecord {
            subject: Arc::new(subject),
            created_ms: 0,
            expires_ms: u64::MAX,
            idle_ms: 60_000,
            cap_ms: u64::MAX,
        }
    }

    /// Records a request at `now_ms`: slides the idle expiry, capped.
    pub(crate) fn touch(&mut self, now_ms: u64) {
        self.expires_ms = now_ms.saturating_add(self.idle_ms).min(self.cap_ms);
    }

    /// Whether the session is valid at `now_ms`.
    pub(crate) fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }
}

/// Logs that a session ended, and why: revoked, or at `now_ms` past its
/// lifetime cap or its idle timeout.
pub(crate) fn ended(hash: &TokenHash, email: &str, app_id: &str, cap_ms: u64, revoked: bool, now_ms: u64) {
    let reason = if revoked {
        EndReason::Revoked
    } else if now_ms >= cap_ms {
        EndReason::Lifetime
    } else {
        EndReason::Idle
    };
    audit::session_end(email, app_id, hash, reason);
}

/// What a revocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Revoked {
    pub(crate) sessions: usize,
    pub(crate) tokens: usize,
}

/// How many records a store holds that are still live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub(crate) sessions: usize,
    pub(crate) pats: usize,
}

/// Sessions that ended, as every listener hears it (the embed layer closes
/// their open tunnels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// These sessions ended together: by one revocation, or one sweep of
    /// expired sessions.
    Sessions(Arc<[TokenHash]>),
    /// Some sessions may have ended unheard (a shared store's feed was
    /// interrupted): a listener should treat every session as ended.
    Unknown,
}

/// A store that could not answer: unreachable, too slow, or refusing.
/// Requests that need it get 503 (SPEC §7); the in-process store never
/// returns it.
#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub(crate) struct StoreError(#[source] pub(crate) Box<dyn std::error::Error + Send + Sync>);

impl From<StoreError> for GatewayError {
    fn from(error: StoreError) -> Self {
        GatewayError::StoreUnavailable(Box::new(error))
    }
}

/// Where PATs and sessions live. Every operation that decides something
/// (single use, the app binding, expiry) is one atomic step of the store,
/// so several handlers — or several replicas, with a shared store — can
/// never both win.
#[async_trait::async_trait]
pub(crate) trait Store: Send + Sync {
    /// Keeps a PAT minted at `now_ms` under its hash until it expires.
    async fn insert_pat(&self, hash: TokenHash, pat: PatRecord, now_ms: u64) -> Result<(), StoreError>;

    /// The PAT with this hash, if it exists, is scoped to `app_id` and is
    /// live at `now_ms`; else why not, for the audit log. With `single_use`
    /// it is claimed in the same step, so that it can never be taken twice
    /// (the claim ends with [`Store::start_session`], which leaves a mark
    /// that it was used until it would have expired, a revocation, or the
    /// PAT's expiry); a try for another app leaves it in place.
    async fn take_pat(
        &self,
        hash: &TokenHash,
        app_id: &str,
        single_use: bool,
        now_ms: u64,
    ) -> Result<Result<PatRecord, Refusal>, StoreError>;

    /// Keeps a new session under its token's hash, started from the PAT
    /// with hash `pat` that [`Store::take_pat`] just handed out — only if
    /// that PAT is still there, claimed (`single_use`) or still usable, in
    /// the same step. A revocation that ran between the two steps removed
    /// it, so the session is refused (`false`) rather than outliving the
    /// revocation.
    async fn start_session(
        &self,
        hash: TokenHash,
        session: SessionRecord,
        pat: &TokenHash,
        single_use: bool,
    ) -> Result<bool, StoreError>;

    /// The session with this hash, if it is live at `now_ms` and bound to
    /// `app_id`; the request counts as activity (sliding expiry, capped).
    /// A session found to have ended is logged to the audit log (once by
    /// the store that notices: see [`ended`]).
    async fn use_session(
        &self,
        hash: &TokenHash,
        app_id: &str,
        now_ms: u64,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Ends every session and unused PAT of `email` (for `app_id` only,
    /// when given), found through a per-user index rather than a scan,
    /// announces the ended sessions on [`Store::ended_sessions`] and logs
    /// each to the audit log.
    async fn revoke(&self, email: &str, app_id: Option<&str>) -> Result<Revoked, StoreError>;

    /// Sessions and PATs live at `now_ms`.
    async fn count(&self, now_ms: u64) -> Result<Counts, StoreError>;

    /// [`Store::count`] at once, for a store that can count without a
    /// round trip (the in-process one): `/metrics` asks at each scrape.
    /// `None`: the store's count is the sweep's.
    fn count_now(&self, now_ms: u64) -> Option<Counts> {
        let _ = now_ms;
        None
    }

    /// Drops what expired by `now_ms`, announcing the sessions on
    /// [`Store::ended_sessions`] and logging each to the audit log; returns
    /// how many records went. A store with native expiry has only the
    /// sessions this process served to look at.
    async fn sweep(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// Every session that ends from now on, revoked or swept after it
    /// expired, in batches as they end.
    fn ended_sessions(&self) -> broadcast::Receiver<Ended>;

    /// Whether the store answered its last check (a shared store that is
    /// unreachable is not; the in-process store always is).
    fn is_ready(&self) -> bool {
        true
    }

    /// Starts what the store runs in the background (a shared store's
    /// connection and its feed of ended sessions); needs the runtime.
    fn start(self: Arc<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store's failure answers 503 with the SPEC §3 error shape wherever
    /// a handler meets it (`?` converts it).
    #[test]
    fn store_errors_answer_503() {
        fn fails() -> Result<(), GatewayError> {
            Err(StoreError(Box::new(std::io::Error::other("connection refused"))))?;
            Ok(())
        }
        let response = fails().map_err(GatewayError::into_response).err();
        assert_eq!(response.map(|r| r.status().as_u16()), Some(503));
    }

    #[test]
    fn a_session_starts_with_the_pats_idle_timeout_under_its_cap() {
        let pat = PatRecord {
            email: "u@example.com".into(),
            groups: vec![],
            attributes: Attributes::new(),
            app_id: "a".into(),
            session_idle_ms: 60_000,
            expires_ms: 10,
        };
        let s = SessionRecord::start(&pat, vec!["g".into()], Duration::from_secs(30), 1_000);
        assert_eq!((s.created_ms, s.expires_ms, s.cap_ms), (1_000, 31_000, 31_000));
        assert_eq!(s.subject.groups, ["g"]);
        assert!(s.is_live(30_999) && !s.is_live(31_000));
    }

    /// The shared subject does not change what Redis holds: a record is
    /// the same flat JSON object as before, and one written by an older
    /// replica (no `attributes` when empty) reads back.
    #[test]
    fn a_session_record_serialises_flat_as_before() {
        let pat = PatRecord {
            email: "u@example.com".into(),
            groups: vec!["g".into()],
            attributes: Attributes::new(),
            app_id: "a".into(),
            session_idle_ms: 60_000,
            expires_ms: 10,
        };
        let s = SessionRecord::start(&pat, vec!["g".into()], Duration::from_secs(30), 1_000);
        let json = serde_json::to_value(&s).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "email": "u@example.com", "groups": ["g"], "app_id": "a",
                "created_ms": 1_000, "expires_ms": 31_000, "idle_ms": 60_000, "cap_ms": 31_000,
            })
        );
        let older = r#"{"email":"u@example.com","groups":["g"],"app_id":"a","created_ms":1000,"expires_ms":31000,"idle_ms":60000,"cap_ms":31000}"#;
        assert_eq!(serde_json::from_str::<SessionRecord>(older).expect("reads"), s);
    }
}
