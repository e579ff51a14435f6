//! The in-process store (`store.kind = "memory"`): `dashmap`s keyed by token
//! hash, plus an index from each user to the hashes of their PATs and
//! sessions so that revoking one user touches only that user's records.
//!
//! Every decision is one shard-locked step, so single use is atomic: of
//! many concurrent exchanges of one PAT exactly one claims it. Where the
//! index and a record map are both locked, the index entry is always taken
//! first, so a revocation and a concurrent insert for the same user are
//! ordered: the insert lands either before (and is revoked) or after — and
//! a session whose PAT a revocation removed meanwhile is not started.

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::broadcast;

use super::{Counts, Ended, PatRecord, Revoked, SessionRecord, Store, StoreError, Subject};
use crate::telemetry::audit::Refusal;
use crate::token::TokenHash;

/// Batches of ended sessions a listener may fall behind by before it is
/// told it lagged.
const ENDED_BACKLOG: usize = 1024;

/// A used PAT's mark: the first half of its hash.
type UsedMark = [u8; 16];

fn used_mark(hash: &TokenHash) -> UsedMark {
    let mut mark = [0; 16];
    mark.copy_from_slice(&hash[..16]);
    mark
}

/// A PAT's expiry as the mark keeps it: Unix seconds, rounded up (so the
/// mark never goes before the PAT would have), saturating in 2106.
fn mark_expiry(expires_ms: u64) -> u32 {
    u32::try_from(expires_ms.div_ceil(1_000)).unwrap_or(u32::MAX)
}

/// How many subjects (app, groups, attributes) of one user are kept for
/// new sessions to share; a user seen with more shares the latest ones.
const SUBJECTS_PER_USER: usize = 4;

/// The hashes one user owns, and the subjects their sessions share.
#[derive(Debug, Default)]
struct Owned {
    pats: HashSet<TokenHash>,
    sessions: HashSet<TokenHash>,
    /// The subjects of the user's latest sessions, latest last: a new
    /// session with an equal one points at it instead of its own copy.
    subjects: Vec<Arc<Subject>>,
}

impl Owned {
    fn is_empty(&self) -> bool {
        self.pats.is_empty() && self.sessions.is_empty()
    }

    /// Points `session` at the equal subject this user's sessions already
    /// share; else makes its subject one of the shared ones.
    fn share(&mut self, session: &mut SessionRecord) {
        if let Some(shared) = self.subjects.iter().find(|s| **s == session.subject) {
            session.subject = shared.clone();
            return;
        }
        if self.subjects.len() == SUBJECTS_PER_USER {
            self.subjects.remove(0);
        }
        self.subjects.push(session.subject.clone());
    }
}

/// A PAT as kept: its record, and whether an exchange has claimed it.
#[derive(Debug)]
struct Minted {
    record: PatRecord,
    claimed: bool,
}

/// Sessions and PATs of this process.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    pats: DashMap<TokenHash, Minted, crate::fast_hash::FastHash>,
    /// PATs whose session started, until they would have expired: all
    /// that is kept of them, so that a replay is known as one. Compact, as
    /// there is one per session: the hash's first 128 bits (a replay is
    /// only ever told apart from an unknown PAT by it) and the expiry in
    /// whole Unix seconds, rounded up.
    used: DashMap<UsedMark, u32>,
    sessions: DashMap<TokenHash, SessionRecord, crate::fast_hash::FastHash>,
    /// Lowercased email → what that user owns.
    by_user: DashMap<Arc<str>, Owned>,
    ended: broadcast::Sender<Ended>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            pats: DashMap::default(),
            used: DashMap::new(),
            sessions: DashMap::default(),
            by_user: DashMap::new(),
            ended: broadcast::channel(ENDED_BACKLOG).0,
        }
    }
}

impl MemoryStore {
    /// Sessions and PATs live at `now_ms`: a walk of both maps.
    fn live(&self, now_ms: u64) -> Counts {
        Counts {
            sessions: self.sessions.iter().filter(|s| s.is_live(now_ms)).count(),
            pats: self.pats.iter().filter(|p| p.record.is_live(now_ms)).count(),
        }
    }

    /// An empty store.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Tells the listeners that these sessions ended.
    fn announce(&self, sessions: Vec<TokenHash>) {
        if !sessions.is_empty() {
            // No listener (nothing tunnelled yet) is not a failure.
            let _ = self.ended.send(Ended::Sessions(sessions.into()));
        }
    }

    /// Forgets `hash` in `email`'s index entry, and the entry once empty.
    fn unindex(&self, email: &str, hash: &TokenHash) {
        if let Some(mut owned) = self.by_user.get_mut(email) {
            owned.pats.remove(hash);
            owned.sessions.remove(hash);
        }
        self.by_user.remove_if(email, |_, owned| owned.is_empty());
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn insert_pat(&self, hash: TokenHash, pat: PatRecord, _now_ms: u64) -> Result<(), StoreError> {
        let mut owned = self.by_user.entry(Arc::from(pat.email.as_str())).or_default();
        owned.pats.insert(hash);
        self.pats.insert(
            hash,
            Minted {
                record: pat,
                claimed: false,
            },
        );
        Ok(())
    }

    async fn take_pat(
        &self,
        hash: &TokenHash,
        app_id: &str,
        single_use: bool,
        now_ms: u64,
    ) -> Result<Result<PatRecord, Refusal>, StoreError> {
        let Some(mut pat) = self.pats.get_mut(hash) else {
            let used = self.used.contains_key(&used_mark(hash));
            return Ok(Err(if used { Refusal::Used } else { Refusal::Unknown }));
        };
        let refusal = if pat.claimed {
            Some(Refusal::Used)
        } else if !pat.record.is_live(now_ms) {
            Some(Refusal::Expired)
        } else if pat.record.app_id != app_id {
            Some(Refusal::WrongApp)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return Ok(Err(refusal));
        }
        // Claimed in the same shard-locked step: no other exchange gets it.
        pat.claimed = single_use;
        Ok(Ok(pat.record.clone()))
    }

    async fn start_session(
        &self,
        hash: TokenHash,
        mut session: SessionRecord,
        pat: &TokenHash,
        single_use: bool,
    ) -> Result<bool, StoreError> {
        // The index entry first, as a revocation takes it: the PAT is
        // either still there (the revocation comes after, and finds the
        // session) or gone (the revocation came first).
        let mut owned = self.by_user.entry(session.subject.email.as_str().into()).or_default();
        let email = owned.key().clone();
        let still_there = if single_use {
            match self.pats.remove_if(pat, |_, p| p.claimed) {
                Some((_, spent)) => {
                    self.used.insert(used_mark(pat), mark_expiry(spent.record.expires_ms));
                    true
                }
                None => false,
            }
        } else {
            self.pats.get(pat).is_some_and(|p| !p.claimed)
        };
        if still_there {
            if single_use {
                owned.pats.remove(pat);
            }
            owned.sessions.insert(hash);
            owned.share(&mut session);
            self.sessions.insert(hash, session);
        }
        drop(owned);
        self.by_user.remove_if(&*email, |_, owned| owned.is_empty());
        Ok(still_there)
    }

    async fn use_session(
        &self,
        hash: &TokenHash,
        app_id: &str,
        now_ms: u64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(mut session) = self.sessions.get_mut(hash) else {
            return Ok(None);
        };
        if !session.is_live(now_ms) {
            drop(session);
            // Ended now rather than at the next sweep (once: whoever
            // removes it says so).
            if let Some((_, s)) = self.sessions.remove_if(hash, |_, s| !s.is_live(now_ms)) {
                self.unindex(&s.subject.email, hash);
                self.announce(vec![*hash]);
                super::ended(hash, &s.subject.email, &s.subject.app_id, s.cap_ms, false, now_ms);
            }
            return Ok(None);
        }
        if &*session.subject.app_id != app_id {
            return Ok(None);
        }
        session.touch(now_ms);
        Ok(Some(session.clone()))
    }

    async fn revoke(&self, email: &str, app_id: Option<&str>) -> Result<Revoked, StoreError> {
        let in_scope = |app: &str| app_id.is_none_or(|id| id == app);
        let mut ended = Vec::new();
        let mut tokens = 0;
        if let Some(mut owned) = self.by_user.get_mut(email) {
            owned.sessions.retain(|hash| {
                if let Some((_, s)) = self.sessions.remove_if(hash, |_, s| in_scope(&s.subject.app_id)) {
                    super::ended(hash, email, &s.subject.app_id, s.cap_ms, true, 0);
                    ended.push(*hash);
                    return false;
                }
                // Kept only while its session exists (another app's).
                self.sessions.contains_key(hash)
            });
            owned.pats.retain(|hash| {
                if self.pats.remove_if(hash, |_, p| in_scope(&p.record.app_id)).is_some() {
                    tokens += 1;
                    return false;
                }
                self.pats.contains_key(hash)
            });
        }
        self.by_user.remove_if(email, |_, owned| owned.is_empty());
        let revoked = Revoked {
            sessions: ended.len(),
            tokens,
        };
        self.announce(ended);
        Ok(revoked)
    }

    async fn count(&self, now_ms: u64) -> Result<Counts, StoreError> {
        Ok(self.live(now_ms))
    }

    fn count_now(&self, now_ms: u64) -> Option<Counts> {
        Some(self.live(now_ms))
    }

    async fn sweep(&self, now_ms: u64) -> Result<usize, StoreError> {
        // Collected first and unindexed after: the index is never locked
        // while a record shard is (see the module doc).
        let mut dropped: Vec<(String, TokenHash)> = Vec::new();
        self.sessions.retain(|hash, s| {
            let live = s.is_live(now_ms);
            if !live {
                super::ended(hash, &s.subject.email, &s.subject.app_id, s.cap_ms, false, now_ms);
                dropped.push((s.subject.email.clone(), *hash));
            }
            live
        });
        let sessions = dropped.len();
        self.pats.retain(|hash, p| {
            let live = p.record.is_live(now_ms);
            if !live {
                dropped.push((std::mem::take(&mut p.record.email), *hash));
            }
            live
        });
        for (email, hash) in &dropped {
            self.unindex(email, hash);
        }
        let marks = self.used.len();
        self.used.retain(|_, expires_s| now_ms < u64::from(*expires_s) * 1_000);
        self.announce(dropped[..sessions].iter().map(|(_, hash)| *hash).collect());
        Ok(dropped.len() + (marks - self.used.len()))
    }

    fn ended_sessions(&self) -> broadcast::Receiver<Ended> {
        self.ended.subscribe()
    }
}

#[cfg(test)]
mod tests;
