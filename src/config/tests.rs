//! Whole files through [`parse`]: every error checked for its key and line,
//! defaults and SPEC §2's example; and who an [`App`] admits.

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
    assert!(!c.server.underscores_in_headers);
    assert_eq!(c.server.send_timeout, Duration::from_secs(60));
    assert_eq!(c.server.max_upstream_per_connection, 32);
    assert!(c.tls.is_none());
    assert!(c.assertion.is_none());
    assert!(c.api.token_hashes.is_empty());
    assert_eq!(c.api.token_env, None);
    assert_eq!(c.api.max_body_bytes, 65_536);
    assert_eq!(c.pat.max_pat_expiry_seconds, 86_400);
    assert_eq!(c.pat.max_session_expiry_minutes, 43_200);
    assert_eq!(c.identity, UserSource::Config);
    assert!(c.api.tokens.is_empty());
    assert_eq!(c.pat.default_pat_expiry_seconds, 3600);
    assert_eq!(c.pat.default_session_expiry_minutes, 60);
    assert!(c.pat.single_use);
    assert_eq!(c.session.cookie_name, "embedgate_session");
    assert_eq!(c.session.max_lifetime, Duration::from_secs(720 * 60));
    assert_eq!(c.rate_limit.pat_create_per_minute, 60);
    assert_eq!(c.rate_limit.pat_create_per_user_per_minute, 10);
    assert_eq!(c.rate_limit.bad_pat_per_minute, 30);
    assert_eq!(c.store, StoreConfig::Memory);
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
            main: CertFiles {
                cert: PathBuf::from("/etc/embedgate/certs/localhost.pem"),
                key: PathBuf::from("/etc/embedgate/certs/localhost-key.pem"),
                place: "tls".into(),
                lines: c.tls.as_ref().map_or([None, None], |t| t.main.lines),
            },
            certificates: Vec::new(),
        })
    );
    assert!(c
        .tls
        .as_ref()
        .is_some_and(|t| t.main.lines[0].is_some() && t.main.lines[1].is_some()));
    assert_eq!(
        c.assertion,
        Some(Assertion {
            key: PathBuf::from("/etc/embedgate/certs/assertion-key.pem"),
            previous_keys: Vec::new(),
            next_keys: Vec::new(),
        })
    );
    assert_eq!(c.api.token_hashes.len(), 2);
    assert_eq!(c.api.token_hashes[0], [0xab; 32]);
    assert_eq!(c.api.token_env.as_deref(), Some(env));
    assert_eq!(c.users.len(), 1);
    assert_eq!(c.users[0].groups, ["sales"]);
    assert_eq!(c.apps.len(), 1);
    let app = &c.apps[0];
    assert_eq!(&*app.id, UUID);
    assert_eq!(app.upstream.uri.scheme_str(), Some("http"));
    assert_eq!(app.upstream.authority(), "127.0.0.1:3000");
    assert_eq!(app.upstream.base_path(), "");
    assert_eq!(app.allow_users, ["user@example.com", "*@example.com"]);
    assert_eq!(
        app.frame_ancestors_directive,
        "frame-ancestors https://portal.example.com"
    );
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
    assert_eq!(e.message, "unknown key (did you mean `listen`?)");
    assert_eq!(
        e.to_string(),
        "/etc/embedgate/gateway.toml:3: server.lisen: unknown key (did you mean `listen`?)"
    );
    // Nothing close: no guess.
    let e = one_err(&format!("{MINIMAL}colour = 1\n"), "server.colour", Some(3));
    assert_eq!(e.message, "unknown key");
    // A swap of two letters, a letter more, a case slip.
    for (typo, meant) in [
        ("upstream_timout_seconds", "upstream_timeout_seconds"),
        ("public_ulr", "public_url"),
        ("Trusted_Proxies", "trusted_proxies"),
    ] {
        let e = one_err(&format!("{MINIMAL}{typo} = 1\n"), &format!("server.{typo}"), Some(3));
        assert_eq!(e.message, format!("unknown key (did you mean `{meant}`?)"), "{typo}");
    }
}

#[test]
fn relative_paths_resolve_without_dot_segments() {
    let c = ok(&format!("{MINIMAL}upstream_ca = \"./ca/./internal.pem\"\n"));
    let path = c.server.upstream_ca.expect("a path");
    assert!(
        !path.components().any(|c| matches!(c, std::path::Component::CurDir)),
        "{}",
        path.display()
    );
    assert!(path.ends_with("ca/internal.pem"), "{}", path.display());
}

#[test]
fn unknown_section_is_reported_with_its_line() {
    let e = one_err(&format!("{MINIMAL}\n[sever]\nx = 1\n"), "sever", Some(4));
    assert_eq!(e.message, "unknown section (did you mean `server`?)");
    let e = one_err(&format!("{MINIMAL}\n[extras]\nx = 1\n"), "extras", Some(4));
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
    assert_eq!(&*c.apps[0].id, UUID);
    assert_eq!(c.apps[0].upstream.base_path(), "/base");
    assert_eq!(c.apps[0].upstream.uri.scheme_str(), Some("https"));
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

    let c = ok("[server]\npublic_url = \"https://gw\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"::1\"]\n");
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
        &format!("{MINIMAL}send_timeout_seconds = 0\n"),
        "server.send_timeout_seconds",
        Some(3),
    );
    one_err(
        &format!("{MINIMAL}max_upstream_per_connection = 0\n"),
        "server.max_upstream_per_connection",
        Some(3),
    );
    one_err(
        &format!("{MINIMAL}max_upstream_per_connection = 257\n"),
        "server.max_upstream_per_connection",
        Some(3),
    );
    one_err(
        &format!("{MINIMAL}underscores_in_headers = \"yes\"\n"),
        "server.underscores_in_headers",
        Some(3),
    );
    let c = ok(&format!(
        "{MINIMAL}underscores_in_headers = true\nsend_timeout_seconds = 5\nmax_upstream_per_connection = 4\n"
    ));
    assert!(c.server.underscores_in_headers);
    assert_eq!(c.server.send_timeout, Duration::from_secs(5));
    assert_eq!(c.server.max_upstream_per_connection, 4);
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
        StoreConfig::Redis {
            url: "rediss://r:6380".into(),
            timeout: Duration::from_millis(250),
            key_prefix: "embedgate:".into(),
        }
    );
    let c = ok(&format!(
        "{MINIMAL}[assertion]\nkey = \"a.pem\"\n[store]\nkind = \"redis\"\nurl = \"redis://r\"\ntimeout_ms = 40\nkey_prefix = \"eg:\"\n"
    ));
    assert!(matches!(
        c.store,
        StoreConfig::Redis { timeout, ref key_prefix, .. } if timeout == Duration::from_millis(40) && key_prefix == "eg:"
    ));
    let redis = format!("{MINIMAL}[assertion]\nkey = \"a.pem\"\n[store]\nkind = \"redis\"\nurl = \"redis://r\"\n");
    one_err(&format!("{redis}timeout_ms = 0\n"), "store.timeout_ms", Some(8));
    one_err(&format!("{redis}key_prefix = \"a b\"\n"), "store.key_prefix", Some(8));

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
    one_err(
        &format!("{MINIMAL}[store]\ntimeout_ms = 5\n"),
        "store.timeout_ms",
        Some(4),
    );
    one_err(
        &format!("{MINIMAL}[store]\nkey_prefix = \"x\"\n"),
        "store.key_prefix",
        Some(4),
    );
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
    assert_eq!(tls.main.cert, PathBuf::from("/etc/embedgate/certs/gw.pem"));
    assert_eq!(tls.main.key, PathBuf::from("/abs/gw-key.pem"));
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
    let want: [u8; 32] = crate::crypto::sha256(b"s3cret-token");
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

fn app_with(extra: &str) -> String {
    format!("{MINIMAL}[[apps]]\nid = \"{UUID}\"\nupstream = \"http://127.0.0.1:3000\"\n{extra}")
}

#[test]
fn log_access_is_on_unless_turned_off() {
    assert!(ok(MINIMAL).log.access);
    assert!(!ok(&format!("{MINIMAL}[log]\naccess = false\n")).log.access);
    one_err(&format!("{MINIMAL}[log]\naccess = \"no\"\n"), "log.access", Some(4));
}

#[test]
fn identity_users_is_config_or_portal() {
    assert_eq!(
        ok(&format!("{MINIMAL}[identity]\nusers = \"portal\"\n")).identity,
        UserSource::Portal
    );
    assert_eq!(
        ok(&format!("{MINIMAL}[identity]\nusers = \"config\"\n")).identity,
        UserSource::Config
    );
    let e = one_err(
        &format!("{MINIMAL}[identity]\nusers = \"ldap\"\n"),
        "identity.users",
        Some(4),
    );
    assert!(e.message.contains("\"config\" or \"portal\""), "{e}");
    one_err(
        &format!("{MINIMAL}[identity]\nuser = \"portal\"\n"),
        "identity.user",
        Some(4),
    );
}

#[test]
fn scoped_api_tokens_read_their_name_hash_and_scope() {
    let hash = "cd".repeat(32);
    let c = ok(&format!(
        "{}[[api.tokens]]\nname = \"acme-portal\"\nsha256 = \"{hash}\"\napps = [\"{}\"]\nemails = [\"*@Acme.com\"]\n\n\
         [[api.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\n",
        app_with(""),
        UUID.to_uppercase(),
        "ef".repeat(32)
    ));
    let [scoped, open] = c.api.tokens.as_slice() else {
        panic!("two tokens: {:?}", c.api.tokens)
    };
    assert_eq!(scoped.name, "acme-portal");
    assert_eq!(scoped.hash, [0xcd; 32]);
    assert_eq!(scoped.apps.as_deref(), Some([UUID.to_string()].as_slice()));
    assert_eq!(scoped.emails.as_deref(), Some(["*@acme.com".to_string()].as_slice()));
    assert!(scoped.reaches_app(UUID) && !scoped.reaches_app("00000000-0000-4000-8000-000000000000"));
    assert!(scoped.reaches_email("ann@acme.com") && !scoped.reaches_email("ann@evil.com"));
    assert_eq!((open.apps.clone(), open.emails.clone()), (None, None));
    assert!(open.reaches_app(UUID) && open.reaches_email("anyone@anywhere"));
}

#[test]
fn scoped_api_tokens_are_checked() {
    let hash = "cd".repeat(32);
    let token = |body: &str| format!("{}[[api.tokens]]\n{body}\n", app_with(""));
    let e = one_err(&token("name = \"n\"\nsha256 = \"x\""), "api.tokens[0].sha256", Some(8));
    assert!(e.message.contains("64 lowercase hex"), "{e}");
    let list = errs(&token(&format!("sha256 = \"{hash}\"")));
    assert_eq!(list[0].key, "api.tokens[0].name");
    assert_eq!(list[0].message, "required key missing");
    let e = one_err(
        &token(&format!("name = \"a b\"\nsha256 = \"{hash}\"")),
        "api.tokens[0].name",
        Some(7),
    );
    assert!(e.message.starts_with("expected 1 to 64"), "{e}");
    let e = one_err(
        &token(&format!(
            "name = \"n\"\nsha256 = \"{hash}\"\napps = [\"00000000-0000-4000-8000-000000000000\"]"
        )),
        "api.tokens[0].apps[0]",
        Some(9),
    );
    assert!(e.message.contains("no [[apps]] entry"), "{e}");
    one_err(
        &token(&format!(
            "name = \"n\"\nsha256 = \"{hash}\"\nemails = [\"not-an-email\"]"
        )),
        "api.tokens[0].emails[0]",
        Some(9),
    );
    let twice = format!(
        "{}[[api.tokens]]\nname = \"a\"\nsha256 = \"{hash}\"\n[[api.tokens]]\nname = \"a\"\nsha256 = \"{hash}\"\n",
        app_with("")
    );
    let list = errs(&twice);
    let keys: Vec<&str> = list.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["api.tokens[1].name", "api.tokens[1].sha256"], "{list:#?}");
    let legacy =
        format!("{MINIMAL}[api]\ntoken_sha256 = [\"{hash}\"]\n[[api.tokens]]\nname = \"a\"\nsha256 = \"{hash}\"\n");
    let e = one_err(&legacy, "api.tokens[0].sha256", Some(7));
    assert!(e.message.contains("configured twice"), "{e}");
}

#[test]
fn app_public_url_gives_its_host_and_is_unique() {
    let c = ok(&app_with("public_url = \"https://Shop.Example.COM:8443/\"\n"));
    let host = c.apps[0].host.clone().expect("a host");
    assert_eq!(host.public_url, "https://Shop.Example.COM:8443");
    assert_eq!(host.name, "shop.example.com");
    assert_eq!(
        c.apps[0].public_base("https://gw.example.com"),
        "https://Shop.Example.COM:8443"
    );
    assert_eq!(
        ok(&app_with("")).apps[0].public_base("https://gw.example.com"),
        "https://gw.example.com"
    );

    let e = one_err(
        &app_with("public_url = \"https://shop.example.com/base\"\n"),
        "apps[0].public_url",
        Some(6),
    );
    assert!(e.message.contains("no path"), "{e}");
    let e = one_err(
        &app_with("public_url = \"https://GW.example.com:9443\"\n"),
        "apps[0].public_url",
        Some(6),
    );
    assert!(e.message.contains("server.public_url"), "{e}");
    one_err(
        &app_with("public_url = \"shop.example.com\"\n"),
        "apps[0].public_url",
        Some(6),
    );
    let two = format!(
        "{}\n[[apps]]\nid = \"2f4c6e8a-1b3d-4f5a-9c7e-0d2b4a6c8e1f\"\nupstream = \"http://127.0.0.1:3001\"\npublic_url = \"http://shop.example.com.\"\n",
        app_with("public_url = \"https://shop.example.com\"\n")
    );
    let e = one_err(&two, "apps[1].public_url", Some(11));
    assert!(e.message.contains("apps[0]"), "{e}");
}

#[test]
fn host_names_drop_port_case_and_trailing_dot() {
    assert_eq!(host_name("Shop.Example.com:443"), "shop.example.com");
    assert_eq!(host_name("shop.example.com."), "shop.example.com");
    assert_eq!(host_name("shop.example.com"), "shop.example.com");
    assert_eq!(host_name("[::1]:8443"), "[::1]");
    assert_eq!(host_name("[::1]"), "[::1]");
    assert_eq!(host_name("127.0.0.1:80"), "127.0.0.1");
}

#[test]
fn attribute_headers_are_header_name_safe_keys() {
    let c = ok(&app_with("attribute_headers = [\"department\", \"Cost_Center\"]\n"));
    let names: Vec<(&str, &str)> = c.apps[0]
        .attribute_headers
        .iter()
        .map(|(k, h)| (k.as_str(), h.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("department", "x-embed-attr-department"),
            ("Cost_Center", "x-embed-attr-cost_center")
        ]
    );
    for bad in ["a b", "a.b", "", "é"] {
        one_err(
            &app_with(&format!("attribute_headers = [{bad:?}]\n")),
            "apps[0].attribute_headers[0]",
            Some(6),
        );
    }
}

#[test]
fn more_certificates_and_published_keys_resolve_against_the_config_directory() {
    let c = ok(&format!(
        "{MINIMAL}[tls]\ncert = \"a.pem\"\nkey = \"a-key.pem\"\n[[tls.certificates]]\ncert = \"b.pem\"\nkey = \"/k/b-key.pem\"\n\n\
         [assertion]\nkey = \"k.pem\"\nprevious_keys = [\"old.pem\"]\nnext_keys = [\"new.pem\", \"newer.pem\"]\n"
    ));
    let tls = c.tls.expect("tls");
    assert_eq!(tls.certificates.len(), 1);
    assert_eq!(tls.certificates[0].cert, PathBuf::from("/etc/embedgate/b.pem"));
    assert_eq!(tls.certificates[0].key, PathBuf::from("/k/b-key.pem"));
    assert_eq!(tls.certificates[0].place, "tls.certificates[0]");
    assert_eq!(tls.certificates[0].lines, [Some(7), Some(8)]);
    let a = c.assertion.expect("assertion");
    let paths = |keys: &[KeyFile]| keys.iter().map(|k| (k.path.clone(), k.key.clone())).collect::<Vec<_>>();
    assert_eq!(
        paths(&a.previous_keys),
        [(
            PathBuf::from("/etc/embedgate/old.pem"),
            "assertion.previous_keys[0]".to_string()
        )]
    );
    assert_eq!(a.next_keys.len(), 2);
    assert_eq!(a.next_keys[1].line, Some(13));
    one_err(
        &format!("{MINIMAL}[tls]\ncert = \"a.pem\"\nkey = \"a-key.pem\"\n[[tls.certificates]]\ncert = \"b.pem\"\n"),
        "tls.certificates[0].key",
        Some(6),
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

mod access_tests {
    use super::super::{App, Upstream, User};

    fn app(users: &[&str], groups: &[&str]) -> App {
        App::new(
            "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc".into(),
            Upstream::new(http::Uri::from_static("http://127.0.0.1:1")),
            users.iter().map(|s| s.to_string()).collect(),
            groups.iter().map(|s| s.to_string()).collect(),
            vec![],
        )
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
        assert!(app(&["ann@example.com"], &[]).admits(&ann.email, &ann.groups));
        assert!(app(&["*@example.com"], &[]).admits(&ann.email, &ann.groups));
        assert!(app(&["*"], &[]).admits(&ann.email, &ann.groups));
        assert!(app(&[], &["sales"]).admits(&ann.email, &ann.groups));
        assert!(!app(&[], &[]).admits(&ann.email, &ann.groups));
        assert!(
            !app(&["*@ample.com"], &[]).admits(&ann.email, &ann.groups),
            "a domain pattern matches the whole domain"
        );
        assert!(!app(&["*@other.com", "bob@example.com"], &["ops"]).admits(&ann.email, &ann.groups));
    }
}

/// `load` looks for the files the config names, and reports a missing one
/// beside every other problem of the file, each at its key and line; the
/// files the demo makes at first start are not asked for with it on.
#[test]
fn load_reports_missing_files_with_every_other_problem() {
    let dir = tempfile::tempdir().expect("a dir");
    let path = dir.path().join("gateway.toml");
    let text = "[server]\npublic_url = \"https://gw.example.com\"\nlisen = \"127.0.0.1:1\"\n\
                [tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\
                [[apps]]\nid = \"8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc\"\nallow_users = [\"*\"]\n";
    std::fs::write(&path, text).expect("write");
    let errors = match load(&path) {
        Ok(_) => panic!("expected errors"),
        Err(ConfigErrors(list)) => list,
    };
    let keys: Vec<(&str, Option<usize>)> = errors.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        keys,
        [
            ("server.lisen", Some(3)),
            ("tls.cert", Some(5)),
            ("tls.key", Some(6)),
            ("apps[0].upstream", Some(7)),
        ],
        "{errors:#?}"
    );
    assert!(errors[1].message.ends_with("cert.pem: no such file"), "{errors:#?}");
    // With the demo on, the main pair is the demo's to make.
    std::fs::write(
        &path,
        format!("{text}upstream = \"http://127.0.0.1:3000\"\n[demo]\nenabled = true\n").replace("lisen", "listen"),
    )
    .expect("write");
    assert!(load(&path).is_ok(), "{:?}", load(&path).err());
}
