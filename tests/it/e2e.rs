//! The browser suite (`e2e/`, Playwright driving Debian's Chromium) from
//! `cargo test`: installs its npm packages from the lockfile, then runs it
//! against this build's gateway binary. Each scenario saves a screenshot
//! under `e2e/test-results/`.
//!
//! Needs Node (with npm) and Chromium (`/usr/bin/chromium`, or `CHROMIUM`);
//! without them the test prints why and passes, unless
//! `EMBEDGATE_CI_STRICT` is set (as `.ci/run` does), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why the suite cannot run here, if it cannot.
fn missing() -> Option<String> {
    let chromium = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !found("node") || !found("npm") {
        return Some("Node.js and npm are not installed (apt-get install nodejs npm)".into());
    }
    if !chromium.exists() {
        return Some(format!(
            "Chromium is not at {} (apt-get install chromium)",
            chromium.display()
        ));
    }
    None
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("EMBEDGATE_BIN", env!("CARGO_BIN_EXE_embedgate"))
        // Never a browser download: the suite drives Debian's Chromium.
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        status.success(),
        "`{program} {}` failed in {}",
        args.join(" "),
        dir.display()
    );
}

#[test]
fn the_browser_suite_passes() {
    if let Some(why) = missing() {
        assert!(
            std::env::var_os("EMBEDGATE_CI_STRICT").is_none(),
            "the browser suite is required under EMBEDGATE_CI_STRICT: {why}"
        );
        eprintln!("skipping the browser suite: {why}");
        return;
    }
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
    run(&e2e, "npm", &["ci", "--no-audit", "--no-fund"]);
    run(&e2e, "npx", &["playwright", "test"]);
}
