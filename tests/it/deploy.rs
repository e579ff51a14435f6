//! The systemd unit, `deploy/embedgate.service` (issue 9): its hardening
//! and lifecycle settings are there with the values the README promises,
//! its command line is one the binary accepts, and `systemd-analyze verify`
//! finds nothing wrong with it.
//!
//! The last needs `systemd-analyze` (Debian's `systemd` package): without it
//! that test prints why and passes, unless `EMBEDGATE_CI_STRICT` is set (as
//! `.ci/run` does, after installing it).

use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT: &str = include_str!("../../deploy/embedgate.service");
const README: &str = include_str!("../../README.md");

/// Where the unit expects the binary; the tests swap in the one just built.
const INSTALLED_BINARY: &str = "/usr/local/bin/embedgate";

/// One `Key=value` assignment of a unit file.
struct Setting {
    section: String,
    key: String,
    value: String,
    line: usize,
}

/// The assignments of a unit file, in order (systemd's syntax: `[Section]`
/// headers, `#` and `;` comments, a trailing `\` continues a line).
fn parse_unit(text: &str) -> Vec<Setting> {
    let mut settings = Vec::new();
    let mut section = String::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (line_no, line) = match pending.take() {
            Some((start, mut acc)) => {
                acc.push(' ');
                acc.push_str(raw.trim());
                (start, acc)
            }
            None => {
                let t = raw.trim();
                if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
                    continue;
                }
                (i + 1, t.to_string())
            }
        };
        if let Some(cont) = line.strip_suffix('\\') {
            pending = Some((line_no, cont.trim_end().to_string()));
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("deploy/embedgate.service:{line_no}: not a Key=value line: {line:?}"));
        settings.push(Setting {
            section: section.clone(),
            key: key.trim().to_string(),
            value: value.trim().to_string(),
            line: line_no,
        });
    }
    assert!(
        pending.is_none(),
        "deploy/embedgate.service ends inside a continued line"
    );
    settings
}

/// Every value of `key` in `[Service]`.
fn service_values<'a>(settings: &'a [Setting], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|s| s.section == "Service" && s.key == key)
        .map(|s| s.value.as_str())
        .collect()
}

/// The one value of a single-valued `[Service]` key (a second assignment
/// would silently override the first).
fn service_value<'a>(settings: &'a [Setting], key: &str) -> &'a str {
    match service_values(settings, key).as_slice() {
        [one] => one,
        [] => panic!("deploy/embedgate.service: [Service] {key}= is missing"),
        many => panic!(
            "deploy/embedgate.service: [Service] {key}= is set {} times: {many:?}",
            many.len()
        ),
    }
}

/// A systemd time span in seconds: `45`, `45s`, `1min 30s`, `2m`.
fn seconds(span: &str) -> u64 {
    let mut total = 0;
    for part in span.split_whitespace() {
        let digits = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len());
        let (n, unit) = part.split_at(digits);
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("not a time span: {span:?}"));
        total += n * match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1,
            "m" | "min" | "minute" | "minutes" => 60,
            "h" | "hr" | "hour" | "hours" => 3600,
            _ => panic!("unexpected unit in time span {span:?}"),
        };
    }
    total
}

/// The default of a `[server]` key, from the README's reference table
/// (`| `key` | default | meaning |`).
fn readme_server_default(key: &str) -> u64 {
    let prefix = format!("| `{key}` | ");
    let line = README
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("README.md has no table row for `{key}`"));
    let cell = line[prefix.len()..].split('|').next().unwrap_or_default().trim();
    cell.parse()
        .unwrap_or_else(|_| panic!("README.md: the default of `{key}` is not a number: {cell:?}"))
}

#[test]
fn unit_has_the_hardening_and_lifecycle_settings() {
    let settings = parse_unit(UNIT);
    let expected = [
        (
            "ExecStart",
            "/usr/local/bin/embedgate --config /etc/embedgate/gateway.toml --log-format json",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("EnvironmentFile", "-/etc/embedgate/env"),
        ("DynamicUser", "yes"),
        ("ConfigurationDirectory", "embedgate"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
    ];
    for (key, value) in expected {
        assert_eq!(service_value(&settings, key), value, "[Service] {key}=");
    }

    // Several SystemCallFilter= lines combine; the allow list must be there.
    let filters = service_values(&settings, "SystemCallFilter");
    assert!(
        filters.contains(&"@system-service"),
        "[Service] SystemCallFilter=@system-service is missing: {filters:?}"
    );

    let restart_sec = seconds(service_value(&settings, "RestartSec"));
    assert!(restart_sec >= 1, "RestartSec={restart_sec}: a crash loop would spin");

    // A drain may take the whole grace period; systemd must not kill it.
    let grace = readme_server_default("shutdown_grace_seconds");
    let stop = seconds(service_value(&settings, "TimeoutStopSec"));
    assert!(
        stop > grace,
        "TimeoutStopSec={stop} must exceed the default shutdown_grace_seconds ({grace})"
    );

    // A client connection may hold an upstream connection (or a tunnel) too.
    let max_connections = readme_server_default("max_connections");
    let nofile: u64 = service_value(&settings, "LimitNOFILE")
        .parse()
        .expect("LimitNOFILE is a number");
    assert!(
        nofile >= 2 * max_connections,
        "LimitNOFILE={nofile} leaves no room for max_connections ({max_connections}) and their upstreams"
    );
}

#[test]
fn unit_parser_sees_a_removed_setting() {
    // The check above is only as good as the parser: a commented-out line
    // and a misplaced section must not count.
    let without = UNIT.replace("\nMemoryDenyWriteExecute=yes", "\n# MemoryDenyWriteExecute=yes");
    assert_ne!(without, UNIT, "MemoryDenyWriteExecute=yes is not a line of the unit");
    assert!(service_values(&parse_unit(&without), "MemoryDenyWriteExecute").is_empty());

    let moved = "[Unit]\nProtectSystem=strict\n[Service]\nExecStart=/bin/true\n";
    let settings = parse_unit(moved);
    assert!(service_values(&settings, "ProtectSystem").is_empty());
    assert_eq!(settings[0].line, 2);
}

#[test]
fn unit_command_line_is_accepted_by_the_binary() {
    // ExecStart's options, with the config swapped for a minimal valid one
    // and `check` appended: exit 0, not a usage error.
    let settings = parse_unit(UNIT);
    let exec = service_value(&settings, "ExecStart");
    let mut args: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(args.remove(0), INSTALLED_BINARY);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, "[server]\npublic_url = \"https://embed.example.com\"\n").expect("write config");
    let at = args
        .iter()
        .position(|a| a == "--config")
        .expect("ExecStart passes --config");
    args[at + 1] = config.display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_embedgate"))
        .args(&args)
        .arg("check")
        .output()
        .expect("run embedgate");
    assert!(
        out.status.success(),
        "embedgate {args:?} check: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `systemd-analyze`, or `None` (with the reason printed) when the machine
/// has none; under `EMBEDGATE_CI_STRICT` its absence is a failure.
fn systemd_analyze() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::split_paths(&path).chain(["/usr/bin", "/bin"].map(PathBuf::from));
    for dir in candidates {
        let tool = dir.join("systemd-analyze");
        if tool.is_file() {
            return Some(tool);
        }
    }
    assert!(
        std::env::var_os("EMBEDGATE_CI_STRICT").is_none(),
        "systemd-analyze is required under EMBEDGATE_CI_STRICT (apt-get install systemd)"
    );
    eprintln!("skipping systemd-analyze verify: systemd-analyze is not installed (apt-get install systemd)");
    None
}

/// `systemd-analyze verify` of `unit` (saved as `embedgate.service` in a
/// fresh folder, ExecStart pointing at the binary just built, since verify
/// refuses a command that does not exist): its exit status and output.
fn verify(tool: &Path, unit: &str) -> (bool, String) {
    let binary = env!("CARGO_BIN_EXE_embedgate");
    let exec = format!("ExecStart={INSTALLED_BINARY} ");
    assert!(
        unit.contains(&exec),
        "the unit's ExecStart does not run {INSTALLED_BINARY}"
    );
    let unit = unit.replace(&exec, &format!("ExecStart=\"{binary}\" "));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("embedgate.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new(tool)
        .arg("verify")
        // No man page lookups (Documentation=): offline, and no man-db needed.
        .arg("--man=no")
        .arg(&path)
        // Warnings are what this test reads: none hidden by a quieter level
        // from the environment, no debug dump from a louder one, no colour.
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .env("SYSTEMD_LOG_COLOR", "0")
        .env("SYSTEMD_LOG_TARGET", "console")
        .env_remove("SYSTEMD_UNIT_PATH")
        .output()
        .expect("run systemd-analyze");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), output)
}

/// The lines of verify's output that find fault with our unit: anything
/// naming it, and any setting systemd did not understand.
fn complaints(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| {
            l.contains("embedgate.service")
                || l.contains("Unknown key")
                || l.contains("Unknown section")
                || l.contains("Failed to parse")
                || l.contains("ignoring")
        })
        .collect()
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Some(tool) = systemd_analyze() else { return };

    let (ok, output) = verify(&tool, UNIT);
    assert!(ok, "systemd-analyze verify failed:\n{output}");
    let found = complaints(&output);
    assert!(found.is_empty(), "systemd-analyze verify warns:\n{output}");
    if !output.trim().is_empty() {
        eprintln!("systemd-analyze verify (nothing about embedgate.service):\n{output}");
    }

    // The same check must catch a misspelt key and a bad value, or its
    // silence above proves nothing.
    let broken = UNIT
        .replace("\nProtectSystem=strict", "\nProtectSystm=strict")
        .replace("\nPrivateTmp=yes", "\nPrivateTmp=maybe");
    assert_ne!(broken, UNIT);
    let (_, output) = verify(&tool, &broken);
    let found = complaints(&output);
    assert!(
        found.iter().any(|l| l.contains("ProtectSystm")) && found.iter().any(|l| l.contains("maybe")),
        "systemd-analyze verify did not report a misspelt key and a bad value:\n{output}"
    );
}
