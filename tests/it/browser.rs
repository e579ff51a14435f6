//! The demo in a real browser: headless Chromium opens the demo portal,
//! whose cross-site iframe goes through the PAT exchange (a `Partitioned`
//! third-party cookie) to the demo app, which posts back who the gateway
//! said the user is and whether the assertion verified against the JWKS.
//! With the demo's second app, the shop, on a host of its own
//! (`app.localhost`), the shop posts back whether its stylesheet and its
//! `fetch`, both by absolute paths, worked.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `EMBEDGATE_CHROMIUM`). Without it
//! the tests print why and pass, unless `EMBEDGATE_CI_STRICT` is set (as
//! `.ci/run` does, after installing it), where a skip is a failure.

use crate::common::devtools;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Gateway;
use devtools::{chromium, Devtools, CHROMIUM_FLAGS};

const APP: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";
/// The demo shop, served at the root of `app.localhost` (`public_url`).
const SHOP: &str = "f29327d2-bf55-4d2c-b952-72463821290a";

/// A free loopback port (bound, then released: the demo's ports and the
/// gateway's own must be known before the config is written).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Which of the demo's apps the gateway serves (and the portal embeds).
enum Apps {
    /// The demo app, under the gateway's prefix.
    Prefixed,
    /// That, and then the demo shop at the root of its own host,
    /// `app.localhost:<gateway port>`, as the shipped `gateway.toml` has them.
    PrefixedAndShop,
}

/// The demo's shape on fresh ports, with `frame_ancestors` as given for
/// every app; with `tls`, the public URL is `https://localhost` on a dev
/// certificate.
async fn start_demo(frame_ancestors: &str, tls: bool, apps: Apps) -> (Gateway, u16) {
    let (gateway, app, portal) = (free_port(), free_port(), free_port());
    let frame_ancestors = frame_ancestors.replace("{portal}", &portal.to_string());
    let (scheme, tls) = match tls {
        true => (
            "https",
            "[tls]\ncert = \"certs/localhost.pem\"\nkey = \"certs/localhost-key.pem\"\n\n",
        ),
        false => ("http", ""),
    };
    // Chromium resolves every *.localhost name to loopback by itself.
    let shop = match apps {
        Apps::Prefixed => String::new(),
        Apps::PrefixedAndShop => format!(
            "[[apps]]\nid = \"{SHOP}\"\nupstream = \"http://127.0.0.1:{app}/shop\"\n\
             public_url = \"{scheme}://app.localhost:{gateway}\"\nallow_users = [\"*@example.com\"]\n\
             frame_ancestors = {frame_ancestors}\n\n"
        ),
    };
    let api = crate::common::sha256_hex(crate::common::API_TOKEN);
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{gateway}\"\npublic_url = \"{scheme}://localhost:{gateway}\"\n\n{tls}\
         [[users]]\nemail = \"demo@example.com\"\ngroups = [\"sales\"]\n\n\
         [[apps]]\nid = \"{APP}\"\nupstream = \"http://127.0.0.1:{app}\"\nallow_groups = [\"sales\"]\n\
         frame_ancestors = {frame_ancestors}\n\n{shop}\
         [api]\ntoken_sha256 = [\"{api}\"]\n\n\
         [demo]\nenabled = true\napp_listen = \"127.0.0.1:{app}\"\nportal_listen = \"127.0.0.1:{portal}\"\n"
    );
    (Gateway::start(crate::common::new_dir(), &config).await, portal)
}

/// Chromium's DOM of `url` after the page (and its frames) settled.
fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(chromium)
        .args(CHROMIUM_FLAGS)
        .args(["--virtual-time-budget=8000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
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

/// The text of the portal's status line `id` (`embed-status` for the first
/// app, `embed-status-2` for the second).
fn status_line(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no status element {id} in:\n{dom}"));
    let text = &dom[start..];
    let open = text.find('>').map_or(0, |i| i + 1);
    let close = text.find("</p>").unwrap_or(text.len());
    text[open..close].to_string()
}

#[tokio::test]
async fn portal_embeds_the_app_cross_site_with_a_verified_identity() {
    let Some(chromium) = chromium() else { return };
    let (gateway, portal) = start_demo("[\"http://127.0.0.1:{portal}\"]", false, Apps::Prefixed).await;
    let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &format!("http://127.0.0.1:{portal}/")))
        .await
        .expect("browser task");
    assert_eq!(
        status_line(&dom, "embed-status"),
        "the embedded app reports: user demo@example.com, assertion verified",
        "gateway log:\n{}",
        gateway.stderr()
    );
    // The browser really went through the exchange and the session (the
    // access lines come when each request is over, in batches).
    let logged = crate::common::eventually(crate::common::T, || async {
        let log = gateway.stderr();
        log.contains("session started") && log.contains("personal-access-token=REDACTED")
    })
    .await;
    assert!(logged, "{}", gateway.stderr());
}

/// The shop is written for the root of a host: its page links
/// `/static/shop.css`, loads `/static/shop.js` and calls `fetch("/api/whoami")`
/// by absolute paths. Served at the root of `app.localhost` (its
/// `public_url`) and framed cross-site by the portal beside the first app
/// under its prefix, all of it reaches the shop through its session: the
/// stylesheet applies (the script reads its computed style back) and the
/// fetch returns the demo user with a verified assertion.
#[tokio::test]
async fn portal_embeds_the_host_mode_app_with_its_stylesheet_and_absolute_fetch() {
    let Some(chromium) = chromium() else { return };
    let (gateway, portal) = start_demo("[\"http://127.0.0.1:{portal}\"]", false, Apps::PrefixedAndShop).await;
    // Watched in real time rather than in a virtual-time budget: two frames,
    // each with a redirect, a page, its assets and a fetch, may take a while
    // on a loaded machine.
    let browser = Devtools::launch(&chromium).await;
    let page = browser.open(&format!("http://127.0.0.1:{portal}/")).await;
    let reported = "the embedded app reports";
    let shop = browser
        .wait_for_text(&page, "embed-status-2", reported, Duration::from_secs(30))
        .await;
    assert_eq!(
        shop,
        "the embedded app reports: stylesheet applied, whoami: demo@example.com, assertion verified",
        "gateway log:\n{}",
        gateway.stderr()
    );
    // Beside it, the first app under its prefix still works.
    let first = browser
        .wait_for_text(&page, "embed-status", reported, Duration::from_secs(30))
        .await;
    assert_eq!(
        first,
        "the embedded app reports: user demo@example.com, assertion verified",
        "gateway log:\n{}",
        gateway.stderr()
    );
    // The shop's frame went through its own host's exchange, and its
    // absolute paths reached it through the gateway. (Without a
    // `[passthrough]`, nothing but the shop's host serves them.)
    let exchange = format!("/embed-apps/{SHOP}?personal-access-token=REDACTED");
    let expected = [
        (exchange.as_str(), 303),
        ("/", 200),
        ("/static/shop.css", 200),
        ("/static/shop.js", 200),
        ("/api/whoami", 200),
    ];
    // Access lines come when each request is over, in batches.
    let all_logged = |log: &str| {
        expected
            .iter()
            .all(|(target, status)| log.lines().any(|line| logs_get(line, target, *status)))
    };
    crate::common::eventually(crate::common::T, || async { all_logged(&gateway.stderr()) }).await;
    let log = gateway.stderr();
    for (target, status) in expected {
        assert!(
            log.lines().any(|line| logs_get(line, target, status)),
            "no GET {target} answered {status} in the gateway log:\n{log}"
        );
    }
}

/// The portal's origin is not in the app's `frame_ancestors`: the gateway
/// serves the app's page (so the frame fails for no other reason) and
/// Chromium itself says it refused the frame because of that policy.
#[tokio::test]
async fn browser_refuses_to_frame_the_app_for_an_origin_not_in_frame_ancestors() {
    let Some(chromium) = chromium() else { return };
    let (gateway, portal) = start_demo("[\"https://portal.example.com\"]", false, Apps::Prefixed).await;
    let app_origin = format!("http://localhost:{}", gateway.public_addr.port());
    // Watched in real time over the DevTools protocol: the refusal is an
    // event (an issue and a console message), not something the DOM shows.
    let browser = Devtools::launch(&chromium).await;
    let page = browser.open("about:blank").await;
    // Before the portal loads, so that nothing it raises is missed.
    for method in ["Audits.enable", "Log.enable"] {
        browser.call(Some(&page), method, serde_json::json!({})).await;
    }
    browser
        .call(
            Some(&page),
            "Page.navigate",
            serde_json::json!({"url": format!("http://127.0.0.1:{portal}/")}),
        )
        .await;
    let portal_frame = browser
        .call(Some(&page), "Page.getFrameTree", serde_json::json!({}))
        .await["frameTree"]["frame"]["id"]
        .as_str()
        .expect("the portal's frame id")
        .to_string();

    // Until Chromium reports a frame-ancestors violation, or the app reports
    // in from inside the frame (it was framed after all).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (issue, status) = loop {
        let status = browser.text_of(&page, "embed-status").await;
        let issue = browser
            .events(&page, "Audits.issueAdded")
            .into_iter()
            .map(|event| event["issue"].clone())
            .find(|issue| {
                issue["code"] == "ContentSecurityPolicyIssue"
                    && issue["details"]["contentSecurityPolicyIssueDetails"]["violatedDirective"] == "frame-ancestors"
            });
        if issue.is_some() || status.starts_with("the embedded app reports") || Instant::now() > deadline {
            break (issue, status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let console: Vec<String> = browser
        .events(&page, "Log.entryAdded")
        .iter()
        .map(|event| event["entry"]["text"].as_str().unwrap_or_default().to_string())
        .collect();

    // The gateway did its part: the exchange (303), then the app's page
    // itself, served (200) to the frame the redirect led to.
    let exchange = format!("/embed-apps/{APP}?personal-access-token=REDACTED");
    let app_page = format!("/embed-apps/{APP}/");
    let served = crate::common::eventually(crate::common::T, || async {
        let log = gateway.stderr();
        let lines: Vec<&str> = log.lines().collect();
        lines
            .iter()
            .position(|l| logs_get(l, &exchange, 303))
            .is_some_and(|at| lines[at + 1..].iter().any(|l| logs_get(l, &app_page, 200)))
    })
    .await;
    assert!(
        served,
        "the gateway did not serve the app's page (200) after the exchange (303):\n{}",
        gateway.stderr()
    );

    // Chromium refused the frame, and because of frame-ancestors: an issue
    // naming the directive, the app's URL and the portal's frame as the
    // ancestor it refused, and the policy as the gateway sent it.
    let issue = issue.unwrap_or_else(|| {
        panic!(
            "Chromium reported no frame-ancestors violation; status {status:?}; console {console:#?}; \
             gateway log:\n{}",
            gateway.stderr()
        )
    });
    let details = &issue["details"]["contentSecurityPolicyIssueDetails"];
    assert_eq!(details["isReportOnly"], false, "{issue}");
    let blocked = details["blockedURL"].as_str().expect("a blocked URL");
    assert!(
        blocked.starts_with(&app_origin),
        "blocked {blocked:?}, not the app at {app_origin}"
    );
    assert_eq!(details["frameAncestor"]["frameId"], portal_frame.as_str(), "{issue}");
    let policy = "Content Security Policy directive: \"frame-ancestors https://portal.example.com\"";
    assert!(
        console
            .iter()
            .any(|text| text.contains(policy) && text.contains(&format!("'{app_origin}/"))),
        "no console message of the refusal naming {policy:?}: {console:#?}"
    );
    // So the app never ran, and could not tell the portal anything.
    assert_eq!(status, "waiting for the embedded app…");
    assert!(
        gateway.stderr().contains("session started"),
        "the exchange itself happened"
    );
}

/// Whether `line` is the gateway's access-log line of a `GET target`
/// answered with `status` (its `key=value` fields, in any order).
fn logs_get(line: &str, target: &str, status: u16) -> bool {
    let fields: Vec<&str> = line.split_whitespace().collect();
    [
        "method=GET".to_string(),
        format!("path={target}"),
        format!("status={status}"),
    ]
    .iter()
    .all(|field| fields.contains(&field.as_str()))
}

/// Chromium, given `https`, speaks HTTP/2 to the gateway and opens the demo
/// app's WebSocket as an RFC 8441 extended CONNECT; the gateway relays it to
/// the app's HTTP/1.1 upgrade and the echo comes back to the page.
#[tokio::test]
async fn browser_websocket_over_http2_echoes_through_the_gateway() {
    let Some(chromium) = chromium() else { return };
    let (gateway, _portal) = start_demo("[]", true, Apps::Prefixed).await;
    let r = crate::common::post_json(
        gateway.public_addr,
        "/api/ext/users/personal-access-token",
        Some(crate::common::API_TOKEN),
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
    // Virtual time does not wait for WebSocket frames, so this test watches
    // the page in real time over the DevTools protocol instead of --dump-dom.
    let browser = Devtools::launch(&chromium).await;
    let page = browser.open(&url).await;
    let log = browser
        .wait_for_text(
            &page,
            "ws-log",
            "echo: hello through the gateway",
            Duration::from_secs(30),
        )
        .await;
    assert!(
        log.contains("echo: hello through the gateway"),
        "websocket log {log:?}; gateway log:\n{}",
        gateway.stderr()
    );
    // The tunnel's access line can land a moment after the page saw the
    // echo (the log is read from the gateway's stderr pipe).
    let is_tunnel = |l: &str| l.contains("method=CONNECT") && l.contains(&format!("/embed-apps/{APP}/ws"));
    crate::common::eventually(Duration::from_secs(10), || async {
        gateway.stderr().lines().any(is_tunnel)
    })
    .await;
    let stderr = gateway.stderr();
    let tunnel = stderr
        .lines()
        .find(|l| is_tunnel(l))
        .unwrap_or_else(|| panic!("no extended CONNECT in the gateway log:\n{stderr}"));
    assert!(
        tunnel.contains("version=HTTP/2.0") && tunnel.contains("status=200"),
        "{tunnel}"
    );
}
