//! PATs and embed sessions: what the store keeps (only hashes of the
//! secrets) and the rules on them — single use, expiry, the sliding idle
//! timeout capped by a hard lifetime, the app binding, revocation.

pub mod memory;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::assertion::Cached;

pub use memory::MemoryStore;

/// A minted, not yet exchanged PAT.
#[derive(Debug, Clone)]
pub struct PatRecord {
    /// Lowercased.
    pub email: String,
    /// Canonical (lowercase) app id.
    pub app_id: String,
    /// The session's idle timeout (`sessionExpiry`).
    pub session_idle: Duration,
    pub expires_at: Instant,
}

/// Who a session belongs to; fixed for its life.
#[derive(Debug)]
pub struct Identity {
    pub email: String,
    pub groups: Vec<String>,
    pub app_id: String,
}

/// A live embed session.
#[derive(Debug)]
pub struct Session {
    pub identity: Arc<Identity>,
    pub created: Instant,
    pub last_seen: Instant,
    /// `sessionExpiry`: each request moves `expires_at` to `now + idle`...
    pub idle: Duration,
    /// ...never past `created + max_lifetime`.
    pub max_lifetime: Duration,
    pub expires_at: Instant,
    /// Raised once on revocation; open tunnels of the session watch it.
    revoked: watch::Sender<bool>,
    /// The last assertion signed for this session, reused until near expiry.
    pub assertion: Arc<Mutex<Option<Cached>>>,
}

impl Session {
    /// A new session starting `now`.
    pub fn new(identity: Identity, idle: Duration, max_lifetime: Duration, now: Instant) -> Self {
        let (revoked, _) = watch::channel(false);
        let mut session = Session {
            identity: Arc::new(identity),
            created: now,
            last_seen: now,
            idle,
            max_lifetime,
            expires_at: now,
            revoked,
            assertion: Arc::new(Mutex::new(None)),
        };
        session.touch(now);
        session
    }

    /// Records a request at `now`: slides the idle expiry, capped.
    pub fn touch(&mut self, now: Instant) {
        self.last_seen = now;
        let cap = self.created + self.max_lifetime;
        self.expires_at = (now + self.idle).min(cap);
    }

    /// Whether the session is still valid at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    /// Resolves when the session is revoked.
    pub fn revoked(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.revoked.subscribe();
        async move {
            // The sender lives in the store; if the session is dropped
            // (swept or revoked) the wait ends too.
            let _ = rx.wait_for(|revoked| *revoked).await;
        }
    }

    fn revoke(&self) {
        self.revoked.send_replace(true);
    }
}

/// What a request through a valid session gets.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub identity: Arc<Identity>,
    pub assertion: Arc<Mutex<Option<Cached>>>,
}

/// What a revocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revoked {
    pub sessions: usize,
    pub tokens: usize,
}
