//! The audit log: who opened which app, when, and what ended it — one event
//! per PAT mint, exchange, session end and revocation, on its own target
//! (`embedgate::audit`). Events go to stderr with every other line and, with
//! `[log] audit_file`, as JSON lines to a file of their own, reopened on
//! SIGHUP so that logrotate can move it.
//!
//! Emails are what an auditor needs, so they are here (and nowhere in the
//! metrics); secrets never are: an API token is named by its config name or,
//! unknown, by the first 8 hex digits of its SHA-256, a session by the same
//! fingerprint of its token's hash.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{info, Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use super::sink::{Sink, SinkGuard};
use crate::error::GatewayError;
use crate::token::TokenHash;

/// The audit log's target, as `RUST_LOG` names it.
pub(crate) const TARGET: &str = "embedgate::audit";

/// How many hex digits of a hash name a token or a session.
const FINGERPRINT_HEX: usize = 8;

/// The fingerprint of a token by its hash: 8 hex digits.
pub(crate) fn fingerprint(hash: &TokenHash) -> String {
    let mut hex = hex::encode(&hash[..FINGERPRINT_HEX / 2]);
    hex.truncate(FINGERPRINT_HEX);
    hex
}

/// Why an exchange was refused, as the audit log says it (the client is
/// told none of this: every bad PAT gets the same answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No such PAT (never minted, revoked, or dropped after it expired).
    Unknown,
    /// Past its `patExpiry`.
    Expired,
    /// Already exchanged (single use).
    Used,
    /// Minted for another app.
    WrongApp,
    /// Its user is no longer in the directory.
    UserGone,
    /// Its user may no longer open the app.
    AccessGone,
    /// The client exchanged too fast.
    RateLimited,
    /// Not a PAT at all.
    Malformed,
}

impl Refusal {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown",
            Refusal::Expired => "expired",
            Refusal::Used => "used",
            Refusal::WrongApp => "wrong_app",
            Refusal::UserGone => "user_gone",
            Refusal::AccessGone => "access_gone",
            Refusal::RateLimited => "rate_limited",
            Refusal::Malformed => "malformed",
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// No request within its `sessionExpiry`.
    Idle,
    /// `session.max_lifetime_minutes` reached.
    Lifetime,
    /// Revoked through the API.
    Revoked,
}

impl EndReason {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Lifetime => "lifetime",
            EndReason::Revoked => "revoked",
        }
    }
}

/// A refused call's outcome in the audit log, by its answer's status.
pub(crate) fn outcome(error: &GatewayError) -> &'static str {
    match error.status().as_u16() {
        400 | 422 => "invalid",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        408 => "timeout",
        413 => "too_large",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        503 => "store_unavailable",
        _ => "error",
    }
}

/// Who asked, for the events a request causes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) client: IpAddr,
}

/// A mint: `outcome` is `ok` or why it was refused; `token` the API
/// token's name or fingerprint.
pub(crate) fn mint(caller: Caller<'_>, token: &str, user: Option<&str>, app: Option<&str>, outcome: &str) {
    info!(
        target: "embedgate::audit",
        event = "mint",
        request_id = caller.request_id,
        client = %caller.client,
        token,
        user,
        app,
        outcome,
        "audit"
    );
}

/// An exchange that started `session` (its fingerprint).
pub(crate) fn exchange_ok(caller: Caller<'_>, user: &str, app: &str, session: &TokenHash) {
    info!(
        target: "embedgate::audit",
        event = "exchange",
        request_id = caller.request_id,
        client = %caller.client,
        user,
        app,
        session = fingerprint(session),
        outcome = "ok",
        "audit"
    );
}

/// An exchange refused (`outcome`: a [`Refusal`]'s name, or `error` for
/// the gateway's own fault); `user` when the PAT was found.
pub(crate) fn exchange_refused(caller: Caller<'_>, user: Option<&str>, app: &str, outcome: &str) {
    info!(
        target: "embedgate::audit",
        event = "exchange",
        request_id = caller.request_id,
        client = %caller.client,
        user,
        app,
        outcome,
        "audit"
    );
}

/// A session that ended.
pub(crate) fn session_end(user: &str, app: &str, session: &TokenHash, reason: EndReason) {
    info!(
        target: "embedgate::audit",
        event = "session_end",
        user,
        app,
        session = fingerprint(session),
        reason = reason.name(),
        "audit"
    );
}

/// A request that carried live sessions of its app and was refused all
/// the same: `reason` says why (`ambiguous_session`: two different ones,
/// so which one the browser meant cannot be told). Names every session's
/// user and fingerprint.
pub(crate) fn session_refused(caller: Caller<'_>, app: &str, sessions: &[(&str, &TokenHash)], reason: &str) {
    let users: Vec<&str> = sessions.iter().map(|(user, _)| *user).collect();
    let fingerprints: Vec<String> = sessions.iter().map(|(_, hash)| fingerprint(hash)).collect();
    info!(
        target: "embedgate::audit",
        event = "session_refused",
        request_id = caller.request_id,
        client = %caller.client,
        app,
        users = users.join(","),
        sessions = fingerprints.join(","),
        reason,
        "audit"
    );
}

/// A revocation call and what it ended (`app` absent: every app).
pub(crate) fn revoke(
    caller: Caller<'_>,
    token: &str,
    user: Option<&str>,
    app: Option<&str>,
    ended: Option<(usize, usize)>,
    outcome: &str,
) {
    info!(
        target: "embedgate::audit",
        event = "revoke",
        request_id = caller.request_id,
        client = %caller.client,
        token,
        user,
        app,
        sessions = ended.map(|e| e.0),
        pats = ended.map(|e| e.1),
        outcome,
        "audit"
    );
}

/// The audit file: its path and the sink that writes it.
struct AuditFile {
    path: PathBuf,
    sink: Sink,
    /// Held so the thread runs while the file is in use.
    _guard: SinkGuard,
    file: Arc<Mutex<File>>,
}

/// The audit file in use, if any.
static FILE: Mutex<Option<AuditFile>> = Mutex::new(None);
/// Lines dropped by the writers of audit files no longer in use.
static DROPPED_BEFORE: AtomicU64 = AtomicU64::new(0);

fn lock_file() -> std::sync::MutexGuard<'static, Option<AuditFile>> {
    FILE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Writes into whichever file is current, so a reopen takes effect for the
/// next batch.
struct Current(Arc<Mutex<File>>);

impl Write for Current {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).flush()
    }
}

/// Puts `[log] audit_file` in force: opens `path` for appending (creating
/// it), or stops writing a file when `None`. The same path again reopens
/// it, which is what SIGHUP does after logrotate moved the file.
pub(crate) fn open(path: Option<&Path>) -> std::io::Result<()> {
    let mut current = lock_file();
    match (path, current.as_ref()) {
        (None, _) => {
            if let Some(old) = current.take() {
                DROPPED_BEFORE.fetch_add(old.sink.dropped(), Ordering::Relaxed);
            }
        }
        (Some(path), Some(old)) if old.path == path => {
            let file = open_append(path)?;
            *old.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
        }
        (Some(path), _) => {
            let file = Arc::new(Mutex::new(open_append(path)?));
            let (sink, guard) = Sink::start(Box::new(Current(file.clone())), "embedgate-audit")?;
            if let Some(old) = current.replace(AuditFile {
                path: path.to_owned(),
                sink,
                _guard: guard,
                file,
            }) {
                DROPPED_BEFORE.fetch_add(old.sink.dropped(), Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Audit lines dropped because the file did not keep up.
pub(crate) fn dropped_lines() -> u64 {
    let now = lock_file().as_ref().map_or(0, |f| f.sink.dropped());
    now + DROPPED_BEFORE.load(Ordering::Relaxed)
}

/// The layer that writes audit events to the audit file as JSON lines.
pub(crate) struct FileLayer;

impl<S: Subscriber> Layer<S> for FileLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let file = lock_file();
        let Some(file) = file.as_ref() else {
            return;
        };
        let mut fields = Fields(serde_json::Map::new());
        fields.0.insert(
            "timestamp".into(),
            serde_json::Value::String(super::access::timestamp_string(std::time::SystemTime::now())),
        );
        fields.0.insert("level".into(), "INFO".into());
        fields.0.insert("target".into(), TARGET.into());
        event.record(&mut fields);
        let Ok(mut line) = serde_json::to_vec(&fields.0) else {
            return;
        };
        line.push(b'\n');
        file.sink.append(&line, true);
    }
}

/// An event's fields as JSON values.
struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Audit events as a test sees them.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex, PoisonError};

    use tracing::{Event, Subscriber};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    use super::{Fields, TARGET};

    /// The audit events logged on this thread while the guard lives.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<serde_json::Map<String, serde_json::Value>>>>);

    impl Captured {
        /// The events so far, each a JSON object of its fields.
        pub(crate) fn events(&self) -> Vec<serde_json::Value> {
            let events = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            events.iter().cloned().map(serde_json::Value::Object).collect()
        }
    }

    impl<S: Subscriber> Layer<S> for Captured {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            if event.metadata().target() == TARGET {
                let mut fields = Fields(serde_json::Map::new());
                event.record(&mut fields);
                self.0.lock().unwrap_or_else(PoisonError::into_inner).push(fields.0);
            }
        }
    }

    /// Captures the audit events of this thread (a current-thread runtime's
    /// test) until the guard drops.
    pub(crate) fn capture() -> (tracing::subscriber::DefaultGuard, Captured) {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(captured.clone());
        (tracing::subscriber::set_default(subscriber), captured)
    }
}
