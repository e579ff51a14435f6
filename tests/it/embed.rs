//! The embed flow: PAT exchange (SPEC §4), proxying with identity and the
//! response rules on embed paths (SPEC §5).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use base64::Engine;
use serde_json::json;

const INVALID_PAT: &str = "Invalid or expired PAT";

async fn gateway() -> (Gateway, Upstream, Upstream) {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let gw = EmbedOpts::new(&a.url(), &b.url()).start().await;
    (gw, a, b)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Asserts the uniform "bad PAT" answer and returns its body.
fn assert_invalid_pat(r: &Reply, what: &str) -> String {
    assert_eq!(r.status, 401, "{what}: {r:?} {}", r.text());
    let msg = assert_error_body(r, 401, "Unauthorized");
    assert_eq!(msg, INVALID_PAT, "{what}");
    assert!(
        r.headers.get("set-cookie").is_none(),
        "{what}: a refused exchange set a cookie"
    );
    r.text()
}

// ---------------------------------------------------------------------------
// Exchange
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_sets_partitioned_path_scoped_cookie() {
    let (gw, a, _b) = gateway().await;
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_A).await;
    let r = exchange(gw.public_addr, APP_A, &pat).await;
    assert_eq!(r.status, 303, "{r:?} {}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{PUBLIC_URL}/embed-apps/{APP_A}/").as_str())
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    let cookies: Vec<&str> = r.header_all("set-cookie");
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let (value, attrs) = cookies[0]
        .strip_prefix("embedgate_session=")
        .and_then(|s| s.split_once(';'))
        .unwrap_or_else(|| panic!("not an embedgate_session cookie: {:?}", cookies[0]));
    assert!(
        is_lower_hex(value, 64),
        "session token is not 64 lowercase hex: {value:?}"
    );
    assert!(!pat.contains(value), "the session token is the PAT");
    // In any order, but exactly these five, each once.
    assert_eq!(
        cookie_parts(attrs),
        cookie_parts(&format!(
            "Path=/embed-apps/{APP_A}; Secure; HttpOnly; SameSite=None; Partitioned"
        )),
        "{:?}",
        cookies[0]
    );
    assert_eq!(a.requests(), 0, "the exchange itself reached the upstream");
    // The cookie works.
    assert_eq!(embed_get(gw.public_addr, APP_A, "/", value).await.echo().uri(), "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_uses_configured_cookie_name() {
    let a = echo_upstream("a").await;
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.session = "cookie_name = \"eg_s\"\n".into();
    let gw = opts.start().await;
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_A).await;
    let r = exchange(gw.public_addr, APP_A, &pat).await;
    assert_eq!(r.status, 303, "{r:?}");
    let value = set_cookie_value(&r, "eg_s").unwrap_or_else(|| panic!("no eg_s cookie: {r:?}"));
    assert!(set_cookie_value(&r, "embedgate_session").is_none());
    let ok = get_with(
        gw.public_addr,
        &format!("/embed-apps/{APP_A}/x"),
        &[("cookie", &format!("eg_s={value}"))],
    )
    .await;
    assert_eq!(ok.echo().uri(), "/x");
    // The default name means nothing here.
    let r = embed_get(gw.public_addr, APP_A, "/x", &value).await;
    assert_eq!(r.status, 401, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_keeps_other_query_params() {
    let (gw, _a, _b) = gateway().await;
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_A).await;
    let r = exchange_query(
        gw.public_addr,
        APP_A,
        &format!("x=1&personal-access-token={pat}&y=a%20b&x=2&empty="),
    )
    .await;
    assert_eq!(r.status, 303, "{r:?} {}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("{PUBLIC_URL}/embed-apps/{APP_A}/?x=1&y=a%20b&x=2&empty=").as_str())
    );
    let location = r.header("location").unwrap();
    assert!(!location.contains("pat_"), "the PAT is in the redirect: {location}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_is_single_use() {
    let (gw, _a, _b) = gateway().await;
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_A).await;
    assert_eq!(exchange(gw.public_addr, APP_A, &pat).await.status, 303);
    let again = exchange(gw.public_addr, APP_A, &pat).await;
    assert_invalid_pat(&again, "second use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exchange_is_single_use_under_concurrency() {
    let (gw, _a, _b) = gateway().await;
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_A).await;
    let addr = gw.public_addr;
    // Connect all first, then fire together.
    let mut conns = Vec::new();
    for _ in 0..50 {
        conns.push(H1::connect(addr).await);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let pat = pat.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                c.get(&format!("/embed-apps/{APP_A}?personal-access-token={pat}"))
                    .await
                    .status
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|&&s| s == 303).count();
    let refused = statuses.iter().filter(|&&s| s == 401).count();
    assert_eq!((ok, refused), (1, 49), "statuses: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_reusable_when_single_use_false() {
    let a = echo_upstream("a").await;
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.pat = "single_use = false\n".into();
    let gw = opts.start().await;
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_A).await;
    let mut sessions = BTreeSet::new();
    for i in 0..3 {
        let r = exchange(gw.public_addr, APP_A, &pat).await;
        assert_eq!(r.status, 303, "use {i}: {r:?} {}", r.text());
        sessions.insert(set_cookie_value(&r, "embedgate_session").unwrap());
    }
    assert_eq!(sessions.len(), 3, "each exchange must make its own session");
    for s in &sessions {
        assert_eq!(embed_get(gw.public_addr, APP_A, "/", s).await.status, 200);
    }
    // Still scoped to its app.
    assert_invalid_pat(&exchange(gw.public_addr, APP_B, &pat).await, "reusable PAT on app B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_refuses_pat_of_other_app() {
    let (gw, a, b) = gateway().await;
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_A).await;
    let r = exchange(gw.public_addr, APP_B, &pat).await;
    assert_invalid_pat(&r, "PAT of A at B");
    assert_eq!((a.requests(), b.requests()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_refuses_expired_pat() {
    let (gw, _a, _b) = gateway().await;
    let r = mint(
        gw.public_addr,
        &json!({"email": "alice@example.com", "appId": APP_A, "patExpiry": 1}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
    let pat = r.json()["personalAccessToken"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_invalid_pat(&exchange(gw.public_addr, APP_A, &pat).await, "expired PAT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pat_answers_are_indistinguishable() {
    let (gw, _a, _b) = gateway().await;
    let addr = gw.public_addr;
    let used = mint_pat(addr, "alice@example.com", APP_A).await;
    assert_eq!(exchange(addr, APP_A, &used).await.status, 303);
    let other_app = mint_pat(addr, "alice@example.com", APP_B).await;
    let r = mint(
        addr,
        &json!({"email": "alice@example.com", "appId": APP_A, "patExpiry": 1}),
    )
    .await;
    let expired = r.json()["personalAccessToken"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let unknown = format!("pat_{}", "ab".repeat(32));

    let mut bodies = BTreeSet::new();
    for (what, query) in [
        ("used", format!("personal-access-token={used}")),
        ("other app", format!("personal-access-token={other_app}")),
        ("expired", format!("personal-access-token={expired}")),
        ("unknown", format!("personal-access-token={unknown}")),
        ("malformed", "personal-access-token=hello".to_string()),
        ("empty", "personal-access-token=".to_string()),
    ] {
        let r = exchange_query(addr, APP_A, &query).await;
        bodies.insert(assert_invalid_pat(&r, what));
    }
    assert_eq!(bodies.len(), 1, "the bodies tell the failures apart: {bodies:?}");
}

/// Rewrites the config with `users` and waits until minting for
/// `probe_email` on A answers `status` (the reload has landed).
async fn reload_users(gw: &Gateway, opts: &EmbedOpts, users: &str, probe_email: &str, status: u16) {
    let mut new = opts.clone();
    new.users = users.to_string();
    gw.write_config(&new.config());
    gw.signal("HUP");
    let addr = gw.public_addr;
    let landed = eventually(T, || async move {
        let r = mint(addr, &json!({"email": probe_email, "appId": APP_A})).await;
        r.status == status
    })
    .await;
    assert!(landed, "the SIGHUP reload never took effect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_after_user_removed_is_404() {
    let a = echo_upstream("a").await;
    let opts = EmbedOpts::new(&a.url(), &a.url());
    let gw = opts.start().await;
    let pat = mint_pat(gw.public_addr, "dave@other.example", APP_A).await;
    let users = DEFAULT_USERS.replace("[[users]]\nemail = \"dave@other.example\"\ngroups = [\"sales\"]\n", "");
    assert!(!users.contains("dave"), "test setup: dave still in {users}");
    reload_users(&gw, &opts, &users, "dave@other.example", 404).await;
    let r = exchange(gw.public_addr, APP_A, &pat).await;
    assert_error_body(&r, 404, "Not Found");
    assert!(r.headers.get("set-cookie").is_none());
    assert_eq!(a.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_after_access_removed_is_403() {
    let a = echo_upstream("a").await;
    let opts = EmbedOpts::new(&a.url(), &a.url());
    let gw = opts.start().await;
    // dave is admitted to A only through group `sales`.
    let pat = mint_pat(gw.public_addr, "dave@other.example", APP_A).await;
    let users = DEFAULT_USERS.replace(
        "email = \"dave@other.example\"\ngroups = [\"sales\"]",
        "email = \"dave@other.example\"\ngroups = [\"marketing\"]",
    );
    assert_ne!(users, DEFAULT_USERS, "test setup");
    reload_users(&gw, &opts, &users, "dave@other.example", 403).await;
    let r = exchange(gw.public_addr, APP_A, &pat).await;
    assert_error_body(&r, 403, "Forbidden");
    assert!(r.headers.get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pat_exchanges_are_rate_limited_per_ip() {
    let a = echo_upstream("a").await;
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.rate_limit =
        "pat_create_per_minute = 1000\npat_create_per_user_per_minute = 1000\nbad_pat_per_minute = 2\n".into();
    let gw = opts.start().await;
    let bad = format!("pat_{}", "cd".repeat(32));
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let r = exchange(gw.public_addr, APP_A, &bad).await;
        statuses.push(r.status.as_u16());
        last = Some(r);
    }
    assert_eq!(statuses, [401, 401, 429]);
    let r = last.unwrap();
    assert_error_body(&r, 429, "Too Many Requests");
    let secs = retry_after_secs(&r);
    assert!((1..=60).contains(&secs), "Retry-After {secs} for 2/minute");
    assert!(r.headers.get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pat_limit_is_keyed_on_client_ip_behind_trusted_proxy() {
    let a = echo_upstream("a").await;
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.server_extra = "trusted_proxies = [\"127.0.0.1/32\"]".into();
    opts.rate_limit =
        "pat_create_per_minute = 1000\npat_create_per_user_per_minute = 1000\nbad_pat_per_minute = 2\n".into();
    let gw = opts.start().await;
    let bad = format!("/embed-apps/{APP_A}?personal-access-token=pat_{}", "ef".repeat(32));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = get_with(gw.public_addr, &bad, &[("x-forwarded-for", "203.0.113.7")]).await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 429], "client 203.0.113.7");
    let r = get_with(gw.public_addr, &bad, &[("x-forwarded-for", "203.0.113.8")]).await;
    assert_eq!(
        r.status, 401,
        "another client behind the proxy shares the first one's quota"
    );
}

// ---------------------------------------------------------------------------
// Proxying with identity
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_request_carries_identity_headers() {
    let (gw, a, b) = gateway().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let e = embed_get(gw.public_addr, APP_A, "/some/path?q=1&r=a%20b", &s)
        .await
        .echo();
    assert_eq!(e.upstream(), "a");
    assert_eq!(e.uri(), "/some/path?q=1&r=a%20b");
    assert_eq!(e.headers("x-embed-user"), ["alice@example.com"]);
    assert_eq!(e.headers("x-embed-groups"), ["sales,eng"]);
    assert_eq!(e.headers("x-embed-app"), [APP_A]);
    assert_eq!(e.headers("x-embed-assertion").len(), 1);
    assert_eq!(e.headers("x-forwarded-prefix"), [format!("/embed-apps/{APP_A}")]);
    assert_eq!(e.headers("host"), [a.addr.to_string()]);
    assert_eq!(e.headers("x-forwarded-host"), [gw.public_addr.to_string()]);
    assert_eq!(e.headers("x-forwarded-proto"), ["http"]);
    assert_eq!(e.headers("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(b.requests(), 0);

    // The app root; and a user without groups gets an empty list.
    let s = open_session(gw.public_addr, "carol@partner.example", APP_A).await;
    let e = embed_get(gw.public_addr, APP_A, "/", &s).await.echo();
    assert_eq!(e.uri(), "/");
    assert_eq!(e.headers("x-embed-user"), ["carol@partner.example"]);
    let groups = e.headers("x-embed-groups");
    assert!(
        groups.is_empty() || groups == [""],
        "carol has no groups, got {groups:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_path_joins_upstream_base_path() {
    let a = echo_upstream("a").await;
    let gw = EmbedOpts::new(&format!("{}/base", a.url()), &a.url()).start().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let e = embed_get(gw.public_addr, APP_A, "/x/y?z=1", &s).await.echo();
    assert_eq!(e.uri(), "/base/x/y?z=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_session_works_repeatedly() {
    let (gw, a, _b) = gateway().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let mut c = H1::connect(gw.public_addr).await;
    for i in 0..5 {
        let req = hyper::Request::get(format!("/embed-apps/{APP_A}/n/{i}"))
            .header("cookie", format!("embedgate_session={s}"))
            .body(empty())
            .unwrap();
        let e = c.request(req).await.echo();
        assert_eq!(e.uri(), format!("/n/{i}"));
        assert_eq!(e.headers("x-embed-user"), ["alice@example.com"]);
    }
    assert_eq!(a.requests(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_upstream() {
    let (gw, _a, _b) = gateway().await;
    let s = open_session(gw.public_addr, "carol@partner.example", APP_A).await;
    let cookie = format!("embedgate_session={s}");
    let req = hyper::Request::get(format!("/embed-apps/{APP_A}/spoof"))
        .header("cookie", cookie)
        .header("x-embed-user", "mallory@evil.example")
        .header("x-embed-user", "alice@example.com")
        .header("X-Embed-Groups", "admins")
        .header("x-embed-app", APP_C)
        .header("x-embed-assertion", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.")
        .header("x-embed-anything", "x")
        .header("x-forwarded-prefix", "/evil")
        .body(empty())
        .unwrap();
    let e = H1::connect(gw.public_addr).await.request(req).await.echo();
    assert_eq!(e.headers("x-embed-user"), ["carol@partner.example"]);
    let groups = e.headers("x-embed-groups");
    assert!(groups.is_empty() || groups == [""], "{groups:?}");
    assert_eq!(e.headers("x-embed-app"), [APP_A]);
    let assertion = e.headers("x-embed-assertion");
    assert_eq!(assertion.len(), 1);
    assert!(!assertion[0].contains("eyJzdWIiOiJtYWxsb3J5In0"), "{assertion:?}");
    assert_eq!(e.headers("x-embed-anything"), Vec::<String>::new());
    assert_eq!(e.headers("x-forwarded-prefix"), [format!("/embed-apps/{APP_A}")]);
    let names = e.header_names();
    let embed_names: Vec<&String> = names.iter().filter(|n| n.starts_with("x-embed-")).collect();
    assert_eq!(
        embed_names.len(),
        if groups.is_empty() { 3 } else { 4 },
        "{embed_names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_stripped_on_passthrough() {
    let a = echo_upstream("a").await;
    let p = echo_upstream("p").await;
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.extra = passthrough(&p.url());
    let gw = opts.start().await;
    let e = get_with(
        gw.public_addr,
        "/elsewhere",
        &[
            ("x-embed-user", "mallory@evil.example"),
            ("x-embed-assertion", "forged"),
        ],
    )
    .await
    .echo();
    assert_eq!(e.upstream(), "p");
    assert!(
        e.header_names().iter().all(|n| !n.starts_with("x-embed-")),
        "{:?}",
        e.header_names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_cookie_is_stripped_other_cookies_pass() {
    let (gw, _a, _b) = gateway().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let path = format!("/embed-apps/{APP_A}/c");
    let e = get_with(
        gw.public_addr,
        &path,
        &[("cookie", &format!("a=1; embedgate_session={s}; b=2"))],
    )
    .await
    .echo();
    assert_eq!(e.headers("cookie"), ["a=1; b=2"]);
    assert!(!e.0.to_string().contains(&s), "the session token reached the upstream");

    // Only the gateway's cookie: no Cookie header at all.
    let e = embed_get(gw.public_addr, APP_A, "/c", &s).await.echo();
    assert_eq!(e.headers("cookie"), Vec::<String>::new());

    // Several Cookie fields (as HTTP/2 clients send): all read, one joined.
    let req = hyper::Request::get(&path)
        .header("cookie", "a=1")
        .header("cookie", format!("embedgate_session={s}"))
        .header("cookie", "b=2")
        .body(empty())
        .unwrap();
    let e = H1::connect(gw.public_addr).await.request(req).await.echo();
    assert_eq!(e.headers("cookie"), ["a=1; b=2"]);
    assert!(!e.0.to_string().contains(&s), "the session token reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_split_cookies_are_read_and_joined() {
    let a = echo_upstream("a").await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.extra = tls_section();
    let gw = Gateway::start(dir, &opts.config()).await;
    let pat = {
        let mut c = H2::connect(&tls, gw.public_addr).await;
        let req = hyper::Request::post(format!("{}/api/ext/users/personal-access-token", c.origin))
            .header("authorization", format!("Basic {API_TOKEN}"))
            .header("content-type", "application/json")
            .body(full(json!({"email": "alice@example.com", "appId": APP_A}).to_string()))
            .unwrap();
        let r = c.request(req).await;
        assert_eq!(r.status, 201, "{r:?}");
        r.json()["personalAccessToken"].as_str().unwrap().to_string()
    };
    let mut c = H2::connect(&tls, gw.public_addr).await;
    let r = c
        .request(
            hyper::Request::get(format!("{}/embed-apps/{APP_A}?personal-access-token={pat}", c.origin))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 303, "{r:?}");
    let s = set_cookie_value(&r, "embedgate_session").unwrap();
    // The session cookie in the middle of three separate `cookie` fields.
    let req = hyper::Request::get(format!("{}/embed-apps/{APP_A}/h2", c.origin))
        .header("cookie", "a=1")
        .header("cookie", format!("embedgate_session={s}"))
        .header("cookie", "b=2")
        .body(empty())
        .unwrap();
    let e = c.request(req).await.echo();
    assert_eq!(e.uri(), "/h2");
    assert_eq!(e.headers("x-embed-user"), ["alice@example.com"]);
    assert_eq!(e.headers("cookie"), ["a=1; b=2"]);
    assert_eq!(e.headers("x-forwarded-proto"), ["https"]);
}

// ---------------------------------------------------------------------------
// The assertion
// ---------------------------------------------------------------------------

fn b64url(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertion_verifies_against_jwks() {
    let (gw, _a, _b) = gateway().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let e = embed_get(gw.public_addr, APP_A, "/who", &s).await.echo();
    let jwt = e.headers("x-embed-assertion").pop().expect("no X-Embed-Assertion");

    let jwks = get(gw.public_addr, "/.well-known/embedgate/jwks.json").await;
    assert_eq!(jwks.status, 200, "{jwks:?}");
    // RFC 7517 §8.5 registers application/jwk-set+json; plain JSON is fine too.
    let ct = jwks.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/jwk-set+json") || ct.starts_with("application/json"),
        "{jwks:?}"
    );
    let jwks = jwks.json();
    let keys = jwks["keys"].as_array().unwrap_or_else(|| panic!("no keys: {jwks}"));
    assert!(!keys.is_empty(), "{jwks}");
    for k in keys {
        assert!(k.get("d").is_none(), "the JWKS publishes a private key: {k}");
    }

    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {jwt}");
    let header: serde_json::Value = serde_json::from_slice(&b64url(parts[0])).unwrap();
    assert_eq!(header["alg"], "EdDSA", "{header}");
    let kid = header["kid"].as_str().unwrap_or_else(|| panic!("no kid: {header}"));
    let key = keys
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} not in the JWKS: {jwks}"));
    assert_eq!(key["kty"], "OKP", "{key}");
    assert_eq!(key["crv"], "Ed25519", "{key}");
    assert_eq!(key["alg"], "EdDSA", "{key}");
    assert_eq!(key["use"], "sig", "{key}");
    let x = b64url(key["x"].as_str().unwrap());
    assert_eq!(x.len(), 32);

    let signed = format!("{}.{}", parts[0], parts[1]);
    let sig = b64url(parts[2]);
    let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &x);
    pk.verify(signed.as_bytes(), &sig)
        .expect("the assertion's signature does not verify against the JWKS key");
    // A tampered payload does not.
    let forged_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory@evil.example"}"#);
    assert!(pk
        .verify(format!("{}.{forged_claims}", parts[0]).as_bytes(), &sig)
        .is_err());

    let claims: serde_json::Value = serde_json::from_slice(&b64url(parts[1])).unwrap();
    assert_eq!(claims["iss"], PUBLIC_URL, "{claims}");
    assert_eq!(claims["aud"], APP_A, "{claims}");
    assert_eq!(claims["sub"], "alice@example.com", "{claims}");
    assert_eq!(claims["groups"], json!(["sales", "eng"]), "{claims}");
    let iat = claims["iat"].as_u64().unwrap_or_else(|| panic!("iat: {claims}"));
    let exp = claims["exp"].as_u64().unwrap_or_else(|| panic!("exp: {claims}"));
    let now = unix_now();
    assert!((iat as f64 - now).abs() < 10.0, "iat {iat} vs now {now}");
    assert!(exp > iat && exp - iat <= 60, "iat {iat} exp {exp}");
    assert!(
        exp as f64 > now,
        "the assertion is already expired: exp {exp} now {now}"
    );

    // The assertion is for one app: B's names B.
    let sb = open_session(gw.public_addr, "alice@example.com", APP_B).await;
    let eb = embed_get(gw.public_addr, APP_B, "/who", &sb).await.echo();
    let jwt_b = eb.headers("x-embed-assertion").pop().unwrap();
    let claims_b: serde_json::Value = serde_json::from_slice(&b64url(jwt_b.split('.').nth(1).unwrap())).unwrap();
    assert_eq!(claims_b["aud"], APP_B, "{claims_b}");
}

// ---------------------------------------------------------------------------
// Session scope and the no-session answer
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_from_app_a_is_refused_on_app_b() {
    let (gw, a, b) = gateway().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    // The cookie copied to B's path (the browser would not, an attacker would).
    let r = get_with(
        gw.public_addr,
        &format!("/embed-apps/{APP_B}/x"),
        &[
            ("cookie", &format!("embedgate_session={s}")),
            ("accept", "application/json"),
        ],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?} {}", r.text());
    assert_error_body(&r, 401, "Unauthorized");
    assert_eq!(b.requests(), 0, "app B's upstream was reached with A's session");
    // Still good on A.
    assert_eq!(embed_get(gw.public_addr, APP_A, "/x", &s).await.status, 200);
    assert_eq!(a.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_unknown_session_is_refused() {
    let (gw, a, _b) = gateway().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let mut flipped = s.clone().into_bytes();
    flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [flipped.as_str(), "", "x", &"0".repeat(64)] {
        let r = embed_get(gw.public_addr, APP_A, "/x", bad).await;
        assert_eq!(r.status, 401, "session {bad:?}: {r:?}");
    }
    assert_eq!(a.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_html_page_posts_messages() {
    let (gw, a, _b) = gateway().await;
    let r = get_with(
        gw.public_addr,
        &format!("/embed-apps/{APP_A}/page"),
        &[(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("content-type").unwrap_or("").starts_with("text/html"), "{r:?}");
    let body = r.text();
    for needle in [
        "embedgate:session-expired",
        "TJ_EMBED_APP_LOGOUT",
        APP_A,
        "postMessage",
        "parent",
    ] {
        assert!(body.contains(needle), "the page lacks {needle:?}:\n{body}");
    }
    assert_eq!(a.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_json_for_api_clients() {
    let (gw, a, _b) = gateway().await;
    for accept in [Some("application/json"), None] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|v| ("accept", *v)).collect();
        let r = get_with(gw.public_addr, &format!("/embed-apps/{APP_A}/api/data"), &headers).await;
        assert_eq!(r.status, 401, "accept {accept:?}: {r:?}");
        assert_error_body(&r, 401, "Unauthorized");
    }
    assert_eq!(a.requests(), 0);
}

/// An app's POST after its session ended gets the 401, not a reset, even
/// when its body arrives late, and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_post_body_is_read_before_answering() {
    let (gw, a, _b) = gateway().await;
    let mut conn = RawConn::connect(gw.public_addr).await;
    let head = format!(
        "POST /embed-apps/{APP_A}/api/save HTTP/1.1\r\nHost: gw\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: 8192\r\n\r\n"
    );
    conn.send(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    conn.send(&[b' '; 8192]).await.unwrap();
    let r = conn.read_response(false).await.unwrap();
    assert_eq!(r.status, 401, "{}", r.head);
    conn.send(format!("GET /embed-apps/{APP_A}/ HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let r = conn.read_response(false).await.unwrap();
    assert_eq!(r.status, 401, "the connection was not kept: {}", r.head);
    assert_eq!(a.requests(), 0);
}

// ---------------------------------------------------------------------------
// Responses on embed paths
// ---------------------------------------------------------------------------

const FRAMING_RESPONSE: &[u8] = b"HTTP/1.1 302 Found\r\n\
    Location: /login?next=%2Fhome\r\n\
    Set-Cookie: sid=abc123; Path=/; HttpOnly\r\n\
    Set-Cookie: pref=dark; Path=/settings; Max-Age=60\r\n\
    X-Frame-Options: DENY\r\n\
    Content-Security-Policy: default-src 'self'; frame-ancestors 'self'; script-src 'self' 'unsafe-inline'\r\n\
    Content-Length: 0\r\n\
    \r\n";

async fn framing_gateway() -> (Gateway, Upstream) {
    let raw = raw_upstream(FRAMING_RESPONSE).await;
    let gw = EmbedOpts::new(&raw.url(), &raw.url()).start().await;
    (gw, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_ancestors_replace_upstream_csp() {
    let (gw, _raw) = framing_gateway().await;
    for (app, ancestors) in [(APP_A, FRAME_ANCESTORS_A.join(" ")), (APP_B, "'none'".to_string())] {
        let s = open_session(gw.public_addr, "alice@example.com", app).await;
        let r = embed_get(gw.public_addr, app, "/home", &s).await;
        assert_eq!(r.status, 302, "{r:?}");
        // The upstream's policy without its frame-ancestors, and the app's
        // own list as a policy of its own (a browser obeys both).
        let csp: Vec<&str> = r.header_all("content-security-policy");
        assert_eq!(csp.len(), 2, "{csp:?}");
        assert_eq!(
            csp_directives(csp[0]),
            csp_directives("default-src 'self'; script-src 'self' 'unsafe-inline'"),
            "app {app}: {:?}",
            csp[0]
        );
        assert_eq!(
            csp_directives(csp[1]),
            csp_directives(&format!("frame-ancestors {ancestors}")),
            "app {app}: {:?}",
            csp[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_ancestors_added_when_upstream_sends_no_csp() {
    let (gw, _a, _b) = gateway().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let r = embed_get(gw.public_addr, APP_A, "/x", &s).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-security-policy").map(csp_directives),
        Some(csp_directives(&format!(
            "frame-ancestors {}",
            FRAME_ANCESTORS_A.join(" ")
        )))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_frame_options_removed() {
    let (gw, raw) = framing_gateway().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let r = embed_get(gw.public_addr, APP_A, "/home", &s).await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(raw.requests(), 1);
    assert!(r.headers.get("x-frame-options").is_none(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_location_and_set_cookie_rewritten() {
    let (gw, _raw) = framing_gateway().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let r = embed_get(gw.public_addr, APP_A, "/home", &s).await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("/embed-apps/{APP_A}/login?next=%2Fhome").as_str())
    );
    let cookies: Vec<&str> = r.header_all("set-cookie");
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert_eq!(
        cookie_parts(cookies[0]),
        cookie_parts(&format!("sid=abc123; Path=/embed-apps/{APP_A}/; HttpOnly")),
        "{:?}",
        cookies[0]
    );
    assert_eq!(
        cookie_parts(cookies[1]),
        cookie_parts(&format!("pref=dark; Path=/embed-apps/{APP_A}/settings; Max-Age=60")),
        "{:?}",
        cookies[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_at_another_host_is_left_alone() {
    let raw = raw_upstream(
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://upstream.internal/next?a=1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let gw = EmbedOpts::new(&raw.url(), &raw.url()).start().await;
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let r = embed_get(gw.public_addr, APP_A, "/x", &s).await;
    assert_eq!(r.status, 301);
    // A Location at another host is none of the gateway's business.
    assert_eq!(r.header("location"), Some("http://upstream.internal/next?a=1"));
}

/// A cross-site frame on an origin the app's `frame_ancestors` do not list
/// gets a page the browser will refuse to show; the gateway says so in its
/// log (naming the framer), and says nothing for a listed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_the_browser_will_refuse_is_logged() {
    let (gw, _a, _b) = gateway().await;
    let listed = format!("{}/portal/page", FRAME_ANCESTORS_A[0]);
    for (referer, app) in [(listed.as_str(), APP_A), ("https://evil.example/embed", APP_A)] {
        let pat = mint_pat(gw.public_addr, "alice@example.com", app).await;
        let frame = [
            ("sec-fetch-dest", "iframe"),
            ("sec-fetch-site", "cross-site"),
            ("referer", referer),
        ];
        let r = get_with(
            gw.public_addr,
            &format!("/embed-apps/{app}?personal-access-token={pat}"),
            &frame,
        )
        .await;
        assert_eq!(r.status, 303, "{r:?}");
    }
    let says = |framer: &str| {
        gw.stderr()
            .lines()
            .any(|l| l.contains("frame_ancestors do not list that origin") && l.contains(&format!("framer={framer}")))
    };
    assert!(
        eventually(T, || async { says("https://evil.example") }).await,
        "no line for the unlisted framer:\n{}",
        gw.stderr()
    );
    assert!(
        !says(FRAME_ANCESTORS_A[0]),
        "a listed framer was reported:\n{}",
        gw.stderr()
    );
}
