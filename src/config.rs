//! `gateway.toml` → a validated runtime [`Config`] (SPEC §2).
//!
//! The file is parsed with `toml_edit`, which keeps every key's span, and then
//! walked section by section. Every problem found is collected — unknown keys,
//! wrong types, bad values, missing required keys — so `embedgate check` can
//! list them all at once, each with the file, line and key.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use sha2::{Digest, Sha256};
use toml_edit::{Array, ImDocument, Item, TableLike, Value};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside it are resolved
    /// against its directory.
    pub source: PathBuf,
    pub server: Server,
    /// Absent: the public listener speaks plain HTTP.
    pub tls: Option<Tls>,
    /// Absent: a fresh signing key at each start.
    pub assertion: Option<Assertion>,
    pub api: Api,
    pub pat: Pat,
    pub session: Session,
    pub rate_limit: RateLimit,
    pub store: Store,
    pub users: Vec<User>,
    pub apps: Vec<App>,
    pub passthrough: Option<Passthrough>,
    pub demo: Demo,
    /// Lines of the keys checked after parsing (files, sockets), so those
    /// later errors can name their line too.
    pub lines: std::collections::HashMap<&'static str, usize>,
}

impl Config {
    /// The line of a key checked after parsing (see [`LATE_KEYS`]).
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.lines.get(key).copied()
    }

    /// A problem found after parsing, at `key`'s line.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.clone(),
            line: self.line_of(key),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Keys whose values are only checked after parsing: files read and
/// sockets bound by the server.
pub const LATE_KEYS: [&str; 9] = [
    "tls.cert",
    "tls.key",
    "assertion.key",
    "server.upstream_ca",
    "server.listen",
    "server.admin_listen",
    "demo.app_listen",
    "demo.portal_listen",
    "store.kind",
];
/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// Base of every URL handed out; scheme + authority (+ optional path),
    /// stored without a trailing slash.
    pub public_url: String,
    pub admin_listen: Option<SocketAddr>,
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<IpNet>,
    pub header_read_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    /// 0: one per core.
    pub worker_threads: usize,
    /// Addition to SPEC §2: `tls_handshake_timeout_seconds`, default 10.
    pub tls_handshake_timeout: Duration,
    /// Addition to SPEC §2: `max_connections`, default 10000. Connections
    /// past it are closed at once.
    pub max_connections: usize,
    /// Addition to SPEC §2: `max_header_bytes`, default 65536 (at least 8192):
    /// the largest request head accepted.
    pub max_header_bytes: usize,
    /// Addition to SPEC §2: `upstream_ca`, a PEM file of CA certificates
    /// trusted for `https://` upstreams besides the Web PKI roots.
    pub upstream_ca: Option<PathBuf>,
}

/// `[tls]`: resolved absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[assertion]`: resolved absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub key: PathBuf,
}

/// `[api]`.
#[derive(Debug, Clone)]
pub struct Api {
    /// SHA-256 of every accepted token: those of `token_sha256` plus the hash
    /// of the `token_env` variable's value, read at load time.
    pub token_hashes: Vec<[u8; 32]>,
    /// Name of the environment variable, if any (the value is never kept).
    pub token_env: Option<String>,
    pub max_body_bytes: usize,
}

/// `[pat]`.
#[derive(Debug, Clone)]
pub struct Pat {
    pub max_pat_expiry_seconds: u64,
    pub max_session_expiry_minutes: u64,
    pub default_pat_expiry_seconds: u64,
    pub default_session_expiry_minutes: u64,
    pub single_use: bool,
}

/// `[session]`.
#[derive(Debug, Clone)]
pub struct Session {
    pub cookie_name: String,
    pub max_lifetime: Duration,
}

/// `[rate_limit]`: all at least 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub pat_create_per_minute: u32,
    pub pat_create_per_user_per_minute: u32,
    pub bad_pat_per_minute: u32,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    Memory,
    Redis { url: String },
}

/// One `[[users]]` entry.
#[derive(Debug, Clone)]
pub struct User {
    /// Lowercased.
    pub email: String,
    pub groups: Vec<String>,
}

/// One `[[apps]]` entry.
#[derive(Debug, Clone)]
pub struct App {
    /// Lowercased canonical UUID text.
    pub id: String,
    pub upstream: Upstream,
    /// Lowercased patterns: `*`, `*@domain`, or an exact email.
    pub allow_users: Vec<String>,
    pub allow_groups: Vec<String>,
    pub frame_ancestors: Vec<String>,
}

impl App {
    /// Whether an `allow_users` pattern (`*`, `*@domain`, exact email) or an
    /// `allow_groups` entry admits `user`. Emails are compared lowercased.
    pub fn admits(&self, user: &User) -> bool {
        let by_email = self.allow_users.iter().any(|pattern| match pattern.strip_prefix('*') {
            Some("") => true,
            Some(domain) => domain.starts_with('@') && user.email.ends_with(domain),
            None => *pattern == user.email,
        });
        by_email || user.groups.iter().any(|g| self.allow_groups.contains(g))
    }
}

/// `[passthrough]`.
#[derive(Debug, Clone)]
pub struct Passthrough {
    pub upstream: Upstream,
}

/// `[demo]`.
#[derive(Debug, Clone)]
pub struct Demo {
    pub enabled: bool,
    /// Addition to SPEC §2: where the demo app listens, default
    /// `127.0.0.1:3000` (what the shipped config's upstreams point at).
    pub app_listen: SocketAddr,
    /// Addition to SPEC §2: where the demo portal listens, default
    /// `127.0.0.1:3001` (another site than the gateway's `localhost`).
    pub portal_listen: SocketAddr,
}

/// A validated upstream base URL: `http://` or `https://`, an authority, an
/// optional path prefix, no query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub uri: http::Uri,
}

impl Upstream {
    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.uri.scheme_str().unwrap_or("http")
    }

    /// The authority (`host[:port]`), used as the upstream `Host`.
    pub fn authority(&self) -> &str {
        self.uri.authority().map(|a| a.as_str()).unwrap_or("")
    }

    /// The upstream's own path prefix without a trailing slash (`""` for none).
    pub fn base_path(&self) -> &str {
        self.uri.path().trim_end_matches('/')
    }
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `server.listen` or `apps[1].id`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.file.display(), line, self.key, self.message),
            None => write!(f, "{}: {}: {}", self.file.display(), self.key, self.message),
        }
    }
}

/// Every problem found in a config file (never empty).
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

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
    parse(&text, path)
}

/// Validates `text` as if read from `path`.
///
/// Every problem is collected before returning, so the error list is the
/// whole story: a TOML syntax error (one entry, the parser stops there), or
/// every unknown key, wrong type, bad value and missing key of the file,
/// sorted by line.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut cx = Cx {
        file: path,
        text,
        dir: config_dir(path),
        errors: Vec::new(),
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
        Some(s) => Some(server(s, &mut cx)),
        None => {
            if !top.has("server") {
                cx.error(None, "server", "required section missing");
            }
            None
        }
    };
    let tls = top.section(&mut cx, "tls").map(|s| tls(s, &mut cx));
    let assertion = top.section(&mut cx, "assertion").map(|s| assertion(s, &mut cx));
    let api = api(top.section_or_empty(&mut cx, "api"), &mut cx);
    let pat = pat(top.section_or_empty(&mut cx, "pat"), &mut cx);
    let session = session(top.section_or_empty(&mut cx, "session"), &mut cx);
    let rate_limit = rate_limit(top.section_or_empty(&mut cx, "rate_limit"), &mut cx);
    let (store, redis_line) = store(top.section_or_empty(&mut cx, "store"), &mut cx);
    let users = users(&mut top, &mut cx);
    let apps = apps(&mut top, &mut cx);
    let passthrough = top.section(&mut cx, "passthrough").map(|s| passthrough(s, &mut cx));
    let demo = demo(top.section_or_empty(&mut cx, "demo"), &mut cx);
    top.finish(&mut cx);
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
    if matches!(store, Store::Redis { .. }) && assertion.is_none() {
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

/// Upper bound on any duration key: a year is long past any sane timeout,
/// and bounding it keeps `Instant + Duration` from overflowing later.
const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;
const MAX_MINUTES: u64 = MAX_SECONDS / 60;

fn server(mut s: Section<'_>, cx: &mut Cx<'_>) -> Server {
    let listen_given = s.has("listen");
    let listen = s.socket_addr(cx, "listen");
    // A bad `listen` is already reported; comparing against it would only
    // add a confusing second error.
    let listen_known = listen.is_some() || !listen_given;
    let listen = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443)));
    let public_url = match s.required_str(cx, "public_url") {
        Some(f) => match check_http_url(f.value) {
            Ok(_) => f.value.trim_end_matches('/').to_string(),
            Err(why) => {
                cx.error_at(&f, why);
                String::new()
            }
        },
        None => String::new(),
    };
    let admin_listen = s.socket_addr_field(cx, "admin_listen").map(|f| {
        let admin = f.value;
        // /metrics and /readyz must never be reachable on the public port.
        if listen_known && admin.port() != 0 && admin.port() == listen.port() && same_host(admin.ip(), listen.ip()) {
            cx.error_at(&f, format!("must not be the public listener ({listen})"));
        }
        admin
    });
    let shutdown_grace = s.seconds(cx, "shutdown_grace_seconds", 30, 0);
    let trusted_proxies = s.list(cx, "trusted_proxies", parse_cidr);
    let header_read_timeout = s.seconds(cx, "header_read_timeout_seconds", 10, 1);
    let upstream_connect_timeout = s.seconds(cx, "upstream_connect_timeout_seconds", 5, 1);
    let upstream_timeout = s.seconds(cx, "upstream_timeout_seconds", 60, 1);
    let worker_threads = s.uint(cx, "worker_threads", 0, 0, 4096) as usize;
    let tls_handshake_timeout = s.seconds(cx, "tls_handshake_timeout_seconds", 10, 1);
    let max_connections = s.uint(cx, "max_connections", 10_000, 1, 10_000_000) as usize;
    let max_header_bytes = s.uint(cx, "max_header_bytes", 65_536, 8192, 1 << 20) as usize;
    let upstream_ca = s.str(cx, "upstream_ca").and_then(|f| cx.resolve(&f));
    s.finish(cx);
    Server {
        listen,
        public_url,
        admin_listen,
        shutdown_grace,
        trusted_proxies,
        header_read_timeout,
        upstream_connect_timeout,
        upstream_timeout,
        worker_threads,
        tls_handshake_timeout,
        max_connections,
        max_header_bytes,
        upstream_ca,
    }
}

fn tls(mut s: Section<'_>, cx: &mut Cx<'_>) -> Tls {
    let cert = s.path(cx, "cert").unwrap_or_default();
    let key = s.path(cx, "key").unwrap_or_default();
    s.finish(cx);
    Tls { cert, key }
}

fn assertion(mut s: Section<'_>, cx: &mut Cx<'_>) -> Assertion {
    let key = s.path(cx, "key").unwrap_or_default();
    s.finish(cx);
    Assertion { key }
}

fn api(mut s: Section<'_>, cx: &mut Cx<'_>) -> Api {
    let mut token_hashes = s.list(cx, "token_sha256", decode_sha256_hex);
    let token_env = s.str(cx, "token_env").and_then(|f| {
        if f.value.is_empty() || f.value.contains(['=', '\0']) {
            cx.error_at(&f, "expected the name of an environment variable");
            return None;
        }
        // The value is hashed at once and dropped; it is never kept or shown.
        match std::env::var(f.value) {
            Ok(v) if !v.is_empty() => {
                token_hashes.push(Sha256::digest(v.as_bytes()).into());
            }
            Ok(_) => cx.error_at(&f, format!("environment variable {} is empty", f.value)),
            Err(std::env::VarError::NotPresent) => {
                cx.error_at(&f, format!("environment variable {} is not set", f.value))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                cx.error_at(&f, format!("environment variable {} is not valid UTF-8", f.value))
            }
        }
        Some(f.value.to_string())
    });
    let max_body_bytes = s.uint(cx, "max_body_bytes", 65_536, 1, 1 << 20) as usize;
    s.finish(cx);
    Api {
        token_hashes,
        token_env,
        max_body_bytes,
    }
}

fn pat(mut s: Section<'_>, cx: &mut Cx<'_>) -> Pat {
    let max_pat = s.uint_field(cx, "max_pat_expiry_seconds", 86_400, 1, MAX_SECONDS);
    let max_session = s.uint_field(cx, "max_session_expiry_minutes", 1440, 1, MAX_MINUTES);
    let default_pat = s.uint_field(cx, "default_pat_expiry_seconds", 3600, 1, MAX_SECONDS);
    let default_session = s.uint_field(cx, "default_session_expiry_minutes", 60, 1, MAX_MINUTES);
    let single_use = s.bool(cx, "single_use").unwrap_or(true);
    for (default, max, max_name) in [
        (&default_pat, &max_pat, "max_pat_expiry_seconds"),
        (&default_session, &max_session, "max_session_expiry_minutes"),
    ] {
        if default.value > max.value {
            // An implicit default has no line of its own: point at the max.
            cx.error(
                default.line.or(max.line),
                default.key.clone(),
                format!("{} is above {max_name} ({})", default.value, max.value),
            );
        }
    }
    s.finish(cx);
    Pat {
        max_pat_expiry_seconds: max_pat.value,
        max_session_expiry_minutes: max_session.value,
        default_pat_expiry_seconds: default_pat.value,
        default_session_expiry_minutes: default_session.value,
        single_use,
    }
}

fn session(mut s: Section<'_>, cx: &mut Cx<'_>) -> Session {
    let cookie_name = match s.str(cx, "cookie_name") {
        Some(f) => match check_cookie_name(f.value) {
            Ok(()) => f.value.to_string(),
            Err(why) => {
                cx.error_at(&f, why);
                String::new()
            }
        },
        None => "embedgate_session".to_string(),
    };
    let minutes = s.uint(cx, "max_lifetime_minutes", 720, 1, MAX_MINUTES);
    s.finish(cx);
    Session {
        cookie_name,
        max_lifetime: Duration::from_secs(minutes * 60),
    }
}

fn rate_limit(mut s: Section<'_>, cx: &mut Cx<'_>) -> RateLimit {
    let max = u64::from(u32::MAX);
    let mut per_minute = |key, default| s.uint(cx, key, default, 1, max) as u32;
    let pat_create_per_minute = per_minute("pat_create_per_minute", 60);
    let pat_create_per_user_per_minute = per_minute("pat_create_per_user_per_minute", 10);
    let bad_pat_per_minute = per_minute("bad_pat_per_minute", 30);
    s.finish(cx);
    RateLimit {
        pat_create_per_minute,
        pat_create_per_user_per_minute,
        bad_pat_per_minute,
    }
}

/// The store, and the line that chose Redis (for the assertion-key check).
fn store(mut s: Section<'_>, cx: &mut Cx<'_>) -> (Store, Option<usize>) {
    enum Kind {
        Memory,
        Redis(Option<usize>),
        /// Already reported; whether `url` belongs cannot be said.
        Bad,
    }
    let kind = match s.str(cx, "kind") {
        None if s.has("kind") => Kind::Bad,
        None => Kind::Memory,
        Some(f) if f.value == "memory" => Kind::Memory,
        Some(f) if f.value == "redis" => Kind::Redis(f.line),
        Some(f) => {
            cx.error_at(&f, format!("expected \"memory\" or \"redis\", found {:?}", f.value));
            Kind::Bad
        }
    };
    let (store, redis_line) = match kind {
        Kind::Redis(line) => {
            let url = s.required_str(cx, "url").map_or_else(String::new, |f| {
                let scheme_ok = ["redis://", "rediss://"]
                    .iter()
                    .any(|p| f.value.len() > p.len() && f.value.starts_with(p));
                if !scheme_ok {
                    // The URL may hold a password: do not echo it.
                    cx.error_at(&f, "expected a redis:// or rediss:// URL");
                }
                f.value.to_string()
            });
            (Store::Redis { url }, line)
        }
        Kind::Memory => {
            if let Some(f) = s.entry(cx, "url") {
                cx.error_at(&f, "only with kind = \"redis\"");
            }
            (Store::Memory, None)
        }
        Kind::Bad => {
            s.entry(cx, "url");
            (Store::Memory, None)
        }
    };
    s.finish(cx);
    (store, redis_line)
}

fn users(top: &mut Section<'_>, cx: &mut Cx<'_>) -> Vec<User> {
    let mut users: Vec<User> = Vec::new();
    for mut s in top.array_of_tables(cx, "users") {
        let email = match s.required_str(cx, "email") {
            Some(f) => match check_email(f.value) {
                Ok(()) => {
                    let email = f.value.to_ascii_lowercase();
                    if let Some(first) = users.iter().position(|u| u.email == email) {
                        cx.error_at(&f, format!("duplicate of users[{first}].email"));
                    }
                    email
                }
                Err(why) => {
                    cx.error_at(&f, why);
                    String::new()
                }
            },
            None => String::new(),
        };
        let groups = s.list(cx, "groups", check_group);
        s.finish(cx);
        users.push(User { email, groups });
    }
    users
}

fn apps(top: &mut Section<'_>, cx: &mut Cx<'_>) -> Vec<App> {
    let mut apps: Vec<App> = Vec::new();
    for mut s in top.array_of_tables(cx, "apps") {
        let id = match s.required_str(cx, "id") {
            Some(f) if is_uuid(f.value) => {
                let id = f.value.to_ascii_lowercase();
                if let Some(first) = apps.iter().position(|a| a.id == id) {
                    cx.error_at(&f, format!("duplicate of apps[{first}].id"));
                }
                id
            }
            Some(f) => {
                cx.error_at(
                    &f,
                    format!("expected a UUID (8-4-4-4-12 hex digits), found {:?}", f.value),
                );
                String::new()
            }
            None => String::new(),
        };
        let upstream = s.upstream(cx, "upstream");
        let allow_users = s.list(cx, "allow_users", check_user_pattern);
        let allow_groups = s.list(cx, "allow_groups", check_group);
        let frame_ancestors = s.list(cx, "frame_ancestors", check_csp_source);
        s.finish(cx);
        apps.push(App {
            id,
            upstream,
            allow_users,
            allow_groups,
            frame_ancestors,
        });
    }
    apps
}

fn passthrough(mut s: Section<'_>, cx: &mut Cx<'_>) -> Passthrough {
    let upstream = s.upstream(cx, "upstream");
    s.finish(cx);
    Passthrough { upstream }
}

fn demo(mut s: Section<'_>, cx: &mut Cx<'_>) -> Demo {
    let enabled = s.bool(cx, "enabled").unwrap_or(false);
    let app_listen = s
        .socket_addr(cx, "app_listen")
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000)));
    let portal_listen = s
        .socket_addr(cx, "portal_listen")
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3001)));
    s.finish(cx);
    Demo {
        enabled,
        app_listen,
        portal_listen,
    }
}

// ---------------------------------------------------------------------------
// The walk: where errors go, and a reader for one table.

/// What every check needs: the file (for messages and relative paths), its
/// text (for line numbers) and the errors found so far.
struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
    dir: PathBuf,
    errors: Vec<ConfigError>,
}

impl Cx<'_> {
    /// 1-based line of a byte offset (clamped, so any span is safe).
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn line(&self, span: Option<Range<usize>>) -> Option<usize> {
        span.map(|s| self.line_of(s.start))
    }

    fn error(&mut self, line: Option<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// A file path from the file, resolved against the file's directory.
    /// Existence is not checked here: the demo makes its files at first
    /// start, and the server reports a missing one.
    fn resolve(&mut self, f: &Field<&str>) -> Option<PathBuf> {
        if f.value.is_empty() {
            self.error_at(f, "must not be empty");
            return None;
        }
        Some(self.dir.join(f.value))
    }

    fn error_at<T>(&mut self, field: &Field<T>, message: impl Into<String>) {
        self.error(field.line, field.key.clone(), message);
    }
}

/// A value read from the file, with where it was.
struct Field<T> {
    value: T,
    /// Dotted path, e.g. `apps[1].id` or `server.trusted_proxies[2]`.
    key: String,
    line: Option<usize>,
}

/// Reads one table: each getter marks its key as known, and [`finish`]
/// reports every key nobody asked for.
///
/// [`finish`]: Section::finish
struct Section<'a> {
    /// `server`, `apps[1]`; empty for the root.
    path: String,
    /// `None` for an absent optional section: every key reads as absent.
    table: Option<&'a dyn TableLike>,
    /// The header's line, for "missing key" errors.
    line: Option<usize>,
    known: Vec<&'static str>,
}

impl<'a> Section<'a> {
    fn new(path: impl Into<String>, table: Option<&'a dyn TableLike>, line: Option<usize>) -> Self {
        Section {
            path: path.into(),
            table,
            line,
            known: Vec::new(),
        }
    }

    /// The dotted path of `name` in this table.
    fn key(&self, name: &str) -> String {
        let name = display_key(name);
        if self.path.is_empty() {
            name
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The item at `name`, marked as known, with its key path and line.
    fn entry(&mut self, cx: &Cx<'_>, name: &'static str) -> Option<Field<&'a Item>> {
        self.known.push(name);
        let (key, item) = self.table?.get_key_value(name)?;
        let line = cx.line(key.span().or_else(|| item.span())).or(self.line);
        Some(Field {
            value: item,
            key: self.key(name),
            line,
        })
    }

    fn missing(&self, cx: &mut Cx<'_>, name: &str) {
        cx.error(self.line, self.key(name), "required key missing");
    }

    fn wrong_type<T>(cx: &mut Cx<'_>, f: &Field<T>, expected: &str, item: &Item) {
        cx.error_at(f, format!("expected {expected}, found {}", describe(item)));
    }

    fn str(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Field<&'a str>> {
        let f = self.entry(cx, name)?;
        match f.value.as_str() {
            Some(v) => Some(Field {
                value: v,
                key: f.key,
                line: f.line,
            }),
            None => {
                Self::wrong_type(cx, &f, "a string", f.value);
                None
            }
        }
    }

    /// Like [`str`](Self::str), and reports the key missing when absent.
    fn required_str(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Field<&'a str>> {
        let f = self.str(cx, name);
        if f.is_none() && !self.has(name) {
            self.missing(cx, name);
        }
        f
    }

    fn bool(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<bool> {
        let f = self.entry(cx, name)?;
        let v = f.value.as_bool();
        if v.is_none() {
            Self::wrong_type(cx, &f, "a boolean", f.value);
        }
        v
    }

    /// An integer in `min..=max`, or `default` when absent (or wrong, with
    /// the error recorded).
    fn uint_field(&mut self, cx: &mut Cx<'_>, name: &'static str, default: u64, min: u64, max: u64) -> Field<u64> {
        let Some(f) = self.entry(cx, name) else {
            return Field {
                value: default,
                key: self.key(name),
                line: None,
            };
        };
        let value = match f.value.as_integer() {
            None => {
                Self::wrong_type(cx, &f, "an integer", f.value);
                default
            }
            Some(n) if n < 0 => {
                cx.error_at(&f, format!("must not be negative, found {n}"));
                default
            }
            Some(n) if (n as u64) < min => {
                cx.error_at(&f, format!("must be at least {min}, found {n}"));
                default
            }
            Some(n) if (n as u64) > max => {
                cx.error_at(&f, format!("must be at most {max}, found {n}"));
                default
            }
            Some(n) => n as u64,
        };
        Field {
            value,
            key: f.key,
            line: f.line,
        }
    }

    fn uint(&mut self, cx: &mut Cx<'_>, name: &'static str, default: u64, min: u64, max: u64) -> u64 {
        self.uint_field(cx, name, default, min, max).value
    }

    fn seconds(&mut self, cx: &mut Cx<'_>, name: &'static str, default: u64, min: u64) -> Duration {
        Duration::from_secs(self.uint(cx, name, default, min, MAX_SECONDS))
    }

    fn socket_addr(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<SocketAddr> {
        self.socket_addr_field(cx, name).map(|f| f.value)
    }

    fn socket_addr_field(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Field<SocketAddr>> {
        let f = self.str(cx, name)?;
        match f.value.parse() {
            Ok(addr) => Some(Field {
                value: addr,
                key: f.key,
                line: f.line,
            }),
            Err(_) => {
                cx.error_at(
                    &f,
                    format!("expected IP:port (e.g. 127.0.0.1:8443), found {:?}", f.value),
                );
                None
            }
        }
    }

    /// A required file path, resolved against the config file's directory.
    fn path(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<PathBuf> {
        let f = self.required_str(cx, name)?;
        cx.resolve(&f)
    }

    fn upstream(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Upstream {
        let placeholder = Upstream {
            uri: http::Uri::default(),
        };
        let Some(f) = self.required_str(cx, name) else {
            return placeholder;
        };
        match check_http_url(f.value) {
            Ok(uri) => Upstream { uri },
            Err(why) => {
                cx.error_at(&f, why);
                placeholder
            }
        }
    }

    fn has(&self, name: &str) -> bool {
        self.table.is_some_and(|t| t.contains_key(name))
    }

    fn array(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Field<&'a Array>> {
        let f = self.entry(cx, name)?;
        match f.value.as_array() {
            Some(a) => Some(Field {
                value: a,
                key: f.key,
                line: f.line,
            }),
            None => {
                Self::wrong_type(cx, &f, "an array", f.value);
                None
            }
        }
    }

    /// An array of strings, each turned into a `T` by `check` or reported
    /// (in order) at its own path and line, e.g. `apps[0].allow_users[2]`.
    fn list<T>(&mut self, cx: &mut Cx<'_>, name: &'static str, check: impl Fn(&str) -> Result<T, String>) -> Vec<T> {
        let Some(array) = self.array(cx, name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, v) in array.value.iter().enumerate() {
            let key = format!("{}[{i}]", array.key);
            let line = cx.line(v.span()).or(array.line);
            let result = match v.as_str() {
                Some(s) => check(s),
                None => Err(format!("expected a string, found {}", describe_value(v))),
            };
            match result {
                Ok(t) => out.push(t),
                Err(why) => cx.error(line, key, why),
            }
        }
        out
    }

    /// A sub-table such as `[server]`; `None` when absent or not a table
    /// (the latter recorded).
    fn section(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Option<Section<'a>> {
        let f = self.entry(cx, name)?;
        match f.value.as_table_like() {
            Some(t) => {
                // A `[name]` header's table span starts at the header.
                let line = match f.value {
                    Item::Table(t) => cx.line(t.span()),
                    _ => None,
                }
                .or(f.line);
                Some(Section::new(f.key, Some(t), line))
            }
            None => {
                Self::wrong_type(cx, &f, "a table", f.value);
                None
            }
        }
    }

    /// Like [`section`](Self::section), but an absent section reads as empty
    /// so its defaults apply.
    fn section_or_empty(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Section<'a> {
        self.section(cx, name)
            .unwrap_or_else(|| Section::new(self.key(name), None, None))
    }

    /// `[[name]]` entries (or an inline array of inline tables), as
    /// sections named `name[i]`.
    fn array_of_tables(&mut self, cx: &mut Cx<'_>, name: &'static str) -> Vec<Section<'a>> {
        let Some(f) = self.entry(cx, name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match f.value {
            Item::ArrayOfTables(aot) => {
                for (i, t) in aot.iter().enumerate() {
                    let line = cx.line(t.span()).or(f.line);
                    out.push(Section::new(format!("{}[{i}]", f.key), Some(t as &dyn TableLike), line));
                }
            }
            Item::Value(Value::Array(array)) => {
                for (i, v) in array.iter().enumerate() {
                    let key = format!("{}[{i}]", f.key);
                    let line = cx.line(v.span()).or(f.line);
                    match v.as_inline_table() {
                        Some(t) => out.push(Section::new(key, Some(t as &dyn TableLike), line)),
                        None => cx.error(line, key, format!("expected a table, found {}", describe_value(v))),
                    }
                }
            }
            other => cx.error_at(
                &f,
                format!("expected an array of tables ([[{name}]]), found {}", describe(other)),
            ),
        }
        out
    }

    /// Reports every key of the table that no getter asked for.
    fn finish(&self, cx: &mut Cx<'_>) {
        let Some(table) = self.table else { return };
        for (name, item) in table.iter() {
            if self.known.contains(&name) {
                continue;
            }
            let span = table
                .get_key_value(name)
                .and_then(|(k, _)| k.span())
                .or_else(|| item.span());
            let line = cx.line(span).or(self.line);
            let what = if self.path.is_empty() && item.is_table_like() {
                "unknown section"
            } else {
                "unknown key"
            };
            cx.error(line, self.key(name), what);
        }
    }
}

/// "a string", "an integer", … for type errors.
fn describe(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => describe_value(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

fn describe_value(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "an inline table",
    }
}

/// A key as TOML would write it: bare when it can be, quoted otherwise (so a
/// key with odd characters cannot garble the message).
fn display_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// The directory relative paths in the file are resolved against: the
/// file's own, made absolute with the working directory when it can be.
fn config_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.is_absolute() {
        return dir;
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(dir),
        Err(_) => dir,
    }
}

// ---------------------------------------------------------------------------
// Value checks: pure functions, each returning why a value is refused.

/// An absolute `http://` or `https://` URL with a host and no userinfo,
/// query or fragment (the `http` crate silently drops a fragment, so the
/// text is checked first).
fn check_http_url(s: &str) -> Result<http::Uri, String> {
    let refuse = || format!("expected an http:// or https:// URL with a host, found {s:?}");
    if s.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(refuse());
    }
    if s.contains('?') || s.contains('#') {
        return Err(format!("must not have a query or fragment, found {s:?}"));
    }
    let uri: http::Uri = s.parse().map_err(|_| refuse())?;
    let scheme_ok =
        matches!(uri.scheme_str(), Some(x) if x.eq_ignore_ascii_case("http") || x.eq_ignore_ascii_case("https"));
    let authority = uri.authority().ok_or_else(refuse)?;
    if authority.as_str().contains('@') {
        return Err(format!("must not carry user:password@, found {s:?}"));
    }
    // `http` accepts any digits as a port (and then reports none), so check
    // it is a real one; a bracketed IPv6 host's colons are not a port.
    let port_ok = match authority.as_str().rsplit_once(':') {
        Some((_, port)) if !port.ends_with(']') => port.parse::<u16>().is_ok(),
        _ => true,
    };
    if !scheme_ok || !port_ok || authority.host().is_empty() {
        return Err(refuse());
    }
    Ok(uri)
}

/// Two listeners collide on a port when they bind the same address or one
/// binds every address.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// A CIDR, or a bare IP as a single-host network (/32 or /128).
fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .ok_or_else(|| format!("expected a CIDR (e.g. 10.0.0.0/8) or an IP address, found {s:?}"))
}

/// A SHA-256 digest as 64 lowercase hex characters.
fn decode_sha256_hex(s: &str) -> Result<[u8; 32], String> {
    // The value is only a hash, but a token pasted here by mistake must not
    // end up in a log: never echo it.
    let refuse = || "expected 64 lowercase hex characters (a SHA-256 digest)".to_string();
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(refuse());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| refuse())?;
    Ok(out)
}

/// A cookie-name token (RFC 6265 §4.1.1, RFC 9110 §5.6.2).
fn check_cookie_name(s: &str) -> Result<(), String> {
    const SEPARATORS: &str = "()<>@,;:\\\"/[]?={}";
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_graphic() && !SEPARATORS.contains(c)) {
        return Err(format!(
            "expected a cookie name (visible ASCII, none of ()<>@,;:\\\"/[]?={{}} or space), found {s:?}"
        ));
    }
    // Browsers refuse a __Host- cookie unless Path=/, and the embed cookie is
    // scoped to /embed-apps/<appId> (RFC 6265bis §4.1.3.2).
    if s.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("__Host-")) {
        return Err("a __Host- cookie needs Path=/, but the embed cookie is scoped to /embed-apps/<appId>".into());
    }
    Ok(())
}

/// `local@domain`: one `@`, both sides non-empty, visible ASCII only (it
/// travels in the `X-Embed-User` header).
fn check_email(s: &str) -> Result<(), String> {
    let mut parts = s.split('@');
    let ok = match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) => {
            !local.is_empty() && !domain.is_empty() && s.chars().all(|c| c.is_ascii_graphic())
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected an email address (one @, no spaces, visible ASCII), found {s:?}"
        ))
    }
}

/// `*`, `*@domain`, or an email; lowercased.
fn check_user_pattern(s: &str) -> Result<String, String> {
    let ok = if s == "*" {
        true
    } else if let Some(domain) = s.strip_prefix("*@") {
        !domain.is_empty() && !domain.contains('@') && domain.chars().all(|c| c.is_ascii_graphic())
    } else {
        check_email(s).is_ok()
    };
    if ok {
        return Ok(s.to_ascii_lowercase());
    }
    Err(format!("expected \"*\", \"*@domain\" or an email address, found {s:?}"))
}

/// A group name: non-empty, and safe inside the comma-separated
/// `X-Embed-Groups` header.
fn check_group(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    // Groups are sent comma-separated in X-Embed-Groups: a comma or a
    // control character would forge or break that header.
    if s.contains(',') || s.chars().any(|c| !c.is_ascii_graphic() && c != ' ') || s.trim() != s {
        return Err(format!(
            "expected visible ASCII without commas or surrounding spaces, found {s:?}"
        ));
    }
    Ok(s.to_string())
}

/// A CSP source expression for `frame-ancestors` (CSP3 §2.3.1). Anything
/// that could end the directive or start another is refused.
fn check_csp_source(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if !s.chars().all(|c| c.is_ascii_graphic()) || s.contains([';', ',']) {
        return Err(format!(
            "expected one CSP source such as https://portal.example.com or 'self' (no spaces, ';' or ','), found {s:?}"
        ));
    }
    Ok(s.to_string())
}

/// `8-4-4-4-12` hex digits, either case.
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";

    fn file() -> &'static Path {
        Path::new("/etc/embedgate/gateway.toml")
    }

    fn ok(text: &str) -> Config {
        match parse(text, file()) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    fn errs(text: &str) -> Vec<ConfigError> {
        match parse(text, file()) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(ConfigErrors(list)) => {
                assert!(!list.is_empty(), "an Err must carry at least one error");
                list
            }
        }
    }

    /// The single error, checked for key and line.
    fn one_err(text: &str, key: &str, line: Option<usize>) -> ConfigError {
        let list = errs(text);
        assert_eq!(list.len(), 1, "expected one error, got {list:#?}");
        assert_eq!(list[0].key, key, "{list:#?}");
        assert_eq!(list[0].line, line, "{list:#?}");
        list[0].clone()
    }

    const MINIMAL: &str = "[server]\npublic_url = \"https://gw.example.com\"\n";

    #[test]
    fn minimal_config_parses_with_all_defaults() {
        let c = ok(MINIMAL);
        assert_eq!(c.source, file());
        assert_eq!(c.server.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(c.server.public_url, "https://gw.example.com");
        assert_eq!(c.server.admin_listen, None);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert!(c.server.trusted_proxies.is_empty());
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.upstream_connect_timeout, Duration::from_secs(5));
        assert_eq!(c.server.upstream_timeout, Duration::from_secs(60));
        assert_eq!(c.server.worker_threads, 0);
        assert_eq!(c.server.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.server.max_header_bytes, 65_536);
        assert!(c.tls.is_none());
        assert!(c.assertion.is_none());
        assert!(c.api.token_hashes.is_empty());
        assert_eq!(c.api.token_env, None);
        assert_eq!(c.api.max_body_bytes, 65_536);
        assert_eq!(c.pat.max_pat_expiry_seconds, 86_400);
        assert_eq!(c.pat.max_session_expiry_minutes, 1440);
        assert_eq!(c.pat.default_pat_expiry_seconds, 3600);
        assert_eq!(c.pat.default_session_expiry_minutes, 60);
        assert!(c.pat.single_use);
        assert_eq!(c.session.cookie_name, "embedgate_session");
        assert_eq!(c.session.max_lifetime, Duration::from_secs(720 * 60));
        assert_eq!(c.rate_limit.pat_create_per_minute, 60);
        assert_eq!(c.rate_limit.pat_create_per_user_per_minute, 10);
        assert_eq!(c.rate_limit.bad_pat_per_minute, 30);
        assert_eq!(c.store, Store::Memory);
        assert!(c.users.is_empty());
        assert!(c.apps.is_empty());
        assert!(c.passthrough.is_none());
        assert!(!c.demo.enabled);
        assert_eq!(c.demo.app_listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(c.server.upstream_ca, None);
    }

    /// SPEC §2's example, with a real digest for `<hex>` and Redis off (it
    /// would need `[assertion]`, which the example has).
    fn spec_example(env: &str) -> String {
        format!(
            r#"[server]
listen = "127.0.0.1:8443"          # public listener
public_url = "https://localhost:8443" # base of every URL the gateway hands out (required)
admin_listen = "127.0.0.1:9090"    # /healthz, /readyz, /metrics; never the public port; absent: none
shutdown_grace_seconds = 30
trusted_proxies = []               # CIDRs whose X-Forwarded-For is believed
header_read_timeout_seconds = 10   # a client's request head must arrive within this
upstream_connect_timeout_seconds = 5
upstream_timeout_seconds = 60      # upstream's response head must arrive within this: else 504
worker_threads = 0                 # 0: one per core

[tls]                              # absent: the public listener speaks plain HTTP
cert = "certs/localhost.pem"       # PEM chain
key = "certs/localhost-key.pem"    # PEM private key (PKCS#8, PKCS#1 or SEC1)

[assertion]                        # absent: a fresh key each start (one replica only)
key = "certs/assertion-key.pem"    # PKCS#8 PEM (Ed25519 or P-256) signing X-Embed-Assertion;
                                   # replicas share one; required with store.kind = "redis"

[api]
# SHA-256 (lowercase hex) of each token accepted as "Authorization: Basic <token>"
token_sha256 = ["{hex}"]
# name of an environment variable whose value is one more accepted token
token_env = "{env}"
max_body_bytes = 65536

[pat]
max_pat_expiry_seconds = 86400     # patExpiry above this: 400
max_session_expiry_minutes = 1440  # sessionExpiry above this: 400
default_pat_expiry_seconds = 3600
default_session_expiry_minutes = 60
single_use = true                  # false: reusable until patExpiry (ToolJet's behaviour)

[session]
cookie_name = "embedgate_session"
max_lifetime_minutes = 720         # hard cap on any session, however active

[rate_limit]
pat_create_per_minute = 60         # per API token
pat_create_per_user_per_minute = 10  # per target email
bad_pat_per_minute = 30            # per client IP: failed exchanges

[store]
kind = "memory"                    # or "redis"

[[users]]
email = "user@example.com"         # matched case-insensitively
groups = ["sales"]

[[apps]]
id = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc"   # a UUID (required)
upstream = "http://127.0.0.1:3000"            # http:// or https:// (required)
allow_users = ["user@example.com", "*@example.com"]  # "*" = every known user
allow_groups = ["sales"]
frame_ancestors = ["https://portal.example.com"]     # origins allowed to frame it

[passthrough]                      # optional: any other path goes here untouched
upstream = "http://127.0.0.1:3000"

[demo]                             # the shipped gateway.toml only
enabled = true                     # also serve a demo app and a demo portal on loopback
"#,
            hex = "ab".repeat(32),
        )
    }

    #[test]
    fn spec_example_parses() {
        let env = "EMBEDGATE_TEST_TOKEN_SPEC_EXAMPLE";
        std::env::set_var(env, "demo-token");
        let c = ok(&spec_example(env));
        assert_eq!(c.server.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(
            c.tls,
            Some(Tls {
                cert: PathBuf::from("/etc/embedgate/certs/localhost.pem"),
                key: PathBuf::from("/etc/embedgate/certs/localhost-key.pem"),
            })
        );
        assert_eq!(
            c.assertion,
            Some(Assertion {
                key: PathBuf::from("/etc/embedgate/certs/assertion-key.pem")
            })
        );
        assert_eq!(c.api.token_hashes.len(), 2);
        assert_eq!(c.api.token_hashes[0], [0xab; 32]);
        assert_eq!(c.api.token_env.as_deref(), Some(env));
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.users[0].groups, ["sales"]);
        assert_eq!(c.apps.len(), 1);
        let app = &c.apps[0];
        assert_eq!(app.id, UUID);
        assert_eq!(app.upstream.scheme(), "http");
        assert_eq!(app.upstream.authority(), "127.0.0.1:3000");
        assert_eq!(app.upstream.base_path(), "");
        assert_eq!(app.allow_users, ["user@example.com", "*@example.com"]);
        assert_eq!(app.frame_ancestors, ["https://portal.example.com"]);
        assert!(c.passthrough.is_some());
        assert!(c.demo.enabled);
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let e = one_err(
            "[server]\npublic_url = \"https://gw.example.com\"\nlisen = \"127.0.0.1:1\"\n",
            "server.lisen",
            Some(3),
        );
        assert_eq!(e.message, "unknown key");
        assert_eq!(
            e.to_string(),
            "/etc/embedgate/gateway.toml:3: server.lisen: unknown key"
        );
    }

    #[test]
    fn unknown_section_is_reported_with_its_line() {
        let e = one_err(&format!("{MINIMAL}\n[sever]\nx = 1\n"), "sever", Some(4));
        assert_eq!(e.message, "unknown section");
    }

    #[test]
    fn every_error_is_reported_at_once_in_line_order() {
        let text = format!(
            r#"[server]
listen = "localhost"
public_url = "https://gw.example.com"

[[apps]]
id = "{UUID}"
upstream = "http://127.0.0.1:3000"

[[apps]]
id = "not-a-uuid"
upstream = "http://127.0.0.1:3001"
colour = "blue"
"#
        );
        let list = errs(&text);
        let got: Vec<_> = list.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(2), "server.listen"),
                (Some(10), "apps[1].id"),
                (Some(12), "apps[1].colour"),
            ],
            "{list:#?}"
        );
    }

    #[test]
    fn duplicate_app_id_names_the_second() {
        let upper = UUID.to_ascii_uppercase();
        let text = format!(
            "{MINIMAL}[[apps]]\nid = \"{UUID}\"\nupstream = \"http://a\"\n\
             [[apps]]\nid = \"{upper}\"\nupstream = \"http://b\"\n"
        );
        let e = one_err(&text, "apps[1].id", Some(7));
        assert!(e.message.contains("apps[0]"), "{e}");
    }

    #[test]
    fn app_id_is_stored_lowercased() {
        let upper = UUID.to_ascii_uppercase();
        let c = ok(&format!(
            "{MINIMAL}[[apps]]\nid = \"{upper}\"\nupstream = \"https://app.internal/base/\"\n"
        ));
        assert_eq!(c.apps[0].id, UUID);
        assert_eq!(c.apps[0].upstream.base_path(), "/base");
        assert_eq!(c.apps[0].upstream.scheme(), "https");
    }

    #[test]
    fn duplicate_user_email_is_caught_case_insensitively() {
        let text = format!("{MINIMAL}[[users]]\nemail = \"Ann@Example.com\"\n[[users]]\nemail = \"ann@example.com\"\n");
        let e = one_err(&text, "users[1].email", Some(6));
        assert!(e.message.contains("users[0]"), "{e}");
    }

    #[test]
    fn user_email_is_lowercased_and_validated() {
        let c = ok(&format!("{MINIMAL}[[users]]\nemail = \"Ann@Example.COM\"\n"));
        assert_eq!(c.users[0].email, "ann@example.com");
        for bad in ["ann", "@example.com", "ann@", "a@b@c", "ann @example.com"] {
            one_err(
                &format!("{MINIMAL}[[users]]\nemail = \"{bad}\"\n"),
                "users[0].email",
                Some(4),
            );
        }
        one_err(&format!("{MINIMAL}[[users]]\ngroups = []\n"), "users[0].email", Some(3));
    }

    #[test]
    fn bad_cidr_is_refused_and_bare_ip_is_one_host() {
        let text = "[server]\npublic_url = \"https://gw\"\ntrusted_proxies = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n  \"192.0.2.7\",\n  \"::1\",\n]\n";
        let e = one_err(text, "server.trusted_proxies[1]", Some(5));
        assert!(e.message.contains("CIDR"), "{e}");

        let c =
            ok("[server]\npublic_url = \"https://gw\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"::1\"]\n");
        let nets: Vec<String> = c.server.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]);
    }

    #[test]
    fn wrong_type_names_what_was_expected_and_found() {
        let e = one_err(
            &format!("{MINIMAL}shutdown_grace_seconds = \"30\"\n"),
            "server.shutdown_grace_seconds",
            Some(3),
        );
        assert_eq!(e.message, "expected an integer, found a string");
        let e = one_err(&format!("{MINIMAL}[pat]\nsingle_use = 1\n"), "pat.single_use", Some(4));
        assert_eq!(e.message, "expected a boolean, found an integer");
        let e = one_err(&format!("tls = 3\n{MINIMAL}"), "tls", Some(1));
        assert_eq!(e.message, "expected a table, found an integer");
        let e = one_err(&format!("{MINIMAL}[apps]\nid = 1\n"), "apps", Some(3));
        // A required key of the wrong type is one problem, not two.
        one_err("[server]\npublic_url = 1\n", "server.public_url", Some(2));
        one_err("server = \"x\"\n", "server", Some(1));
        one_err(
            &format!("{MINIMAL}[store]\nkind = 5\nurl = \"x\"\n"),
            "store.kind",
            Some(4),
        );
        // A key given as a table inside a section is an unknown key.
        one_err(&format!("{MINIMAL}tls = 3\n"), "server.tls", Some(3));
        assert!(e.message.starts_with("expected an array of tables"), "{e}");
    }

    #[test]
    fn negative_integer_is_refused() {
        let e = one_err(
            &format!("{MINIMAL}[rate_limit]\nbad_pat_per_minute = -1\n"),
            "rate_limit.bad_pat_per_minute",
            Some(4),
        );
        assert!(e.message.contains("negative"), "{e}");
        one_err(
            &format!("{MINIMAL}worker_threads = -4\n"),
            "server.worker_threads",
            Some(3),
        );
    }

    #[test]
    fn integer_ranges_are_enforced() {
        one_err(
            &format!("{MINIMAL}upstream_timeout_seconds = 0\n"),
            "server.upstream_timeout_seconds",
            Some(3),
        );
        one_err(
            &format!("{MINIMAL}max_header_bytes = 4096\n"),
            "server.max_header_bytes",
            Some(3),
        );
        one_err(
            &format!("{MINIMAL}max_header_bytes = 2000000\n"),
            "server.max_header_bytes",
            Some(3),
        );
        one_err(
            &format!("{MINIMAL}max_connections = 0\n"),
            "server.max_connections",
            Some(3),
        );
        one_err(
            &format!("{MINIMAL}[api]\nmax_body_bytes = 0\n"),
            "api.max_body_bytes",
            Some(4),
        );
        one_err(
            &format!("{MINIMAL}[rate_limit]\npat_create_per_minute = 5000000000\n"),
            "rate_limit.pat_create_per_minute",
            Some(4),
        );
        // A grace of zero means "exit at once", which is allowed.
        let c = ok(&format!("{MINIMAL}shutdown_grace_seconds = 0\n"));
        assert_eq!(c.server.shutdown_grace, Duration::ZERO);
    }

    #[test]
    fn redis_needs_an_assertion_key_and_a_url() {
        let e = one_err(
            &format!("{MINIMAL}[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n"),
            "assertion.key",
            Some(4),
        );
        assert!(e.message.contains("redis"), "{e}");

        let c = ok(&format!(
            "{MINIMAL}[assertion]\nkey = \"a.pem\"\n[store]\nkind = \"redis\"\nurl = \"rediss://r:6380\"\n"
        ));
        assert_eq!(
            c.store,
            Store::Redis {
                url: "rediss://r:6380".into()
            }
        );

        one_err(
            &format!("{MINIMAL}[assertion]\nkey = \"a.pem\"\n[store]\nkind = \"redis\"\n"),
            "store.url",
            Some(5),
        );
        one_err(
            &format!("{MINIMAL}[assertion]\nkey = \"a.pem\"\n[store]\nkind = \"redis\"\nurl = \"http://r\"\n"),
            "store.url",
            Some(7),
        );
    }

    #[test]
    fn store_url_with_memory_is_refused() {
        let e = one_err(
            &format!("{MINIMAL}[store]\nurl = \"redis://r\"\n"),
            "store.url",
            Some(4),
        );
        assert!(e.message.contains("only with kind"), "{e}");
        one_err(&format!("{MINIMAL}[store]\nkind = \"etcd\"\n"), "store.kind", Some(4));
    }

    #[test]
    fn default_expiry_above_its_max_is_refused() {
        let text = format!(
            "{MINIMAL}[pat]\nmax_pat_expiry_seconds = 600\ndefault_pat_expiry_seconds = 3600\n\
             max_session_expiry_minutes = 10\n"
        );
        let list = errs(&text);
        let keys: Vec<_> = list.iter().map(|e| (e.line, e.key.as_str())).collect();
        // The explicit default is named at its line; the implicit session
        // default (60) is above its max too, reported at the max's line.
        assert_eq!(
            keys,
            [
                (Some(5), "pat.default_pat_expiry_seconds"),
                (Some(6), "pat.default_session_expiry_minutes"),
            ],
            "{list:#?}"
        );
    }

    #[test]
    fn tls_paths_resolve_against_the_config_directory() {
        let c = ok(&format!(
            "{MINIMAL}[tls]\ncert = \"certs/gw.pem\"\nkey = \"/abs/gw-key.pem\"\n"
        ));
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("/etc/embedgate/certs/gw.pem"));
        assert_eq!(tls.key, PathBuf::from("/abs/gw-key.pem"));
    }

    #[test]
    fn upstream_ca_resolves_against_the_config_directory() {
        let c = ok(&format!("{MINIMAL}upstream_ca = \"ca/internal.pem\"\n"));
        assert_eq!(
            c.server.upstream_ca,
            Some(PathBuf::from("/etc/embedgate/ca/internal.pem"))
        );
        one_err(&format!("{MINIMAL}upstream_ca = \"\"\n"), "server.upstream_ca", Some(3));
    }

    #[test]
    fn tls_section_needs_both_files() {
        one_err(&format!("{MINIMAL}[tls]\ncert = \"c.pem\"\n"), "tls.key", Some(3));
    }

    #[test]
    fn token_env_unset_is_an_error_and_set_adds_its_hash() {
        let env = "EMBEDGATE_TEST_TOKEN_ENV_7f3a";
        std::env::remove_var(env);
        let text = format!("{MINIMAL}[api]\ntoken_env = \"{env}\"\n");
        let e = one_err(&text, "api.token_env", Some(4));
        assert!(e.message.contains("not set"), "{e}");

        std::env::set_var(env, "s3cret-token");
        let c = ok(&text);
        let want: [u8; 32] = Sha256::digest(b"s3cret-token").into();
        assert_eq!(c.api.token_hashes, [want]);
        assert_eq!(c.api.token_env.as_deref(), Some(env));

        std::env::set_var(env, "");
        let e = one_err(&text, "api.token_env", Some(4));
        assert!(!e.to_string().contains("s3cret"), "{e}");
        std::env::remove_var(env);
    }

    #[test]
    fn token_digest_must_be_64_lowercase_hex() {
        let upper = "AB".repeat(32);
        let short = "ab".repeat(31);
        let text = format!("{MINIMAL}[api]\ntoken_sha256 = [\"{upper}\", \"{short}\"]\n");
        let list = errs(&text);
        let keys: Vec<_> = list.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["api.token_sha256[0]", "api.token_sha256[1]"]);
        assert!(!list[0].to_string().contains(&upper), "the value is never echoed");
    }

    #[test]
    fn toml_syntax_error_reports_its_line() {
        let e = one_err(
            "[server]\npublic_url = \"https://gw\"\nlisten = \n",
            "(syntax)",
            Some(3),
        );
        assert!(!e.message.is_empty());
        let e = one_err("[server]\n[server]\n", "(syntax)", Some(2));
        assert!(!e.message.is_empty());
    }

    #[test]
    fn missing_server_section_and_public_url_are_reported() {
        let e = one_err("", "server", None);
        assert_eq!(
            e.to_string(),
            "/etc/embedgate/gateway.toml: server: required section missing"
        );
        let e = one_err("\n[server]\nlisten = \"0.0.0.0:8443\"\n", "server.public_url", Some(2));
        assert_eq!(e.message, "required key missing");
    }

    #[test]
    fn public_url_is_checked_and_loses_its_trailing_slash() {
        let c = ok("[server]\npublic_url = \"https://gw.example.com/prefix/\"\n");
        assert_eq!(c.server.public_url, "https://gw.example.com/prefix");
        let c = ok("[server]\npublic_url = \"https://[::1]:8443/\"\n");
        assert_eq!(c.server.public_url, "https://[::1]:8443");
        ok("[server]\npublic_url = \"http://[::1]\"\n");
        for bad in [
            "gw.example.com",
            "ftp://gw.example.com",
            "https://gw.example.com/?a=1",
            "https://gw.example.com/#x",
            "https://user:pw@gw.example.com",
            "/relative",
            "https://gw:99999",
            "https://gw:",
        ] {
            one_err(
                &format!("[server]\npublic_url = \"{bad}\"\n"),
                "server.public_url",
                Some(2),
            );
        }
    }

    #[test]
    fn admin_listen_must_not_be_the_public_port() {
        one_err(
            &format!("{MINIMAL}listen = \"0.0.0.0:8443\"\nadmin_listen = \"127.0.0.1:8443\"\n"),
            "server.admin_listen",
            Some(4),
        );
        ok(&format!(
            "{MINIMAL}listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n"
        ));
        ok(&format!("{MINIMAL}admin_listen = \"127.0.0.1:9090\"\n"));
    }

    #[test]
    fn frame_ancestors_cannot_inject_into_the_csp() {
        let text = format!(
            "{MINIMAL}[[apps]]\nid = \"{UUID}\"\nupstream = \"http://a\"\n\
             frame_ancestors = [\"'self'\", \"https://*.example.com\", \"https://a; script-src *\", \"a,b\", \"\"]\n"
        );
        let list = errs(&text);
        let keys: Vec<_> = list.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "apps[0].frame_ancestors[2]",
                "apps[0].frame_ancestors[3]",
                "apps[0].frame_ancestors[4]"
            ]
        );
    }

    #[test]
    fn allow_users_patterns_are_checked_and_lowercased() {
        let c = ok(&format!(
            "{MINIMAL}[[apps]]\nid = \"{UUID}\"\nupstream = \"http://a\"\n\
             allow_users = [\"*\", \"*@Example.com\", \"Ann@Example.com\"]\nallow_groups = [\"sales\"]\n"
        ));
        assert_eq!(c.apps[0].allow_users, ["*", "*@example.com", "ann@example.com"]);
        assert_eq!(c.apps[0].allow_groups, ["sales"]);
        one_err(
            &format!("{MINIMAL}[[apps]]\nid = \"{UUID}\"\nupstream = \"http://a\"\nallow_users = [\"*@\"]\n"),
            "apps[0].allow_users[0]",
            Some(6),
        );
    }

    #[test]
    fn groups_cannot_break_the_groups_header() {
        let text = format!("{MINIMAL}[[users]]\nemail = \"a@b\"\ngroups = [\"a,b\", \"\", \"ok\"]\n");
        let keys: Vec<_> = errs(&text).into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["users[0].groups[0]", "users[0].groups[1]"]);
    }

    #[test]
    fn app_needs_id_and_upstream() {
        let list = errs(&format!("{MINIMAL}[[apps]]\nallow_groups = []\n"));
        let got: Vec<_> = list.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(got, [(Some(3), "apps[0].id"), (Some(3), "apps[0].upstream")]);
        one_err(
            &format!("{MINIMAL}[[apps]]\nid = \"{UUID}\"\nupstream = \"http://a/?q\"\n"),
            "apps[0].upstream",
            Some(5),
        );
        one_err(
            &format!("{MINIMAL}[passthrough]\nupstream = \"ws://a\"\n"),
            "passthrough.upstream",
            Some(4),
        );
    }

    #[test]
    fn cookie_name_must_be_a_token() {
        for bad in ["", "a b", "a;b", "a=b", "é", "__Host-s"] {
            one_err(
                &format!("{MINIMAL}[session]\ncookie_name = \"{bad}\"\n"),
                "session.cookie_name",
                Some(4),
            );
        }
        let c = ok(&format!(
            "{MINIMAL}[session]\ncookie_name = \"__Secure-eg\"\nmax_lifetime_minutes = 5\n"
        ));
        assert_eq!(c.session.cookie_name, "__Secure-eg");
        assert_eq!(c.session.max_lifetime, Duration::from_secs(300));
    }

    #[test]
    fn demo_section_reads_its_keys() {
        let c = ok(&format!(
            "{MINIMAL}[demo]\nenabled = true\napp_listen = \"127.0.0.1:3999\"\n"
        ));
        assert!(c.demo.enabled);
        assert_eq!(c.demo.app_listen, "127.0.0.1:3999".parse().unwrap());
        one_err(&format!("{MINIMAL}[demo]\nenabeld = true\n"), "demo.enabeld", Some(4));
    }

    #[test]
    fn inline_tables_and_dotted_keys_are_read_like_sections() {
        let c = ok(&format!(
            "server = {{ public_url = \"https://gw\" }}\nsession.cookie_name = \"eg\"\n\
             apps = [{{ id = \"{UUID}\", upstream = \"http://a\" }}]\n"
        ));
        assert_eq!(c.session.cookie_name, "eg");
        assert_eq!(c.apps.len(), 1);
        one_err(
            "server = { public_url = \"https://gw\", nope = 1 }\n",
            "server.nope",
            Some(1),
        );
    }

    #[test]
    fn odd_documents_give_errors_not_panics() {
        for text in [
            "[[server]]\npublic_url = \"https://gw\"\n",
            "server = []\n",
            "apps = 3\n[server]\npublic_url = \"https://gw\"\n",
            "apps = [1, \"x\"]\n[server]\npublic_url = \"https://gw\"\n",
            "\"weird key\\n\" = 1\n[server]\npublic_url = \"https://gw\"\n",
            "[server.listen]\n",
            "[server]\npublic_url = \"https://[::1\"\n",
            "[server]\npublic_url = \"https://gw:99999\"\n",
            "\u{feff}[server]\npublic_url = 1979-05-27\n",
            "[server]\npublic_url = \"https://gw\"\nlisten = \"1.2.3.4:5\" \u{e9}\n",
        ] {
            let _ = errs(text);
        }
    }
}

#[cfg(test)]
mod access_tests {
    use super::*;

    fn app(users: &[&str], groups: &[&str]) -> App {
        App {
            id: "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc".into(),
            upstream: Upstream {
                uri: http::Uri::from_static("http://127.0.0.1:1"),
            },
            allow_users: users.iter().map(|s| s.to_string()).collect(),
            allow_groups: groups.iter().map(|s| s.to_string()).collect(),
            frame_ancestors: vec![],
        }
    }

    fn user(email: &str, groups: &[&str]) -> User {
        User {
            email: email.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn patterns_admit_exact_domain_star_and_groups() {
        let ann = user("ann@example.com", &["sales"]);
        assert!(app(&["ann@example.com"], &[]).admits(&ann));
        assert!(app(&["*@example.com"], &[]).admits(&ann));
        assert!(app(&["*"], &[]).admits(&ann));
        assert!(app(&[], &["sales"]).admits(&ann));
        assert!(!app(&[], &[]).admits(&ann));
        assert!(
            !app(&["*@ample.com"], &[]).admits(&ann),
            "a domain pattern matches the whole domain"
        );
        assert!(!app(&["*@other.com", "bob@example.com"], &["ops"]).admits(&ann));
    }
}
