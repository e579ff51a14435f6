//! Redis for the cluster tests (SPEC §7): Debian's `redis-server` as a child
//! process on a free loopback port ([`RedisServer`]), stopped and restarted on
//! the same port to stage an outage, killed on drop; and a hand-written RESP
//! client ([`RedisClient`]) to look at what the gateway stored and how many
//! commands it cost, so that nothing but `redis-server` is needed.
//!
//! Needs `/usr/bin/redis-server` (or `EMBEDGATE_REDIS_SERVER`). Without it
//! [`RedisServer::start`] prints why and returns `None`, and the test passes,
//! unless `EMBEDGATE_CI_STRICT` is set (as `.ci/run` does, after installing
//! it), where a skip is a failure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::gateway::new_dir;
use super::T;

/// The `redis-server` binary, or `None` (after saying why) when there is none
/// and a skip is allowed.
pub fn redis_server_bin() -> Option<PathBuf> {
    let candidates = std::env::var_os("EMBEDGATE_REDIS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/redis-server"].map(PathBuf::from));
    for path in candidates {
        if path.exists() {
            return Some(path);
        }
    }
    assert!(
        std::env::var_os("EMBEDGATE_CI_STRICT").is_none(),
        "redis-server is required under EMBEDGATE_CI_STRICT (apt-get install redis-server)"
    );
    eprintln!("skipping the cluster test: redis-server is not installed (apt-get install redis-server)");
    None
}

/// A `redis-server` child process on `127.0.0.1:port`, without persistence
/// (a restart starts empty), killed (by PID) on drop.
pub struct RedisServer {
    pub port: u16,
    password: Option<String>,
    bin: PathBuf,
    /// Its working directory and log file.
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis on a free loopback port; `None` when it is not installed.
    pub async fn start() -> Option<RedisServer> {
        RedisServer::start_inner(None).await
    }

    /// Like [`RedisServer::start`], with `--requirepass password`.
    pub async fn start_with_password(password: &str) -> Option<RedisServer> {
        RedisServer::start_inner(Some(password.to_string())).await
    }

    async fn start_inner(password: Option<String>) -> Option<RedisServer> {
        let bin = redis_server_bin()?;
        let mut server = RedisServer {
            port: 0,
            password,
            bin,
            dir: new_dir(),
            child: None,
        };
        // A released port can be taken again before Redis binds it: try a
        // few.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn().await {
                Ok(()) => return Some(server),
                Err(why) => last = why,
            }
        }
        panic!("redis-server would not start on a free port: {last}");
    }

    /// `redis://127.0.0.1:PORT/0`, with the password when there is one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// Kills the server (SIGKILL, by PID): every connection to it drops at
    /// once and its data is gone, as in a crash.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub async fn restart(&mut self) {
        self.stop();
        // The port was ours a moment ago; give a lingering socket a few tries.
        let mut last = String::new();
        for _ in 0..20 {
            match self.spawn().await {
                Ok(()) => return,
                Err(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server would not start again on port {}: {last}", self.port);
    }

    /// A new client connection, authenticated when the server wants it.
    pub async fn client(&self) -> RedisClient {
        RedisClient::connect(self.port, self.password.as_deref())
            .await
            .unwrap_or_else(|e| panic!("connect to redis on port {}: {e}", self.port))
    }

    /// What the server wrote to its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Spawns the process and waits until it answers PING; on failure the
    /// process is gone again and the reason is returned.
    async fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        if let Some(pw) = &self.password {
            cmd.arg("--requirepass").arg(pw);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + T;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("redis-server exited ({status}); log:\n{}", self.log()));
            }
            if let Ok(mut c) = RedisClient::connect(self.port, self.password.as_deref()).await {
                if let Ok(Resp::Simple(pong)) = c.try_cmd(["PING"]).await {
                    if pong == "PONG" {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("no PONG within {T:?}; log:\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None`: the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None`: the null array.
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The reply as text (simple or bulk string), panicking otherwise.
    pub fn text(&self) -> String {
        match self {
            Resp::Simple(s) => s.clone(),
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    /// The reply as an integer, panicking otherwise.
    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(n) => *n,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    /// Every string in the reply, depth first (for arrays of any shape).
    pub fn strings(&self) -> Vec<Vec<u8>> {
        match self {
            Resp::Simple(s) | Resp::Error(s) => vec![s.as_bytes().to_vec()],
            Resp::Int(n) => vec![n.to_string().into_bytes()],
            Resp::Bulk(Some(b)) => vec![b.clone()],
            Resp::Bulk(None) | Resp::Array(None) => Vec::new(),
            Resp::Array(Some(items)) => items.iter().flat_map(Resp::strings).collect(),
        }
    }
}

/// A raw RESP2 client on one TCP connection (commands as arrays of bulk
/// strings, RESP §"Sending commands to a Redis server").
pub struct RedisClient {
    stream: BufReader<TcpStream>,
}

impl RedisClient {
    /// Connects to `127.0.0.1:port`, sending `AUTH password` when given.
    pub async fn connect(port: u16, password: Option<&str>) -> std::io::Result<RedisClient> {
        let tcp = tokio::time::timeout(T, TcpStream::connect(("127.0.0.1", port)))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let mut c = RedisClient {
            stream: BufReader::new(tcp),
        };
        if let Some(pw) = password {
            match c.try_cmd(["AUTH", pw]).await? {
                Resp::Simple(ok) if ok == "OK" => {}
                other => return Err(std::io::Error::other(format!("AUTH answered {other:?}"))),
            }
        }
        Ok(c)
    }

    /// Sends one command and reads its reply.
    pub async fn try_cmd<I, A>(&mut self, args: I) -> std::io::Result<Resp>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        let args: Vec<A> = args.into_iter().collect();
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in &args {
            let a = a.as_ref();
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let io = async {
            self.stream.get_mut().write_all(&out).await?;
            read_resp(&mut self.stream).await
        };
        tokio::time::timeout(T, io)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "redis reply timed out"))?
    }

    /// Sends one command, panicking on an I/O error or an error reply.
    pub async fn cmd<I, A>(&mut self, args: I) -> Resp
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        let args: Vec<A> = args.into_iter().collect();
        let shown: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
            .collect();
        match self.try_cmd(args).await {
            Ok(Resp::Error(e)) => panic!("redis {shown:?}: {e}"),
            Ok(r) => r,
            Err(e) => panic!("redis {shown:?}: {e}"),
        }
    }

    /// Every key, by SCAN (not KEYS, as one would on a server in use).
    pub async fn keys(&mut self) -> Vec<Vec<u8>> {
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        loop {
            let r = self.cmd(["SCAN", cursor.as_str(), "COUNT", "1000"]).await;
            let Resp::Array(Some(parts)) = r else {
                panic!("SCAN answered {r:?}");
            };
            cursor = parts[0].text();
            keys.extend(parts[1].strings());
            if cursor == "0" {
                keys.sort();
                keys.dedup();
                return keys;
            }
        }
    }

    /// `TYPE key`.
    pub async fn key_type(&mut self, key: &[u8]) -> String {
        self.cmd([&b"TYPE"[..], key]).await.text()
    }

    /// `PTTL key`: milliseconds left, -1 without a TTL, -2 without the key.
    pub async fn pttl(&mut self, key: &[u8]) -> i64 {
        self.cmd([&b"PTTL"[..], key]).await.int()
    }

    /// Every string held under `key`, whatever its type (string, set, hash,
    /// list, sorted set with its scores).
    pub async fn value_strings(&mut self, key: &[u8]) -> Vec<Vec<u8>> {
        let ty = self.key_type(key).await;
        let reply = match ty.as_str() {
            "string" => self.cmd([&b"GET"[..], key]).await,
            "set" => self.cmd([&b"SMEMBERS"[..], key]).await,
            "hash" => self.cmd([&b"HGETALL"[..], key]).await,
            "list" => self.cmd::<[&[u8]; 4], _>([b"LRANGE", key, b"0", b"-1"]).await,
            "zset" => {
                self.cmd::<[&[u8]; 5], _>([b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])
                    .await
            }
            "stream" => self.cmd::<[&[u8]; 4], _>([b"XRANGE", key, b"-", b"+"]).await,
            // Gone between SCAN and TYPE.
            "none" => Resp::Array(Some(Vec::new())),
            other => panic!("key {:?} has type {other}", String::from_utf8_lossy(key)),
        };
        reply.strings()
    }

    /// `CONFIG RESETSTAT`: zeroes the command statistics.
    pub async fn reset_stats(&mut self) {
        assert_eq!(self.cmd(["CONFIG", "RESETSTAT"]).await, Resp::Simple("OK".into()));
    }

    /// `INFO commandstats` as command name → calls (`config|get` style names
    /// for subcommands).
    pub async fn command_calls(&mut self) -> BTreeMap<String, u64> {
        let info = self.cmd(["INFO", "commandstats"]).await.text();
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.trim().strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .collect()
    }
}

/// Reads one RESP2 value.
async fn read_resp(r: &mut BufReader<TcpStream>) -> std::io::Result<Resp> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).await? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "redis closed the connection",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad(format!("a line without CRLF: {line:?}")));
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let number = |s: &str| s.parse::<i64>().map_err(|_| bad(format!("not a number: {s:?}")));
    match line[0] {
        b'+' => Ok(Resp::Simple(text)),
        b'-' => Ok(Resp::Error(text)),
        b':' => Ok(Resp::Int(number(&text)?)),
        b'$' => {
            let n = number(&text)?;
            if n < 0 {
                return Ok(Resp::Bulk(None));
            }
            let mut b = vec![0u8; n as usize + 2];
            r.read_exact(&mut b).await?;
            b.truncate(n as usize);
            Ok(Resp::Bulk(Some(b)))
        }
        b'*' => {
            let n = number(&text)?;
            if n < 0 {
                return Ok(Resp::Array(None));
            }
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                items.push(Box::pin(read_resp(r)).await?);
            }
            Ok(Resp::Array(Some(items)))
        }
        other => Err(bad(format!("unknown RESP type byte {other:#x}"))),
    }
}
