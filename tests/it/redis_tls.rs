//! The Redis store over TLS (`rediss://`, SPEC §7): a real `redis-server`
//! speaking only TLS with a throw-away CA, trusted by the gateway the way an
//! operator trusts a private CA — through `SSL_CERT_FILE`, which the
//! platform-roots loader reads.
//!
//! Needs `redis-server` built with TLS (Debian's is); without it the test
//! prints why and passes, unless `EMBEDGATE_CI_STRICT` is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::json;

/// A `redis-server` that speaks only TLS, killed on drop.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsRedis {
    fn start(dir: &std::path::Path) -> Option<TlsRedis> {
        let bin = redis_server_bin()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let file = |name: &str| dir.join(name).display().to_string();
        let child = Command::new(bin)
            .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &file("cert.pem"), "--tls-key-file", &file("key.pem")])
            .args(["--tls-ca-cert-file", &file("ca.pem"), "--tls-auth-clients", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = TlsRedis { port, child };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start with TLS"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }
}

/// A TLS-only Redis with a throw-away CA, and a gateway on it whose trust
/// store is what `trust` makes of the CA's file: `None` when redis-server
/// is not installed. The rest is kept alive with the gateway (the store
/// reads its trust file when it connects).
async fn gateway_on_tls_redis(trust: impl FnOnce(&Path) -> PathBuf) -> Option<(Gateway, Kept)> {
    let certs = new_dir();
    TestTls::generate(certs.path());
    let redis = TlsRedis::start(certs.path())?;
    let up = echo_upstream("app").await;
    let dir = new_dir();
    AssertionKey::ed25519(dir.path(), "assertion.pem");
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.extra = format!(
        "[assertion]\nkey = \"assertion.pem\"\n\n\
         [store]\nkind = \"redis\"\nurl = \"rediss://localhost:{}/0\"\ntimeout_ms = 2000\n",
        redis.port
    );
    let trusted = trust(&certs.path().join("ca.pem")).display().to_string();
    let gw = Gateway::start_full(dir, &opts.config(), &[], &[("SSL_CERT_FILE", trusted.as_str())]).await;
    Some((gw, (redis, up, certs)))
}

/// What a test holds while its gateway runs.
type Kept = (TlsRedis, Upstream, tempfile::TempDir);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_speaks_tls_to_a_server_of_a_private_ca() {
    let Some((gw, _kept)) = gateway_on_tls_redis(Path::to_path_buf).await else {
        return;
    };
    let r = mint(gw.public_addr, &json!({"email": "alice@example.com", "appId": APP_A})).await;
    assert_eq!(r.status, 201, "{} {}", r.text(), gw.stderr());
    let pat = r.json()["personalAccessToken"].as_str().unwrap_or_default().to_string();
    let exchanged = exchange(gw.public_addr, APP_A, &pat).await;
    assert_eq!(exchanged.status, 303, "{}", gw.stderr());
    let cookie = set_cookie_value(&exchanged, "embedgate_session").expect("a session cookie");
    let page = embed_get(gw.public_addr, APP_A, "/", &cookie).await;
    assert_eq!(page.status, 200, "{}", gw.stderr());
    assert_eq!(page.echo().headers("x-embed-user"), ["alice@example.com"]);
    assert_eq!(get(gw.admin(), "/readyz").await.status, 200);
}

/// Without the CA, the same server is refused: TLS is verified, not just
/// spoken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_refuses_a_server_it_cannot_verify() {
    // An empty trust store: the platform's roots do not know the test CA.
    let untrusting = |ca: &Path| {
        let empty = ca.with_file_name("none.pem");
        std::fs::write(&empty, "").expect("write");
        empty
    };
    let Some((gw, _kept)) = gateway_on_tls_redis(untrusting).await else {
        return;
    };
    let r = mint(gw.public_addr, &json!({"email": "alice@example.com", "appId": APP_A})).await;
    assert_eq!(r.status, 503, "{}", r.text());
}
