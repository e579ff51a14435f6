//! The in-process store (`store.kind = "memory"`): two `dashmap`s keyed by
//! token hash. Every operation is one shard-locked step, so single use is
//! atomic: of many concurrent exchanges of one PAT exactly one removes it.

use std::future::Future;
use std::time::Instant;

use dashmap::DashMap;

use super::{PatRecord, Revoked, Session, SessionView};
use crate::token::TokenHash;

/// Sessions and PATs of this process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pats: DashMap<TokenHash, PatRecord>,
    sessions: DashMap<TokenHash, Session>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps a minted PAT under its hash.
    pub fn insert_pat(&self, hash: TokenHash, record: PatRecord) {
        self.pats.insert(hash, record);
    }

    /// The PAT with this hash, if it exists, is scoped to `app_id` and is
    /// unexpired at `now`. With `single_use` it is removed in the same step,
    /// so it can never be taken twice.
    pub fn take_pat(&self, hash: &TokenHash, app_id: &str, single_use: bool, now: Instant) -> Option<PatRecord> {
        let record = if single_use {
            self.pats.remove_if(hash, |_, r| r.app_id == app_id).map(|(_, r)| r)?
        } else {
            self.pats.get(hash).filter(|r| r.app_id == app_id).map(|r| r.clone())?
        };
        (now < record.expires_at).then_some(record)
    }

    /// Keeps a new session under its token's hash.
    pub fn insert_session(&self, hash: TokenHash, session: Session) {
        self.sessions.insert(hash, session);
    }

    /// The session with this hash, if live at `now` and bound to `app_id`;
    /// the request counts as activity (sliding expiry).
    pub fn use_session(&self, hash: &TokenHash, app_id: &str, now: Instant) -> Option<SessionView> {
        let mut session = self.sessions.get_mut(hash)?;
        if session.identity.app_id != app_id || !session.is_live(now) {
            return None;
        }
        session.touch(now);
        Some(SessionView {
            identity: session.identity.clone(),
            assertion: session.assertion.clone(),
        })
    }

    /// A future that resolves when the session with this hash is revoked
    /// (at once if there is no such session).
    pub fn revoked(&self, hash: &TokenHash) -> Option<impl Future<Output = ()> + Send + 'static> {
        self.sessions.get(hash).map(|s| s.revoked())
    }

    /// Ends every session and unused PAT of `email` (for `app_id` only, when
    /// given), and signals the sessions' open tunnels.
    pub fn revoke(&self, email: &str, app_id: Option<&str>) -> Revoked {
        let matches = |e: &str, a: &str| e == email && app_id.is_none_or(|id| id == a);
        let mut revoked = Revoked::default();
        self.sessions.retain(|_, s| {
            let hit = matches(&s.identity.email, &s.identity.app_id);
            if hit {
                s.revoke();
                revoked.sessions += 1;
            }
            !hit
        });
        self.pats.retain(|_, p| {
            let hit = matches(&p.email, &p.app_id);
            revoked.tokens += usize::from(hit);
            !hit
        });
        revoked
    }

    /// Drops expired sessions and PATs; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let before = self.sessions.len() + self.pats.len();
        self.sessions.retain(|_, s| s.is_live(now));
        self.pats.retain(|_, p| now < p.expires_at);
        before - (self.sessions.len() + self.pats.len())
    }

    /// Live entries (sessions, PATs), for tests and metrics.
    pub fn len(&self) -> (usize, usize) {
        (self.sessions.len(), self.pats.len())
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.pats.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Identity;
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    const APP: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";
    const OTHER: &str = "00000000-0000-4000-8000-000000000000";

    fn pat(app: &str, now: Instant, ttl: u64) -> PatRecord {
        PatRecord {
            email: "u@example.com".into(),
            app_id: app.into(),
            session_idle: Duration::from_secs(60),
            expires_at: now + Duration::from_secs(ttl),
        }
    }

    fn session(app: &str, now: Instant, idle: u64, max: u64) -> Session {
        let identity = Identity {
            email: "u@example.com".into(),
            groups: vec![],
            app_id: app.into(),
        };
        Session::new(identity, Duration::from_secs(idle), Duration::from_secs(max), now)
    }

    #[test]
    fn single_use_pat_is_taken_once_and_only_for_its_app() {
        let store = MemoryStore::new();
        let now = Instant::now();
        store.insert_pat([1; 32], pat(APP, now, 60));
        assert!(store.take_pat(&[1; 32], OTHER, true, now).is_none());
        assert!(
            store.take_pat(&[1; 32], APP, true, now).is_some(),
            "a wrong-app try must not burn it"
        );
        assert!(store.take_pat(&[1; 32], APP, true, now).is_none());
    }

    #[test]
    fn reusable_pat_works_until_expiry() {
        let store = MemoryStore::new();
        let now = Instant::now();
        store.insert_pat([2; 32], pat(APP, now, 10));
        assert!(store.take_pat(&[2; 32], APP, false, now).is_some());
        assert!(store.take_pat(&[2; 32], APP, false, now).is_some());
        assert!(store
            .take_pat(&[2; 32], APP, false, now + Duration::from_secs(10))
            .is_none());
    }

    #[test]
    fn concurrent_takes_of_one_pat_yield_exactly_one() {
        let store = Arc::new(MemoryStore::new());
        let now = Instant::now();
        store.insert_pat([3; 32], pat(APP, now, 60));
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..50)
                .map(|_| s.spawn(|| usize::from(store.take_pat(&[3; 32], APP, true, now).is_some())))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(winners, 1);
    }

    #[test]
    fn session_idle_expiry_slides_but_never_past_max_lifetime() {
        let store = MemoryStore::new();
        let t0 = Instant::now();
        store.insert_session([4; 32], session(APP, t0, 10, 25));
        let s = |secs| t0 + Duration::from_secs(secs);
        assert!(store.use_session(&[4; 32], APP, s(9)).is_some());
        assert!(store.use_session(&[4; 32], APP, s(18)).is_some(), "slid to 19");
        assert!(store.use_session(&[4; 32], APP, s(24)).is_some(), "slid to the cap, 25");
        assert!(
            store.use_session(&[4; 32], APP, s(25)).is_none(),
            "capped at max lifetime"
        );
    }

    #[test]
    fn idle_session_expires() {
        let store = MemoryStore::new();
        let t0 = Instant::now();
        store.insert_session([5; 32], session(APP, t0, 10, 100));
        assert!(store.use_session(&[5; 32], APP, t0 + Duration::from_secs(10)).is_none());
    }

    #[test]
    fn session_is_refused_on_another_app() {
        let store = MemoryStore::new();
        let t0 = Instant::now();
        store.insert_session([6; 32], session(APP, t0, 10, 100));
        assert!(store.use_session(&[6; 32], OTHER, t0).is_none());
        assert!(store.use_session(&[6; 32], APP, t0).is_some());
    }

    #[tokio::test]
    async fn revoke_ends_sessions_and_pats_and_signals_tunnels() {
        let store = MemoryStore::new();
        let t0 = Instant::now();
        store.insert_session([7; 32], session(APP, t0, 10, 100));
        store.insert_session([8; 32], session(OTHER, t0, 10, 100));
        store.insert_pat([9; 32], pat(APP, t0, 60));
        let signal = store.revoked(&[7; 32]);
        assert_eq!(
            store.revoke("u@example.com", Some(APP)),
            Revoked { sessions: 1, tokens: 1 }
        );
        assert!(store.use_session(&[7; 32], APP, t0).is_none());
        assert!(store.use_session(&[8; 32], OTHER, t0).is_some());
        let signalled = tokio::time::timeout(Duration::from_secs(1), async move {
            if let Some(f) = signal {
                f.await
            }
        })
        .await;
        assert!(signalled.is_ok());
        assert_eq!(store.revoke("u@example.com", None), Revoked { sessions: 1, tokens: 0 });
    }

    #[test]
    fn sweep_drops_only_expired_entries() {
        let store = MemoryStore::new();
        let t0 = Instant::now();
        store.insert_session([10; 32], session(APP, t0, 10, 100));
        store.insert_session([11; 32], session(APP, t0, 100, 100));
        store.insert_pat([12; 32], pat(APP, t0, 5));
        assert_eq!(store.sweep(t0 + Duration::from_secs(20)), 2);
        assert_eq!(store.len(), (1, 0));
    }
}
