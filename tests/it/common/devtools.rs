//! Headless Chromium driven over the DevTools protocol, for tests that
//! watch what the browser itself decides (a frame it refuses, a console
//! message): `tests/it/browser.rs` and `tests/it/adversarial_edges.rs`.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `EMBEDGATE_CHROMIUM`). Without it
//! [`chromium`] says why and returns `None` (the test passes), unless
//! `EMBEDGATE_CI_STRICT` is set, where a skip is a failure.
//!
//! A module of its own under `common` (`use crate::common::devtools;`): its
//! names are not in the glob the test files take.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Chromium's path, or `None` (said why) when it is not installed.
pub fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("EMBEDGATE_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from));
    for path in candidates {
        if path.exists() {
            return Some(path);
        }
    }
    assert!(
        std::env::var_os("EMBEDGATE_CI_STRICT").is_none(),
        "Chromium is required under EMBEDGATE_CI_STRICT (apt-get install chromium)"
    );
    eprintln!("skipping the browser test: Chromium is not installed (apt-get install chromium)");
    None
}

/// Headless, and quiet: nothing of its own on the network.
pub const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Headless Chromium driven over the DevTools protocol (just the commands
/// these tests need), killed on drop.
pub struct Devtools {
    child: std::process::Child,
    _profile: tempfile::TempDir,
    socket: tokio::sync::Mutex<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Every event read so far, in order (they arrive between answers).
    events: std::sync::Mutex<Vec<serde_json::Value>>,
}

impl Devtools {
    pub async fn launch(chromium: &PathBuf) -> Devtools {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(chromium)
            .args(CHROMIUM_FLAGS)
            // The dev certificate of a throw-away gateway.
            .args(["--ignore-certificate-errors", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes its port and browser target here once listening.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                break (port.to_string(), path.to_string());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .expect("connect to devtools");
        let (socket, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}{path}"), stream)
            .await
            .expect("devtools handshake");
        Devtools {
            child,
            _profile: profile,
            socket: tokio::sync::Mutex::new(socket),
            next_id: std::sync::atomic::AtomicU64::new(1),
            events: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Sends one command (to a page's session when given) and returns its
    /// `result`, keeping the events in between for [`Devtools::events`].
    pub async fn call(&self, session: Option<&str>, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut command = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = session.into();
        }
        let mut socket = self.socket.lock().await;
        socket
            .send(Message::text(command.to_string()))
            .await
            .expect("devtools send");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
                .await
                .unwrap_or_else(|_| panic!("devtools: no answer to {method}"))
                .expect("devtools closed")
                .expect("devtools read");
            let Message::Text(text) = message else { continue };
            let reply: serde_json::Value = serde_json::from_str(text.as_str()).expect("devtools JSON");
            if reply.get("method").is_some() {
                self.events.lock().unwrap().push(reply);
                continue;
            }
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "devtools {method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page; returns the page's session.
    pub async fn open(&self, url: &str) -> String {
        let target = self
            .call(None, "Target.createTarget", serde_json::json!({"url": url}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                serde_json::json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        attached["sessionId"].as_str().expect("a session").to_string()
    }

    /// The `params` of every event `method` of the page's session read so
    /// far (events are read while waiting for answers: call something first).
    pub fn events(&self, session: &str, method: &str) -> Vec<serde_json::Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|event| event["sessionId"] == session && event["method"] == method)
            .map(|event| event["params"].clone())
            .collect()
    }

    /// The text of the element `id` now (empty while there is none).
    pub async fn text_of(&self, session: &str, id: &str) -> String {
        let expression = format!("(document.getElementById('{id}') || {{}}).textContent || ''");
        let result = self
            .call(
                Some(session),
                "Runtime.evaluate",
                serde_json::json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].as_str().unwrap_or("").to_string()
    }

    /// Polls the text of the element `id` until it contains `want` or
    /// `limit` passes; returns the last text seen.
    pub async fn wait_for_text(&self, session: &str, id: &str, want: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let text = self.text_of(session, id).await;
            if text.contains(want) || std::time::Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Devtools {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
