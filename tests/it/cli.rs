//! The command line: `embedgate check`, start-up refusals, the ready line and
//! `--log-format json` (SPEC §1).

use std::time::Duration;

use crate::common::*;

/// Lines 2, 4, 5, 6, 9, 10 and 12 are wrong, and `server.public_url`
/// (required) is missing.
const BAD: &str = r#"[server]
listen = "not-an-address"
admin_listen = "127.0.0.1:0"
bogus_key = 1
trusted_proxies = ["300.1.2.3/8"]
upstream_timeout_seconds = "soon"

[[apps]]
id = "not-a-uuid"
upstream = "ftp://example.com"

[nonsense_section]
x = 1
"#;

#[test]
fn check_lists_every_problem_with_file_line_and_key() {
    let dir = new_dir();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, BAD).unwrap();
    let out = run_check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "check must exit 1; stderr:\n{stderr}");

    let prefix = format!("{}:", path.display());
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(
        lines.len() >= 7,
        "want one `file:line: key: why` line per problem (at least 7), got:\n{stderr}"
    );
    for (line, key) in [
        (2, "listen"),
        (4, "bogus_key"),
        (5, "trusted_proxies"),
        (6, "upstream_timeout_seconds"),
        (9, "id"),
        (10, "upstream"),
        (12, "nonsense_section"),
    ] {
        let at = format!("{}:{line}: ", path.display());
        assert!(
            lines.iter().any(|l| l.starts_with(&at) && l[at.len()..].contains(key)),
            "no `{at}…{key}…: why` line in:\n{stderr}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("public_url")),
        "the missing required `server.public_url` is not reported:\n{stderr}"
    );
    // Every problem line has a reason after the key.
    for l in &lines {
        let rest = &l[prefix.len()..];
        let parts: Vec<&str> = rest.splitn(3, ": ").collect();
        assert_eq!(parts.len(), 3, "not `file:line: key: why`: {l}");
        assert!(!parts[2].trim().is_empty(), "no reason given: {l}");
    }
}

#[test]
fn check_accepts_a_complete_good_config() {
    let dir = new_dir();
    TestTls::generate(dir.path());
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        r#"[server]
listen = "127.0.0.1:0"
public_url = "https://localhost:8443"
admin_listen = "127.0.0.1:0"
shutdown_grace_seconds = 5
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
header_read_timeout_seconds = 10
upstream_connect_timeout_seconds = 5
upstream_timeout_seconds = 60
worker_threads = 0
tls_handshake_timeout_seconds = 10
max_connections = 1000
max_header_bytes = 65536

[tls]
cert = "cert.pem"
key = "key.pem"

[api]
token_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
max_body_bytes = 65536

[pat]
max_pat_expiry_seconds = 86400
max_session_expiry_minutes = 1440
default_pat_expiry_seconds = 3600
default_session_expiry_minutes = 60
single_use = true

[session]
cookie_name = "embedgate_session"
max_lifetime_minutes = 720

[rate_limit]
pat_create_per_minute = 60
pat_create_per_user_per_minute = 10
bad_pat_per_minute = 30

[store]
kind = "memory"

[[users]]
email = "user@example.com"
groups = ["sales"]

[[apps]]
id = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc"
upstream = "http://127.0.0.1:3000"
allow_users = ["user@example.com", "*@example.com"]
allow_groups = ["sales"]
frame_ancestors = ["https://portal.example.com"]

[passthrough]
upstream = "http://127.0.0.1:3000/base"
"#,
    )
    .unwrap();
    let out = run_check(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a good config was refused:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a newcomer's first `embedgate check` sees: the shipped demo config,
/// in a fresh checkout where the demo has not yet made its certificates and
/// signing key, passes without a warning.
#[test]
fn check_accepts_the_shipped_demo_config_before_its_files_exist() {
    let dir = new_dir();
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, shipped).unwrap();
    let out = run_check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(!stderr.contains("warning"), "stderr:\n{stderr}");
    assert!(!dir.path().join("certs").exists(), "check makes no files");
}

#[test]
fn check_reports_a_missing_tls_file() {
    let dir = new_dir();
    TestTls::generate(dir.path());
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://localhost\"\n\n\
         [tls]\ncert = \"no-such-cert.pem\"\nkey = \"key.pem\"\n",
    )
    .unwrap();
    let out = run_check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&format!("{}:6: ", path.display())) && l.contains("cert")),
        "no `file:6: tls.cert: …` line:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_an_invalid_config_exits_nonzero_without_serving() {
    let dir = new_dir();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, BAD).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(bin())
            .arg("--config")
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "embedgate ran on an invalid config: {:?}\nstderr:\n{stderr}",
        out.status
    );
    assert!(!stdout.contains("embedgate ready:"), "{stdout}");
    assert!(stderr.contains("bogus_key"), "the problems are not reported:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_line_says_admin_none_without_admin_listen() {
    let gw = Gateway::start(
        new_dir(),
        "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://localhost\"\n",
    )
    .await;
    assert_eq!(gw.admin_addr, None);
    assert_eq!(gw.public_url, format!("http://{}", gw.public_addr));
    assert_eq!(get(gw.public_addr, "/x").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_json_object_per_line() {
    let up = echo_upstream("a").await;
    let mut gw = Gateway::start_with_args(
        new_dir(),
        &config("", &passthrough(&up.url())),
        &["--log-format", "json"],
    )
    .await;
    assert_eq!(get(gw.public_addr, "/logged").await.status, 200);
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(5)).await.is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stderr = gw.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "nothing was logged");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
        assert!(v.is_object(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_never_logged() {
    let up = echo_upstream("a").await;
    let mut gw = Gateway::start_full(
        new_dir(),
        &config("", &passthrough(&up.url())),
        &[],
        &[("RUST_LOG", "embedgate=trace,info")],
    )
    .await;
    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(
        b"GET /embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc?personal-access-token=pat_0123456789abcdeffedcba9876543210 HTTP/1.1\r\n\
          Host: gw.example\r\n\
          Authorization: Basic c2VjcmV0LWFwaS10b2tlbg==\r\n\
          Cookie: embedgate_session=sekrit-session-value; other=sekrit-other-cookie\r\n\
          \r\n",
    )
    .await
    .unwrap();
    let _ = c.read_response(false).await.unwrap();
    c.send(
        b"GET /passthrough?personal-access-token=pat_fedcba98765432100123456789abcdef HTTP/1.1\r\n\
          Host: gw.example\r\n\
          Authorization: Bearer sekrit-bearer\r\n\
          Cookie: embedgate_session=sekrit-session-2\r\n\
          \r\n",
    )
    .await
    .unwrap();
    assert_eq!(c.read_response(false).await.unwrap().status, 200);
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(5)).await.is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stderr = gw.stderr();
    // The capture holds both requests, so that no secret in it means something.
    for target in [
        "/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc?personal-access-token=REDACTED",
        "/passthrough?personal-access-token=REDACTED",
    ] {
        assert!(stderr.contains(target), "the access log lacks {target}:\n{stderr}");
    }
    for secret in [
        "pat_0123456789abcdeffedcba9876543210",
        "pat_fedcba98765432100123456789abcdef",
        "c2VjcmV0LWFwaS10b2tlbg==",
        "sekrit-session-value",
        "sekrit-other-cookie",
        "sekrit-bearer",
        "sekrit-session-2",
    ] {
        assert!(!stderr.contains(secret), "`{secret}` appears in the logs:\n{stderr}");
    }
}

#[test]
fn check_accepts_the_redis_store_and_never_echoes_its_password() {
    let dir = new_dir();
    let path = dir.path().join("gateway.toml");
    let config = |url: &str| {
        format!(
            "[server]\npublic_url = \"http://localhost:8080\"\n\n[assertion]\nkey = \"k.pem\"\n\n\
             [store]\nkind = \"redis\"\nurl = \"{url}\"\n"
        )
    };
    AssertionKey::ed25519(dir.path(), "k.pem");
    // Reaching Redis is not `check`'s business: a replica may start first.
    std::fs::write(&path, config("redis://:pw-s3cret@127.0.0.1:1/0")).expect("write config");
    let out = run_check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // A URL that cannot be used is named by its key and line, never shown.
    std::fs::write(&path, config("redis://:pw-s3cret@[::1/0")).expect("write config");
    let out = run_check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("gateway.toml:9: store.url: not a usable"), "{stderr}");
    assert!(!stderr.contains("pw-s3cret"), "{stderr}");
}

/// A config without an API token is valid (the gateway can still proxy),
/// but every mint would get 401: `check` says so as a warning, and `-c`
/// is `--config`; `--help` says that no command runs the gateway.
#[test]
fn check_warns_when_no_api_token_is_configured() {
    let dir = new_dir();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "[server]\npublic_url = \"https://gw.example.com\"\n").expect("write");
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run embedgate check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning is no failure: {stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("api: no API token"),
        "stderr:\n{stderr}"
    );
    let help = std::process::Command::new(bin())
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Without a command, runs the gateway"), "{help}");
    assert!(help.contains("-c, --config"), "{help}");
}
