//! `gateway.toml` → a validated runtime [`Config`] (SPEC §2).
//!
//! The file is parsed with `toml_edit`, which keeps every key's span, and then
//! walked section by section. Every problem found is collected — unknown keys,
//! wrong types, bad values, missing required keys — so `embedgate check` can
//! list them all at once, each with the file, line and key.
//!
//! Read in this order: this file holds the runtime types and [`load`];
//! `walk.rs` is the TOML walker that records each problem with its line;
//! `sections.rs` reads one section each; `checks.rs` holds the pure value
//! checks they share.

mod apps;
mod checks;
mod errors;
mod sections;
mod walk;

#[cfg(any(test, feature = "internals"))]
pub(crate) use apps::frame_ancestors_directive;
pub(crate) use apps::{host_name, pattern_matches, App, AppHost, Upstream, User};
pub use errors::{ConfigError, ConfigErrors};

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml_edit::{ImDocument, TableLike};

pub(crate) use checks::{check_attribute_key, check_email, is_uuid};
use walk::{config_dir, Cx, Section};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside it are resolved
    /// against its directory.
    pub(crate) source: PathBuf,
    /// `[server]`: listeners, timeouts, trusted proxies.
    pub(crate) server: Server,
    /// Absent: the public listener speaks plain HTTP.
    pub(crate) tls: Option<Tls>,
    /// Absent: a fresh signing key at each start.
    pub(crate) assertion: Option<Assertion>,
    /// `[api]`: who may call `/api/ext/*`.
    pub(crate) api: Api,
    /// `[pat]`: PAT and session expiry bounds.
    pub(crate) pat: Pat,
    /// `[session]`: the embed cookie.
    pub(crate) session: SessionConfig,
    /// `[rate_limit]`: quotas per minute.
    pub(crate) rate_limit: RateLimit,
    /// `[store]`: where sessions and PATs live.
    pub(crate) store: StoreConfig,
    /// `[identity]`: who the users are.
    pub(crate) identity: UserSource,
    /// `[log]`: what is logged.
    pub(crate) log: LogConfig,
    /// `[[users]]`, in file order.
    pub(crate) users: Vec<User>,
    /// `[[apps]]`, in file order.
    pub(crate) apps: Vec<App>,
    /// Absent: any path the gateway does not own is not found.
    pub(crate) passthrough: Option<Passthrough>,
    /// `[demo]`: the demo app and portal.
    pub(crate) demo: Demo,
    /// Lines of the keys checked after parsing (files, sockets), so those
    /// later errors can name their line too.
    pub(crate) lines: HashMap<&'static str, usize>,
}

impl Config {
    /// The line of a key checked after parsing (see [`LATE_KEYS`]).
    pub(crate) fn line_of(&self, key: &str) -> Option<usize> {
        self.lines.get(key).copied()
    }

    /// A problem found after parsing, at `key`'s line.
    pub(crate) fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.error_at(key, self.line_of(key), message)
    }

    /// A problem found after parsing, at a line known to the caller.
    pub(crate) fn error_at(&self, key: &str, line: Option<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.clone(),
            line,
            key: key.into(),
            message: message.into(),
        }
    }

    /// `server.worker_threads`: the runtime's worker count, 0 for one per
    /// core.
    pub fn worker_threads(&self) -> usize {
        self.server.worker_threads
    }
}

/// Keys whose values are only checked after parsing: files read and
/// sockets bound by the server.
pub(crate) const LATE_KEYS: [&str; 7] = [
    "assertion.key",
    "server.upstream_ca",
    "server.listen",
    "server.admin_listen",
    "demo.app_listen",
    "demo.portal_listen",
    "store.url",
];

/// `[server]`.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    /// The public listener.
    pub(crate) listen: SocketAddr,
    /// Base of every URL handed out; scheme + authority (+ optional path),
    /// stored without a trailing slash.
    pub(crate) public_url: String,
    /// `/healthz`, `/readyz`, `/metrics`; never the public port.
    pub(crate) admin_listen: Option<SocketAddr>,
    /// How long a shutdown waits for what is in flight.
    pub(crate) shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// A client's request head must arrive within this.
    pub(crate) header_read_timeout: Duration,
    /// Bound on opening a connection to an upstream.
    pub(crate) upstream_connect_timeout: Duration,
    /// An upstream's response head must arrive within this, else 504.
    pub(crate) upstream_timeout: Duration,
    /// 0: one per core.
    pub(crate) worker_threads: usize,
    /// Addition to SPEC §2: `tls_handshake_timeout_seconds`, default 10.
    pub(crate) tls_handshake_timeout: Duration,
    /// Addition to SPEC §2: `max_connections`, default 10000. Connections
    /// past it are closed at once.
    pub(crate) max_connections: usize,
    /// Addition to SPEC §2: `max_header_bytes`, default 65536 (at least 8192):
    /// the largest request head accepted.
    pub(crate) max_header_bytes: usize,
    /// Addition to SPEC §2: `upstream_ca`, a PEM file of CA certificates
    /// trusted for `https://` upstreams besides the Web PKI roots.
    pub(crate) upstream_ca: Option<PathBuf>,
    /// Addition to SPEC §2: `underscores_in_headers`, default false: a
    /// client's header names holding `_` are dropped (nginx's default);
    /// true keeps them, but never those that read as a name the gateway
    /// sets or trusts with `_` read as `-`.
    pub(crate) underscores_in_headers: bool,
    /// Addition to SPEC §2: `send_timeout_seconds`, default 60 (nginx's
    /// `send_timeout`): a response whose client takes none of its data for
    /// this long is reset, and its upstream connection closed.
    pub(crate) send_timeout: Duration,
    /// Addition to SPEC §2: `max_upstream_per_connection`, default 32
    /// (1..=256): how many requests of one client connection may wait on
    /// upstreams at once; more wait their turn.
    pub(crate) max_upstream_per_connection: usize,
}

/// `[tls]`: resolved absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tls {
    /// The main certificate: what a client gets when no other one matches
    /// its SNI name (or it sent none).
    pub(crate) main: CertFiles,
    /// `[[tls.certificates]]`: more certificates, picked by SNI.
    pub(crate) certificates: Vec<CertFiles>,
}

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertFiles {
    /// PEM certificate chain.
    pub(crate) cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: PathBuf,
    /// Its place in the file, for errors: `tls` or `tls.certificates[0]`.
    pub(crate) place: String,
    /// The lines of `cert` and `key`, when written.
    pub(crate) lines: [Option<usize>; 2],
}

/// `[assertion]`: resolved absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assertion {
    /// PKCS#8 PEM key signing `X-Embed-Assertion`.
    pub(crate) key: PathBuf,
    /// Keys that signed before `key` and are still published in the JWKS,
    /// so assertions they signed keep verifying (rotation).
    pub(crate) previous_keys: Vec<KeyFile>,
    /// Keys published in the JWKS before they sign, so caches know them
    /// when the switch comes (rotation).
    pub(crate) next_keys: Vec<KeyFile>,
}

/// A key file named in a list, with its place for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyFile {
    /// Resolved against the config's directory.
    pub(crate) path: PathBuf,
    /// `assertion.next_keys[0]`.
    pub(crate) key: String,
    /// Where it is written.
    pub(crate) line: Option<usize>,
}

/// `[api]`.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    /// SHA-256 of every accepted token that may do anything: those of
    /// `token_sha256` plus the hash of the `token_env` variable's value,
    /// read at load time.
    pub(crate) token_hashes: Vec<[u8; 32]>,
    /// `[[api.tokens]]`: named tokens, each with its scope.
    pub(crate) tokens: Vec<ApiToken>,
    /// Name of the environment variable, if any (the value is never kept).
    pub(crate) token_env: Option<String>,
    /// Largest request body an API call may send.
    pub(crate) max_body_bytes: usize,
}

/// One `[[api.tokens]]` entry: a named API token and what it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiToken {
    /// What logs (and metrics) call it; the token itself is never shown.
    pub(crate) name: String,
    /// SHA-256 of the token.
    pub(crate) hash: [u8; 32],
    /// Lowercased app ids it may mint and revoke for; `None`: every app.
    pub(crate) apps: Option<Vec<String>>,
    /// Lowercased `allow_users` patterns of the emails it may mint and
    /// revoke for; `None`: every email.
    pub(crate) emails: Option<Vec<String>>,
}

impl ApiToken {
    /// A token that may do anything, under `name`.
    pub(crate) fn unscoped(name: String, hash: [u8; 32]) -> ApiToken {
        ApiToken {
            name,
            hash,
            apps: None,
            emails: None,
        }
    }

    /// Whether it may act for this (lowercased) app id.
    pub(crate) fn reaches_app(&self, app_id: &str) -> bool {
        self.apps.as_ref().is_none_or(|apps| apps.iter().any(|a| a == app_id))
    }

    /// Whether it may act for this (lowercased) email.
    pub(crate) fn reaches_email(&self, email: &str) -> bool {
        self.emails
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| pattern_matches(p, email)))
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogConfig {
    /// One `embedgate::access` line per request (default on).
    pub(crate) access: bool,
    /// Where audit events also go, as JSON lines (resolved against the
    /// config file's directory); reopened on SIGHUP.
    pub(crate) audit_file: Option<std::path::PathBuf>,
}

/// `[identity] users`: who knows the users, the config or the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum UserSource {
    /// `users = "config"`: only `[[users]]` exist; the directory owns
    /// their groups.
    #[default]
    Config,
    /// `users = "portal"`: the authenticated portal vouches for any email
    /// and its groups at mint time.
    Portal,
}

/// `[pat]`.
#[derive(Debug, Clone)]
pub(crate) struct Pat {
    /// A requested `patExpiry` above this is refused.
    pub(crate) max_pat_expiry_seconds: u64,
    /// A requested `sessionExpiry` above this is refused.
    pub(crate) max_session_expiry_minutes: u64,
    /// `patExpiry` when the request gives none.
    pub(crate) default_pat_expiry_seconds: u64,
    /// `sessionExpiry` when the request gives none.
    pub(crate) default_session_expiry_minutes: u64,
    /// Whether a PAT is spent by its first exchange.
    pub(crate) single_use: bool,
}

/// `[session]`: the settings of the embed session cookie (the session
/// itself is `session::Session`).
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// Name of the session cookie.
    pub(crate) cookie_name: String,
    /// Hard cap on any session, however active.
    pub(crate) max_lifetime: Duration,
}

/// `[rate_limit]`: all at least 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateLimit {
    /// PAT mints per API token.
    pub(crate) pat_create_per_minute: u32,
    /// PAT mints per target email.
    pub(crate) pat_create_per_user_per_minute: u32,
    /// Failed PAT exchanges per client IP.
    pub(crate) bad_pat_per_minute: u32,
}

/// `[store]`: which store keeps sessions and PATs (the store itself lives in
/// `session`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreConfig {
    /// In this process only.
    Memory,
    /// Shared by replicas.
    Redis {
        /// `redis://` or `rediss://`; may hold a password, never logged.
        url: String,
        /// Bound on every call: past it, the request gets 503.
        timeout: Duration,
        /// Every key starts with it, so gateways can share one Redis.
        key_prefix: String,
    },
}

/// `[passthrough]`.
#[derive(Debug, Clone)]
pub(crate) struct Passthrough {
    /// Where every path the gateway does not own goes, untouched.
    pub(crate) upstream: Upstream,
}

/// `[demo]`.
#[derive(Debug, Clone)]
// Its addresses are read only by a build with the demo (without it, a
// config that enables it is refused, and the rest is still checked).
#[cfg_attr(not(feature = "demo"), allow(dead_code))]
pub(crate) struct Demo {
    /// Also serve the demo app and portal on loopback.
    pub(crate) enabled: bool,
    /// Addition to SPEC §2: where the demo app listens, default
    /// `127.0.0.1:3000` (what the shipped config's upstreams point at).
    pub(crate) app_listen: SocketAddr,
    /// Addition to SPEC §2: where the demo portal listens, default
    /// `127.0.0.1:3001` (another site than the gateway's `localhost`).
    pub(crate) portal_listen: SocketAddr,
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    walk_config(&text, path, Files::MustExist)
}

/// Validates `text` as if read from `path`.
///
/// Every problem is collected before returning, so the error list is the
/// whole story: a TOML syntax error (one entry, the parser stops there), or
/// every unknown key, wrong type, bad value and missing key of the file,
/// sorted by line.
#[cfg(any(test, feature = "internals"))]
pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    walk_config(text, path, Files::Unchecked)
}

/// Whether the walk looks for the files the config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Files {
    /// Every one must exist (but those the demo makes): what [`load`] asks,
    /// so that a missing file is reported with every other problem.
    MustExist,
    /// Not looked at: the text alone is checked (tests, fuzzing).
    #[cfg(any(test, feature = "internals"))]
    Unchecked,
}

fn walk_config(text: &str, path: &Path, files: Files) -> Result<Config, ConfigErrors> {
    let mut cx = Cx {
        file: path,
        text,
        dir: config_dir(path),
        errors: Vec::new(),
        files: Vec::new(),
    };
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let line = e.span().map(|s| cx.line_of(s.start));
            cx.error(line, "(syntax)", e.message().trim().replace('\n', "; "));
            return Err(ConfigErrors(cx.errors));
        }
    };
    let root = doc.as_table();

    let mut top = Section::new("", Some(root as &dyn TableLike), Some(1));
    let server = match top.section(&mut cx, "server") {
        Some(s) => Some(sections::server(s, &mut cx)),
        None => {
            if !top.has("server") {
                cx.error(None, "server", "required section missing");
            }
            None
        }
    };
    let tls = top.section(&mut cx, "tls").map(|s| sections::tls(s, &mut cx));
    let assertion = top
        .section(&mut cx, "assertion")
        .map(|s| sections::assertion(s, &mut cx));
    let (api, token_apps) = sections::api(top.section_or_empty(&mut cx, "api"), &mut cx);
    let pat = sections::pat(top.section_or_empty(&mut cx, "pat"), &mut cx);
    let session = sections::session(top.section_or_empty(&mut cx, "session"), &mut cx);
    let rate_limit = sections::rate_limit(top.section_or_empty(&mut cx, "rate_limit"), &mut cx);
    let identity = sections::identity(top.section_or_empty(&mut cx, "identity"), &mut cx);
    let log = sections::log(top.section_or_empty(&mut cx, "log"), &mut cx);
    let (store, redis_line) = sections::store(top.section_or_empty(&mut cx, "store"), &mut cx);
    let users = sections::users(&mut top, &mut cx);
    let main_url = server.as_ref().map_or("", |s| s.public_url.as_str());
    let apps = sections::apps(&mut top, &mut cx, main_url);
    sections::check_token_apps(&token_apps, &apps, &mut cx);
    let passthrough = top
        .section(&mut cx, "passthrough")
        .map(|s| sections::passthrough(s, &mut cx));
    let demo = sections::demo(top.section_or_empty(&mut cx, "demo"), &mut cx);
    top.finish(&mut cx);
    if files == Files::MustExist {
        cx.check_files(demo.enabled);
    }
    let lines = LATE_KEYS
        .iter()
        .filter_map(|&dotted| {
            let (section, key) = dotted.split_once('.')?;
            let (k, _) = root.get(section)?.as_table_like()?.get_key_value(key)?;
            Some((dotted, cx.line_of(k.span()?.start)))
        })
        .collect();

    // Replicas behind one Redis must sign identity assertions with one key,
    // or an upstream would reject what another replica signed.
    if matches!(store, StoreConfig::Redis { .. }) && assertion.is_none() {
        cx.error(
            redis_line,
            "assertion.key",
            "required with store.kind = \"redis\" (every replica must sign with the same key)",
        );
    }

    match server {
        Some(server) if cx.errors.is_empty() => Ok(Config {
            source: path.to_path_buf(),
            server,
            tls,
            assertion,
            api,
            pat,
            session,
            rate_limit,
            store,
            identity,
            log,
            users,
            apps,
            passthrough,
            demo,
            lines,
        }),
        _ => {
            // Read top to bottom; problems without a line come last.
            cx.errors.sort_by_key(|e| (e.line.is_none(), e.line));
            Err(ConfigErrors(cx.errors))
        }
    }
}
