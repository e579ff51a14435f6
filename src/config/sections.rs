//! One reader per `gateway.toml` section (SPEC §2): each takes its
//! [`Section`], reads every key it knows with its default, records what is
//! wrong in the [`Cx`] and returns the runtime type, placeholders standing in
//! for wrong values so the walk can go on.

use std::net::SocketAddr;
use std::time::Duration;

use super::checks::{
    check_cookie_name, check_http_url, check_token_name, check_user_pattern, decode_sha256_hex, is_uuid, parse_cidr,
    same_host,
};
use super::walk::{Cx, Field, Section, MAX_MINUTES, MAX_SECONDS};

mod apps;
use super::{
    Api, ApiToken, App, Assertion, CertFiles, Demo, KeyFile, LogConfig, Passthrough, Pat, RateLimit, Server,
    SessionConfig, StoreConfig, Tls, UserSource,
};
pub(crate) use apps::{apps, users};

/// `[server]`; `public_url` is required.
pub(crate) fn server(mut s: Section<'_>, cx: &mut Cx<'_>) -> Server {
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
    let upstream_ca = s.str(cx, "upstream_ca").and_then(|f| cx.resolve_file(&f, false));
    let underscores_in_headers = s.bool(cx, "underscores_in_headers").unwrap_or(false);
    let send_timeout = s.seconds(cx, "send_timeout_seconds", 60, 1);
    let max_upstream_per_connection = s.uint(cx, "max_upstream_per_connection", 32, 1, 256) as usize;
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
        underscores_in_headers,
        send_timeout,
        max_upstream_per_connection,
    }
}

/// `[tls]`: both files required, resolved against the config's directory;
/// `[[tls.certificates]]` alike.
pub(crate) fn tls(mut s: Section<'_>, cx: &mut Cx<'_>) -> Tls {
    // The demo makes the main pair at first start; the others must exist.
    let main = cert_files(&mut s, cx, true);
    let certificates = s
        .array_of_tables(cx, "certificates")
        .into_iter()
        .map(|mut t| {
            let files = cert_files(&mut t, cx, false);
            t.finish(cx);
            files
        })
        .collect();
    s.finish(cx);
    Tls { main, certificates }
}

/// A table's `cert` and `key`, with their lines.
fn cert_files(s: &mut Section<'_>, cx: &mut Cx<'_>, demo_makes: bool) -> CertFiles {
    let mut file = |s: &mut Section<'_>, name| match s.required_str(cx, name) {
        Some(f) => (cx.resolve_file(&f, demo_makes).unwrap_or_default(), f.line),
        None => Default::default(),
    };
    let (cert, cert_line) = file(s, "cert");
    let (key, key_line) = file(s, "key");
    let (place, _) = s.place();
    CertFiles {
        cert,
        key,
        place: place.to_owned(),
        lines: [cert_line, key_line],
    }
}

/// `[assertion]`: the signing key file, resolved like `[tls]`'s, and the
/// keys published beside it.
pub(crate) fn assertion(mut s: Section<'_>, cx: &mut Cx<'_>) -> Assertion {
    let key = s.file(cx, "key", true).unwrap_or_default();
    let mut key_files = |s: &mut Section<'_>, name| {
        let fields = s.list_fields(cx, name, |p| Ok(p.to_owned())).unwrap_or_default();
        fields
            .into_iter()
            .filter_map(|f| {
                let path = cx.resolve_file(
                    &Field {
                        value: f.value.as_str(),
                        key: f.key.clone(),
                        line: f.line,
                    },
                    false,
                )?;
                Some(KeyFile {
                    path,
                    key: f.key,
                    line: f.line,
                })
            })
            .collect::<Vec<_>>()
    };
    let previous_keys = key_files(&mut s, "previous_keys");
    let next_keys = key_files(&mut s, "next_keys");
    s.finish(cx);
    Assertion {
        key,
        previous_keys,
        next_keys,
    }
}

/// `[log]`.
pub(crate) fn log(mut s: Section<'_>, cx: &mut Cx<'_>) -> LogConfig {
    let access = s.bool(cx, "access").unwrap_or(true);
    let audit_file = s.str(cx, "audit_file").and_then(|f| cx.resolve(&f));
    s.finish(cx);
    LogConfig { access, audit_file }
}

/// `[identity]`.
pub(crate) fn identity(mut s: Section<'_>, cx: &mut Cx<'_>) -> UserSource {
    let users = match s.str(cx, "users") {
        None => UserSource::Config,
        Some(f) if f.value == "config" => UserSource::Config,
        Some(f) if f.value == "portal" => UserSource::Portal,
        Some(f) => {
            cx.error_at(&f, format!("expected \"config\" or \"portal\", found {:?}", f.value));
            UserSource::Config
        }
    };
    s.finish(cx);
    users
}

/// `[api]`; the `token_env` variable is read (and hashed) here. Also
/// returns the app ids the named tokens are scoped to, checked once the
/// apps are read.
pub(crate) fn api(mut s: Section<'_>, cx: &mut Cx<'_>) -> (Api, Vec<Field<String>>) {
    let mut token_hashes = s.list(cx, "token_sha256", decode_sha256_hex);
    let token_env = s.str(cx, "token_env").and_then(|f| {
        if f.value.is_empty() || f.value.contains(['=', '\0']) {
            cx.error_at(&f, "expected the name of an environment variable");
            return None;
        }
        // The value is hashed at once and dropped; it is never kept or shown.
        match std::env::var(f.value) {
            Ok(v) if !v.is_empty() => {
                token_hashes.push(crate::crypto::sha256(v.as_bytes()));
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
    let mut tokens: Vec<ApiToken> = Vec::new();
    let mut token_apps = Vec::new();
    for mut t in s.array_of_tables(cx, "tokens") {
        let name = match t.required_str(cx, "name") {
            Some(f) => match check_token_name(f.value) {
                Ok(()) => {
                    if let Some(first) = tokens.iter().position(|k| k.name == f.value) {
                        cx.error_at(&f, format!("duplicate of api.tokens[{first}].name"));
                    }
                    f.value.to_owned()
                }
                Err(why) => {
                    cx.error_at(&f, why);
                    String::new()
                }
            },
            None => String::new(),
        };
        let hash = match t.required_str(cx, "sha256") {
            Some(f) => match decode_sha256_hex(f.value) {
                Ok(hash) => {
                    // One token, two scopes: which one applies could not be said.
                    if token_hashes.contains(&hash) || tokens.iter().any(|k| k.hash == hash) {
                        cx.error_at(&f, "the same token is configured twice");
                    }
                    hash
                }
                Err(why) => {
                    cx.error_at(&f, why);
                    [0; 32]
                }
            },
            None => [0; 32],
        };
        let apps = t.list_fields(cx, "apps", |id| {
            if is_uuid(id) {
                Ok(id.to_ascii_lowercase())
            } else {
                Err(format!("expected an app id (a UUID), found {id:?}"))
            }
        });
        let apps = apps.map(|fields| {
            let ids = fields.iter().map(|f| f.value.clone()).collect();
            token_apps.extend(fields);
            ids
        });
        let emails = t
            .list_fields(cx, "emails", check_user_pattern)
            .map(|fields| fields.into_iter().map(|f| f.value).collect());
        t.finish(cx);
        tokens.push(ApiToken {
            name,
            hash,
            apps,
            emails,
        });
    }
    s.finish(cx);
    let api = Api {
        token_hashes,
        tokens,
        token_env,
        max_body_bytes,
    };
    (api, token_apps)
}

/// Every app a named API token is scoped to must be configured: a typo
/// would silently leave the token unable to mint.
pub(crate) fn check_token_apps(token_apps: &[Field<String>], apps: &[App], cx: &mut Cx<'_>) {
    for f in token_apps {
        if !apps.iter().any(|a| *a.id == *f.value) {
            cx.error_at(f, format!("no [[apps]] entry has id {}", f.value));
        }
    }
}

/// `[pat]`: each default must not be above its max.
pub(crate) fn pat(mut s: Section<'_>, cx: &mut Cx<'_>) -> Pat {
    let max_pat = s.uint_field(cx, "max_pat_expiry_seconds", 86_400, 1, MAX_SECONDS);
    // 30 days, Looker's longest embed session: a portal asking for a long
    // idle timeout (ToolJet's sample sends 10000) is capped by
    // session.max_lifetime_minutes rather than refused.
    let max_session = s.uint_field(cx, "max_session_expiry_minutes", 43_200, 1, MAX_MINUTES);
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

/// `[session]`.
pub(crate) fn session(mut s: Section<'_>, cx: &mut Cx<'_>) -> SessionConfig {
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
    SessionConfig {
        cookie_name,
        max_lifetime: Duration::from_secs(minutes * 60),
    }
}

/// `[rate_limit]`.
pub(crate) fn rate_limit(mut s: Section<'_>, cx: &mut Cx<'_>) -> RateLimit {
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

/// The `[store]` keys that mean something only for Redis.
const REDIS_ONLY: [&str; 3] = ["url", "timeout_ms", "key_prefix"];

/// The store, and the line that chose Redis (for the assertion-key check).
pub(crate) fn store(mut s: Section<'_>, cx: &mut Cx<'_>) -> (StoreConfig, Option<usize>) {
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
            let timeout = Duration::from_millis(s.uint(cx, "timeout_ms", 250, 1, 60_000));
            let key_prefix = match s.str(cx, "key_prefix") {
                Some(f) if f.value.len() > 64 || !f.value.bytes().all(|b| b.is_ascii_graphic()) => {
                    cx.error_at(&f, "expected at most 64 visible ASCII characters");
                    String::new()
                }
                Some(f) => f.value.to_owned(),
                None => "embedgate:".to_owned(),
            };
            (
                StoreConfig::Redis {
                    url,
                    timeout,
                    key_prefix,
                },
                line,
            )
        }
        Kind::Memory => {
            for key in REDIS_ONLY {
                if let Some(f) = s.entry(cx, key) {
                    cx.error_at(&f, "only with kind = \"redis\"");
                }
            }
            (StoreConfig::Memory, None)
        }
        Kind::Bad => {
            for key in REDIS_ONLY {
                s.entry(cx, key);
            }
            (StoreConfig::Memory, None)
        }
    };
    s.finish(cx);
    (store, redis_line)
}

/// `[passthrough]`.
pub(crate) fn passthrough(mut s: Section<'_>, cx: &mut Cx<'_>) -> Passthrough {
    let upstream = s.upstream(cx, "upstream");
    s.finish(cx);
    Passthrough { upstream }
}

/// `[demo]`.
pub(crate) fn demo(mut s: Section<'_>, cx: &mut Cx<'_>) -> Demo {
    let enabled = match s.bool_field(cx, "enabled") {
        Some(f) if f.value && !cfg!(feature = "demo") => {
            cx.error_at(
                &f,
                "this embedgate was built without the demo (cargo feature \"demo\", on by default): \
                 build it with default features, or remove [demo]",
            );
            false
        }
        Some(f) => f.value,
        None => false,
    };
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
