//! The gateway under test: the real `embedgate` binary as a child process
//! (started on `127.0.0.1:0`, ready once it prints its `embedgate ready:`
//! line, killed on drop), `embedgate check`, and the configs the tests
//! start it on.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A `[server]` table on ephemeral loopback ports, with `extra` lines in it,
/// followed by `sections`.
pub fn config(server_extra: &str, sections: &str) -> String {
    format!(
        "[server]\n\
         listen = \"127.0.0.1:0\"\n\
         public_url = \"http://localhost:8080\"\n\
         admin_listen = \"127.0.0.1:0\"\n\
         {server_extra}\n\n\
         {sections}\n"
    )
}

pub fn passthrough(upstream: &str) -> String {
    format!("[passthrough]\nupstream = \"{upstream}\"\n")
}

/// `[tls]` pointing at the files [`TestTls::generate`](super::TestTls::generate)
/// writes, relative to the config file's directory (the gateway runs from
/// another directory).
pub fn tls_section() -> String {
    "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n".to_string()
}

/// A running `embedgate` child process, killed (by PID) on drop.
pub struct Gateway {
    pub dir: TempDir,
    pub config_path: PathBuf,
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` as printed.
    pub public_url: String,
    pub public_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    child: Child,
    exited: Option<ExitStatus>,
    stderr: Arc<Mutex<String>>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_embedgate")
}

pub fn new_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("embedgate-test")
        .tempdir()
        .expect("tempdir")
}

impl Gateway {
    /// Writes `config` to `dir/gateway.toml` and starts the gateway on it.
    pub async fn start(dir: TempDir, config: &str) -> Gateway {
        Gateway::start_with_args(dir, config, &[]).await
    }

    pub async fn start_with_args(dir: TempDir, config: &str, extra: &[&str]) -> Gateway {
        Gateway::start_full(dir, config, extra, &[]).await
    }

    /// `env` entries override the harness's own (`RUST_LOG=info`).
    pub async fn start_full(dir: TempDir, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(&config_path)
            .args(extra)
            // Not the config's directory: relative paths must be resolved
            // against the config file, not the working directory.
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn embedgate");

        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let pipe = child.stderr.take().expect("stderr pipe");
            let sink = stderr.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(pipe);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => sink.lock().unwrap().push_str(&String::from_utf8_lossy(&line)),
                    }
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        {
            let pipe = child.stdout.take().expect("stdout pipe");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line);
                }
            });
        }

        let mut gw = Gateway {
            dir,
            config_path,
            public_url: String::new(),
            public_addr: "127.0.0.1:1".parse().unwrap(),
            admin_addr: None,
            child,
            exited: None,
            stderr,
        };

        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            while let Ok(line) = rx.try_recv() {
                if let Some((public_url, public_addr, admin)) = parse_ready(&line) {
                    gw.public_url = public_url;
                    gw.public_addr = public_addr;
                    gw.admin_addr = admin;
                    return gw;
                }
                seen.push(line);
            }
            if let Ok(Some(status)) = gw.child.try_wait() {
                gw.exited = Some(status);
                // Let the reader threads drain.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "embedgate exited ({status}) before its ready line\nstdout:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    gw.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "embedgate printed no `embedgate ready:` line within 20 s\nstdout:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    gw.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `sig` (`TERM`, `INT`, `HUP`, …) to the gateway by PID.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Replaces the config file (for a reload).
    pub fn write_config(&self, text: &str) {
        // Write then rename, as an operator's editor or deploy tool would, so
        // the gateway never reads half a file.
        let tmp = self.dir.path().join("gateway.toml.new");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Waits up to `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return self.exited;
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            _ => true,
        }
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin_addr.expect("gateway has an admin listener")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- embedgate stderr (pid {}) ----\n{}\n---- end ----",
                self.child.id(),
                self.stderr()
            );
        }
    }
}

fn parse_ready(line: &str) -> Option<(String, SocketAddr, Option<SocketAddr>)> {
    let rest = line.trim().strip_prefix("embedgate ready:")?;
    let mut public = None;
    let mut admin = None;
    let mut admin_seen = false;
    for tok in rest.split_whitespace() {
        if let Some(v) = tok.strip_prefix("public=") {
            let addr: SocketAddr = v.split("://").nth(1)?.trim_end_matches('/').parse().ok()?;
            public = Some((v.to_string(), addr));
        } else if let Some(v) = tok.strip_prefix("admin=") {
            admin_seen = true;
            if v != "none" {
                admin = Some(v.split("://").nth(1)?.trim_end_matches('/').parse().ok()?);
            }
        }
    }
    let (url, addr) = public?;
    if !admin_seen {
        return None;
    }
    Some((url, addr, admin))
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} not in /proc/{pid}/status"));
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("parse kB")
}

/// Runs `embedgate check --config PATH` to completion.
pub fn run_check(config_path: &Path) -> std::process::Output {
    Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(config_path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("run embedgate check")
}
