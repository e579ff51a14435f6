//! The demo in a real browser: headless Chromium opens the demo portal,
//! whose cross-site iframe goes through the PAT exchange (a `Partitioned`
//! third-party cookie) to the demo app, which posts back who the gateway
//! said the user is and whether the assertion verified against the JWKS.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `EMBEDGATE_CHROMIUM`). Without it
//! the tests print why and pass, unless `EMBEDGATE_CI_STRICT` is set (as
//! `.ci/run` does, after installing it), where a skip is a failure.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Gateway;

const APP: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";

fn chromium() -> Option<PathBuf> {
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

/// A free loopback port (bound, then released: the demo's ports and the
/// gateway's own must be known before the config is written).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The demo's shape on fresh ports, with `frame_ancestors` as given; with
/// `tls`, the public URL is `https://localhost` on a dev certificate.
async fn start_demo(frame_ancestors: &str, tls: bool) -> (Gateway, u16) {
    let (gateway, app, portal) = (free_port(), free_port(), free_port());
    let frame_ancestors = frame_ancestors.replace("{portal}", &portal.to_string());
    let (scheme, tls) = match tls {
        true => (
            "https",
            "[tls]\ncert = \"certs/localhost.pem\"\nkey = \"certs/localhost-key.pem\"\n\n",
        ),
        false => ("http", ""),
    };
    let api = common::sha256_hex(common::API_TOKEN);
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{gateway}\"\npublic_url = \"{scheme}://localhost:{gateway}\"\n\n{tls}\
         [[users]]\nemail = \"demo@example.com\"\ngroups = [\"sales\"]\n\n\
         [[apps]]\nid = \"{APP}\"\nupstream = \"http://127.0.0.1:{app}\"\nallow_groups = [\"sales\"]\n\
         frame_ancestors = {frame_ancestors}\n\n\
         [api]\ntoken_sha256 = [\"{api}\"]\n\n\
         [demo]\nenabled = true\napp_listen = \"127.0.0.1:{app}\"\nportal_listen = \"127.0.0.1:{portal}\"\n"
    );
    (Gateway::start(common::new_dir(), &config).await, portal)
}

/// Chromium's DOM of `url` after the page (and its frames) settled.
fn dump_dom(chromium: &PathBuf, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    // Bounded: a wedged browser fails the test instead of hanging it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("chromium output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn embed_status(dom: &str) -> String {
    element_text(dom, "embed-status", "</p>")
}

/// The text of the element with `id`, up to `close`.
fn element_text(dom: &str, id: &str, close: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id} in:\n{dom}"));
    let text = &dom[start..];
    let open = text.find('>').map_or(0, |i| i + 1);
    let end = text.find(close).unwrap_or(text.len());
    text[open..end].to_string()
}

#[tokio::test]
async fn portal_embeds_the_app_cross_site_with_a_verified_identity() {
    let Some(chromium) = chromium() else { return };
    let (gateway, portal) = start_demo("[\"http://127.0.0.1:{portal}\"]", false).await;
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &format!("http://127.0.0.1:{portal}/"), &[]))
        .await
        .expect("browser task");
    assert_eq!(
        embed_status(&dom),
        "the embedded app reports: user demo@example.com, assertion verified",
        "gateway log:\n{}",
        gateway.stderr()
    );
    // The browser really went through the exchange and the session.
    let log = gateway.stderr();
    assert!(log.contains("session started"), "{log}");
    assert!(log.contains("personal-access-token=REDACTED"), "{log}");
}

#[tokio::test]
async fn browser_refuses_to_frame_the_app_for_an_origin_not_in_frame_ancestors() {
    let Some(chromium) = chromium() else { return };
    let (gateway, portal) = start_demo("[\"https://portal.example.com\"]", false).await;
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &format!("http://127.0.0.1:{portal}/"), &[]))
        .await
        .expect("browser task");
    // The frame loads nothing the portal can hear from: CSP frame-ancestors.
    assert_eq!(
        embed_status(&dom),
        "waiting for the embedded app…",
        "gateway log:\n{}",
        gateway.stderr()
    );
    assert!(
        gateway.stderr().contains("session started"),
        "the exchange itself happened"
    );
}

/// Chromium, given `https`, speaks HTTP/2 to the gateway and opens the demo
/// app's WebSocket as an RFC 8441 extended CONNECT; the gateway relays it to
/// the app's HTTP/1.1 upgrade and the echo comes back.
#[tokio::test]
async fn browser_websocket_over_http2_echoes_through_the_gateway() {
    let Some(chromium) = chromium() else { return };
    let (gateway, _portal) = start_demo("[]", true).await;
    let r = common::post_json(
        gateway.public_addr,
        "/api/ext/users/personal-access-token",
        Some(common::API_TOKEN),
        &format!("{{\"email\": \"demo@example.com\", \"appId\": \"{APP}\"}}"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let pat = r.json()["personalAccessToken"].as_str().expect("a PAT").to_string();
    // First-party, so no frame is involved; `ws-echo` makes the app send once.
    let url = format!(
        "https://localhost:{}/embed-apps/{APP}?personal-access-token={pat}&ws-echo",
        gateway.public_addr.port()
    );
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &url, &["--ignore-certificate-errors"]))
        .await
        .expect("browser task");
    let log = element_text(&dom, "ws-log", "</pre>");
    assert!(
        log.contains("echo: hello through the gateway"),
        "websocket log {log:?}; gateway log:\n{}",
        gateway.stderr()
    );
    let stderr = gateway.stderr();
    let tunnel = stderr
        .lines()
        .find(|l| l.contains("method=CONNECT") && l.contains(&format!("/embed-apps/{APP}/ws")))
        .unwrap_or_else(|| panic!("no extended CONNECT in the gateway log:\n{stderr}"));
    assert!(
        tunnel.contains("version=HTTP/2.0") && tunnel.contains("status=200"),
        "{tunnel}"
    );
}
