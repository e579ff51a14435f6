//! Upstream apps written in other languages, run as child processes: the
//! WSGI app of `tests/fixtures/wsgi_echo.py` (Python's stdlib
//! `wsgiref`) and the Node app of `tests/fixtures/node_echo.mjs`
//! (`node:http`). Each binds `127.0.0.1:0`, prints its port on stdout and
//! is killed (by PID) on drop.
//!
//! Python or Node may be missing on a developer's machine: [`ScriptApp::start`]
//! then says why and returns `None` (the test passes), unless
//! `EMBEDGATE_CI_STRICT` is set, where a missing runtime is a failure.
//!
//! A module of its own under `common` (`use crate::common::script_apps;`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running child-process upstream.
pub struct ScriptApp {
    pub addr: SocketAddr,
    child: Child,
}

impl ScriptApp {
    /// `program fixture` (`fixture` relative to the crate's root), waiting
    /// for the port it prints; `None` when `program` is not installed.
    pub async fn start(program: &str, fixture: &str) -> Option<ScriptApp> {
        let runnable = Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !runnable {
            assert!(
                std::env::var_os("EMBEDGATE_CI_STRICT").is_none(),
                "{program} is required under EMBEDGATE_CI_STRICT (for {fixture})"
            );
            eprintln!("skipping: {program} is not installed (needed for {fixture})");
            return None;
        }
        let mut child = Command::new(program)
            .arg(fixture)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} {fixture}: {e}"));
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(15)))
            .await
            .expect("port reader");
        let port: u16 = match line.as_deref().map(str::trim).map(str::parse) {
            Ok(Ok(port)) => port,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{program} {fixture} printed no port: {other:?}");
            }
        };
        Some(ScriptApp {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        })
    }

    /// The WSGI echo app.
    pub async fn wsgi() -> Option<ScriptApp> {
        ScriptApp::start("python3", "tests/fixtures/wsgi_echo.py").await
    }

    /// The Node echo app.
    pub async fn node() -> Option<ScriptApp> {
        ScriptApp::start("node", "tests/fixtures/node_echo.mjs").await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests the app has seen (asked of it directly, not
    /// through the gateway).
    pub async fn count(&self) -> u64 {
        let r = crate::common::get(self.addr, "/__stats").await;
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["count"].as_u64().expect("a count")
    }
}

impl Drop for ScriptApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
