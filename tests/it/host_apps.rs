//! Apps on their own host (issue 7): an app with `public_url` is served at
//! the root of that host, chosen by the HTTP/1 `Host` or the HTTP/2
//! `:authority`, with its own certificate picked by SNI from
//! `[[tls.certificates]]`; `embedgate check` on app hosts.

use std::net::SocketAddr;

use crate::common::*;
use hyper::Request;
use serde_json::json;

/// The app served at the root of [`SHOP_HOST`]; admits alice and
/// `*@partner.example`.
const APP_SHOP: &str = "5e0b0000-0000-4000-8000-0000000000c3";
const SHOP_HOST: &str = "shop.apps.example";
const SHOP_URL: &str = "https://shop.apps.example";
const SHOP_ANCESTOR: &str = "https://portal.example.com";
const MINT: &str = "/api/ext/users/personal-access-token";

/// The `[[apps]]` table of [`APP_SHOP`] on `upstream`.
fn shop_app(upstream: &str) -> String {
    format!(
        "[[apps]]\n\
         id = \"{APP_SHOP}\"\n\
         upstream = \"{upstream}\"\n\
         allow_users = [\"alice@example.com\", \"*@partner.example\"]\n\
         allow_groups = []\n\
         frame_ancestors = [\"{SHOP_ANCESTOR}\"]\n\
         public_url = \"{SHOP_URL}\"\n"
    )
}

/// The embed config with A and B on `prefix_up` and the shop on `shop_up`.
fn opts(prefix_up: &str, shop_up: &str) -> EmbedOpts {
    let mut o = EmbedOpts::new(prefix_up, prefix_up);
    o.extra = shop_app(shop_up);
    o
}

async fn gateway() -> (Gateway, Upstream, Upstream) {
    let a = echo_upstream("a").await;
    let shop = echo_upstream("shop").await;
    let gw = opts(&a.url(), &shop.url()).start().await;
    (gw, a, shop)
}

/// `GET path` with `Host: host` and `headers`, on a fresh connection.
async fn get_on(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    get_with(addr, path, &all).await
}

/// `GET path` on the shop's host with the session cookie.
async fn shop_get(addr: SocketAddr, path: &str, session: &str) -> Reply {
    let cookie = format!("embedgate_session={session}");
    get_on(addr, SHOP_HOST, path, &[("cookie", &cookie)]).await
}

/// Mints for `email` on the shop (on the main host, as a portal's backend
/// does), exchanges the PAT on the shop's host (asserting the 303) and
/// returns the session cookie's value.
async fn shop_session(addr: SocketAddr, email: &str) -> String {
    let pat = mint_pat(addr, email, APP_SHOP).await;
    let r = get_on(
        addr,
        SHOP_HOST,
        &format!("/embed-apps/{APP_SHOP}?personal-access-token={pat}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 303, "exchange on {SHOP_HOST}: {r:?} {}", r.text());
    set_cookie_value(&r, "embedgate_session").expect("the exchange set no embedgate_session cookie")
}

// ---------------------------------------------------------------------------
// Mint and exchange
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_mint_gives_redirect_url_on_its_own_host() {
    let (gw, _a, _shop) = gateway().await;
    let r = mint(
        gw.public_addr,
        &json!({"email": "alice@example.com", "appId": APP_SHOP}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
    let j = r.json();
    let pat = j["personalAccessToken"].as_str().unwrap();
    assert_eq!(
        j["redirectUrl"].as_str().unwrap(),
        format!("{SHOP_URL}/embed-apps/{APP_SHOP}?personal-access-token={pat}"),
        "{j}"
    );
    // A prefix app's URL is still under the main public_url.
    let r = mint(gw.public_addr, &json!({"email": "alice@example.com", "appId": APP_A})).await;
    let j = r.json();
    let pat = j["personalAccessToken"].as_str().unwrap();
    assert_eq!(
        j["redirectUrl"].as_str().unwrap(),
        format!("{PUBLIC_URL}/embed-apps/{APP_A}?personal-access-token={pat}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_exchange_redirects_to_its_root_with_a_root_cookie() {
    let (gw, a, shop) = gateway().await;
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_SHOP).await;
    let r = get_on(
        gw.public_addr,
        SHOP_HOST,
        &format!("/embed-apps/{APP_SHOP}?personal-access-token={pat}"),
        &[],
    )
    .await;
    assert_eq!(r.status, 303, "{r:?} {}", r.text());
    assert_eq!(r.header("location"), Some(format!("{SHOP_URL}/").as_str()));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    let cookies = r.header_all("set-cookie");
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let (value, attrs) = cookies[0]
        .strip_prefix("embedgate_session=")
        .and_then(|s| s.split_once(';'))
        .unwrap_or_else(|| panic!("not an embedgate_session cookie: {:?}", cookies[0]));
    assert!(!value.is_empty() && !pat.contains(value), "{:?}", cookies[0]);
    // Exactly these five, each once: no Domain, the whole host.
    assert_eq!(
        cookie_parts(attrs),
        cookie_parts("Path=/; Secure; HttpOnly; SameSite=None; Partitioned"),
        "{:?}",
        cookies[0]
    );
    assert_eq!((a.requests(), shop.requests()), (0, 0));
    // The cookie works at the root.
    let e = shop_get(gw.public_addr, "/", value).await.echo();
    assert_eq!(e.upstream(), "shop");
    assert_eq!(e.uri(), "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_exchange_keeps_other_query_params() {
    let (gw, _a, _shop) = gateway().await;
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_SHOP).await;
    let r = get_on(
        gw.public_addr,
        SHOP_HOST,
        &format!("/embed-apps/{APP_SHOP}?x=1&personal-access-token={pat}&y=a%20b"),
        &[],
    )
    .await;
    assert_eq!(r.status, 303, "{r:?} {}", r.text());
    assert_eq!(r.header("location"), Some(format!("{SHOP_URL}/?x=1&y=a%20b").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_is_not_served_under_the_main_host_prefix() {
    let (gw, _a, shop) = gateway().await;
    let addr = gw.public_addr;
    let s = shop_session(addr, "alice@example.com").await;
    let pat = mint_pat(addr, "alice@example.com", APP_SHOP).await;
    for host in [addr.to_string(), "gw.public.example".to_string()] {
        let r = get_on(
            addr,
            &host,
            &format!("/embed-apps/{APP_SHOP}?personal-access-token={pat}"),
            &[],
        )
        .await;
        assert_error_body(&r, 404, "Not Found");
        assert!(r.headers.get("set-cookie").is_none(), "{r:?}");
        let cookie = format!("embedgate_session={s}");
        let r = get_on(
            addr,
            &host,
            &format!("/embed-apps/{APP_SHOP}/static/app.css"),
            &[("cookie", &cookie), ("accept", "application/json")],
        )
        .await;
        assert_error_body(&r, 404, "Not Found");
    }
    assert_eq!(shop.requests(), 0);
}

// ---------------------------------------------------------------------------
// Proxying on the app's host
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_proxies_paths_unchanged_with_identity() {
    let (gw, a, shop) = gateway().await;
    let addr = gw.public_addr;
    let s = shop_session(addr, "alice@example.com").await;
    let cookie = format!("a=1; embedgate_session={s}");
    let r = get_on(
        addr,
        SHOP_HOST,
        "/static/app.css?v=3",
        &[("cookie", &cookie), ("x-embed-user", "mallory@evil.example")],
    )
    .await;
    let e = r.echo();
    assert_eq!(e.upstream(), "shop");
    assert_eq!(e.uri(), "/static/app.css?v=3");
    assert!(
        e.headers("x-forwarded-prefix").is_empty(),
        "a host app's upstream got X-Forwarded-Prefix: {:?}",
        e.headers("x-forwarded-prefix")
    );
    assert_eq!(e.headers("x-embed-user"), ["alice@example.com"]);
    assert_eq!(e.headers("x-embed-groups"), ["sales,eng"]);
    assert_eq!(e.headers("x-embed-app"), [APP_SHOP]);
    assert_eq!(e.headers("host"), [shop.addr.to_string()]);
    assert_eq!(e.headers("cookie"), ["a=1"]);
    assert!(!e.0.to_string().contains(&s), "the session token reached the upstream");
    let jwt = e.headers("x-embed-assertion").pop().expect("no X-Embed-Assertion");
    let claims = verify_jwt(&fetch_jwks(addr).await, &jwt).unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(claims["aud"], APP_SHOP, "{claims}");
    assert_eq!(claims["sub"], "alice@example.com", "{claims}");
    assert_eq!(claims["iss"], PUBLIC_URL, "{claims}");

    // The host matches whatever its case and port.
    for host in ["SHOP.Apps.Example", "shop.apps.example:8443", "Shop.apps.example:443"] {
        let cookie = format!("embedgate_session={s}");
        let r = get_on(addr, host, "/static/app.css", &[("cookie", &cookie)]).await;
        assert_eq!(r.status, 200, "Host {host}: {r:?} {}", r.text());
        assert_eq!(r.echo().uri(), "/static/app.css", "Host {host}");
    }
    assert_eq!(a.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_path_is_joined_under_the_upstream_base_path() {
    let a = echo_upstream("a").await;
    let shop = echo_upstream("shop").await;
    let gw = opts(&a.url(), &format!("{}/base", shop.url())).start().await;
    let s = shop_session(gw.public_addr, "alice@example.com").await;
    let e = shop_get(gw.public_addr, "/static/app.css?v=1", &s).await.echo();
    assert_eq!(e.uri(), "/base/static/app.css?v=1");
}

const UPSTREAM_FRAMING: &[u8] = b"HTTP/1.1 302 Found\r\n\
    Location: /somewhere\r\n\
    Set-Cookie: a=b; Path=/x\r\n\
    X-Frame-Options: DENY\r\n\
    Content-Security-Policy: default-src 'self'; frame-ancestors 'self'\r\n\
    Content-Length: 0\r\n\
    \r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_leaves_upstream_location_and_set_cookie_alone() {
    let a = echo_upstream("a").await;
    let raw = raw_upstream(UPSTREAM_FRAMING).await;
    let gw = opts(&a.url(), &raw.url()).start().await;
    let s = shop_session(gw.public_addr, "alice@example.com").await;
    let r = shop_get(gw.public_addr, "/account", &s).await;
    assert_eq!(r.status, 302, "{r:?} {}", r.text());
    assert_eq!(raw.requests(), 1);
    assert_eq!(r.header("location"), Some("/somewhere"));
    let cookies = r.header_all("set-cookie");
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookie_parts(cookies[0]), cookie_parts("a=b; Path=/x"), "{cookies:?}");
    // The framing rules of embed paths still hold.
    assert!(r.headers.get("x-frame-options").is_none(), "{r:?}");
    let csp: Vec<&str> = r.header_all("content-security-policy");
    assert_eq!(
        csp,
        [
            "default-src 'self'".to_string(),
            format!("frame-ancestors {SHOP_ANCESTOR}")
        ],
        "the upstream's policy without its frame-ancestors, and the app's own"
    );
    // And the upstream was asked for the path as the browser sent it.
    let seen = raw.seen.lock().unwrap();
    assert!(!seen[0].iter().any(|(k, _)| k == "x-forwarded-prefix"), "{:?}", seen[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_frame_ancestors_added_when_upstream_sends_no_csp() {
    let (gw, _a, _shop) = gateway().await;
    let s = shop_session(gw.public_addr, "alice@example.com").await;
    let r = shop_get(gw.public_addr, "/", &s).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-security-policy").map(csp_directives),
        Some(csp_directives(&format!("frame-ancestors {SHOP_ANCESTOR}")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_sends_gateway_paths_to_its_upstream() {
    let (gw, a, shop) = gateway().await;
    let addr = gw.public_addr;
    let s = shop_session(addr, "alice@example.com").await;
    let cookie = format!("embedgate_session={s}");
    let body = json!({"email": "alice@example.com", "appId": APP_SHOP}).to_string();

    // The app's own API at the gateway's API path.
    let req = Request::post(MINT)
        .header("host", SHOP_HOST)
        .header("cookie", &cookie)
        .header("authorization", format!("Basic {API_TOKEN}"))
        .header("content-type", "application/json")
        .body(full(body.clone()))
        .unwrap();
    let r = H1::connect(addr).await.request(req).await;
    assert_eq!(
        r.status,
        200,
        "{MINT} on {SHOP_HOST} was not the app's: {r:?} {}",
        r.text()
    );
    let e = r.echo();
    assert_eq!(e.upstream(), "shop");
    assert_eq!(e.method(), "POST");
    assert_eq!(e.uri(), MINT);
    assert_eq!(e.body(), body);
    assert_eq!(e.headers("x-embed-user"), ["alice@example.com"]);

    for path in [
        "/api/ext/users/sessions/revoke",
        "/.well-known/embedgate/jwks.json",
        "/embed-apps/other/path",
    ] {
        let e = shop_get(addr, path, &s).await.echo();
        assert_eq!(e.upstream(), "shop", "{path}");
        assert_eq!(e.uri(), path);
    }

    // Without a session it is the app's 401, not the PAT API's.
    let req = Request::post(MINT)
        .header("host", SHOP_HOST)
        .header("authorization", format!("Basic {API_TOKEN}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(full(body))
        .unwrap();
    let r = H1::connect(addr).await.request(req).await;
    assert_error_body(&r, 401, "Unauthorized");
    assert!(
        !r.text().contains("pat_"),
        "a PAT was minted on the app's host: {}",
        r.text()
    );
    assert_eq!(shop.requests(), 4, "the request without a session reached the upstream");
    assert_eq!(a.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_without_session_is_401() {
    let (gw, _a, shop) = gateway().await;
    let addr = gw.public_addr;
    for accept in [Some("application/json"), None] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|v| ("accept", *v)).collect();
        let r = get_on(addr, SHOP_HOST, "/api/data", &headers).await;
        assert_error_body(&r, 401, "Unauthorized");
    }
    let r = get_on(
        addr,
        SHOP_HOST,
        "/",
        &[("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("content-type").unwrap_or("").starts_with("text/html"), "{r:?}");
    let page = r.text();
    for needle in [
        "embedgate:session-expired",
        "TJ_EMBED_APP_LOGOUT",
        APP_SHOP,
        "postMessage",
    ] {
        assert!(page.contains(needle), "the page lacks {needle:?}:\n{page}");
    }
    for bad in ["", "x", &"0".repeat(64)] {
        let r = shop_get(addr, "/", bad).await;
        assert_eq!(r.status, 401, "session {bad:?}: {r:?}");
    }
    assert_eq!(shop.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bound_to_their_app_across_hosts() {
    let (gw, a, shop) = gateway().await;
    let addr = gw.public_addr;
    let shop_s = shop_session(addr, "alice@example.com").await;
    let a_s = open_session(addr, "alice@example.com", APP_A).await;

    // The host app's cookie on a prefix app.
    let cookie = format!("embedgate_session={shop_s}");
    let r = get_with(
        addr,
        &format!("/embed-apps/{APP_A}/x"),
        &[("cookie", &cookie), ("accept", "application/json")],
    )
    .await;
    assert_error_body(&r, 401, "Unauthorized");
    // A prefix app's cookie on the host app.
    let cookie = format!("embedgate_session={a_s}");
    let r = get_on(
        addr,
        SHOP_HOST,
        "/x",
        &[("cookie", &cookie), ("accept", "application/json")],
    )
    .await;
    assert_error_body(&r, 401, "Unauthorized");
    assert_eq!((a.requests(), shop.requests()), (0, 0));

    // Each still works where it belongs.
    assert_eq!(shop_get(addr, "/x", &shop_s).await.echo().upstream(), "shop");
    assert_eq!(embed_get(addr, APP_A, "/x", &a_s).await.echo().upstream(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclaimed_host_is_routed_as_before() {
    let (gw, a, shop) = gateway().await;
    let addr = gw.public_addr;
    for host in [
        "other.example",
        "apps.example",
        "shop.apps.example.evil",
        "gw.public.example",
    ] {
        // The PAT API answers there.
        let req = Request::post(MINT)
            .header("host", host)
            .header("authorization", format!("Basic {API_TOKEN}"))
            .header("content-type", "application/json")
            .body(full(json!({"email": "alice@example.com", "appId": APP_A}).to_string()))
            .unwrap();
        let r = H1::connect(addr).await.request(req).await;
        assert_eq!(r.status, 201, "mint with Host {host}: {r:?} {}", r.text());
        let pat = r.json()["personalAccessToken"].as_str().unwrap().to_string();
        // The prefix exchange and proxying as before.
        let r = get_on(
            addr,
            host,
            &format!("/embed-apps/{APP_A}?personal-access-token={pat}"),
            &[],
        )
        .await;
        assert_eq!(r.status, 303, "exchange with Host {host}: {r:?} {}", r.text());
        assert_eq!(
            r.header("location"),
            Some(format!("{PUBLIC_URL}/embed-apps/{APP_A}/").as_str())
        );
        let cookies = r.header_all("set-cookie");
        assert!(
            cookies.len() == 1 && cookies[0].contains(&format!("Path=/embed-apps/{APP_A}")),
            "Host {host}: {cookies:?}"
        );
        let s = set_cookie_value(&r, "embedgate_session").unwrap();
        let cookie = format!("embedgate_session={s}");
        let e = get_on(
            addr,
            host,
            &format!("/embed-apps/{APP_A}/static/app.css"),
            &[("cookie", &cookie)],
        )
        .await
        .echo();
        assert_eq!(e.upstream(), "a", "Host {host}");
        assert_eq!(e.uri(), "/static/app.css");
        assert_eq!(e.headers("x-forwarded-prefix"), [format!("/embed-apps/{APP_A}")]);
        // Other paths: no passthrough here, so 404, never the shop.
        let r = get_on(addr, host, "/static/app.css", &[("cookie", &cookie)]).await;
        assert_eq!(r.status, 404, "Host {host}: {r:?} {}", r.text());
    }
    assert!(a.requests() >= 4);
    assert_eq!(shop.requests(), 0);
}

// ---------------------------------------------------------------------------
// TLS: the certificate by SNI, HTTP/2 by :authority
// ---------------------------------------------------------------------------

/// A TLS gateway whose `[tls]` leaf covers `localhost` and `127.0.0.1` and
/// whose `[[tls.certificates]]` leaf covers [`SHOP_HOST`], both from `ca`.
/// Returns the two leaves' DER (main, shop).
async fn tls_gateway(
    ca: &SniCa,
    a: &Upstream,
    shop: &Upstream,
) -> (
    Gateway,
    rustls_pki_types::CertificateDer<'static>,
    rustls_pki_types::CertificateDer<'static>,
) {
    let dir = new_dir();
    let main = ca.leaf(dir.path(), "main", &["localhost", "127.0.0.1"]);
    let shop_leaf = ca.leaf(dir.path(), "shop", &[SHOP_HOST]);
    let mut o = opts(&a.url(), &shop.url());
    o.extra = format!(
        "{}\n[tls]\ncert = \"main.pem\"\nkey = \"main-key.pem\"\n\n\
         [[tls.certificates]]\ncert = \"shop.pem\"\nkey = \"shop-key.pem\"\n",
        shop_app(&shop.url())
    );
    let gw = Gateway::start(dir, &o.config()).await;
    (gw, main, shop_leaf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_by_server_name() {
    let a = echo_upstream("a").await;
    let shop = echo_upstream("shop").await;
    let ca = SniCa::new();
    let (gw, main, shop_leaf) = tls_gateway(&ca, &a, &shop).await;
    assert_ne!(main, shop_leaf);
    for (name, want, which) in [
        (SHOP_HOST, &shop_leaf, "the [[tls.certificates]] one"),
        ("localhost", &main, "the [tls] one"),
        // An IP address: the client sends no SNI at all.
        ("127.0.0.1", &main, "the [tls] one (no SNI)"),
    ] {
        let tls = ca
            .connect(gw.public_addr, name, &[b"http/1.1"])
            .await
            .unwrap_or_else(|e| panic!("TLS as {name:?}: the certificate is not {which}: {e}"));
        let got = peer_leaf(&tls).expect("no peer certificate");
        assert_eq!(&got, want, "TLS as {name:?}: not {which}");
        // And HTTP over it still works.
        let mut c = H1::handshake(tls, format!("localhost:{}", gw.public_addr.port())).await;
        let r = c.get("/.well-known/embedgate/jwks.json").await;
        assert_eq!(r.status, 200, "{name}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_app_is_routed_by_h2_authority() {
    let a = echo_upstream("a").await;
    let shop = echo_upstream("shop").await;
    let ca = SniCa::new();
    let (gw, _main, _shop_leaf) = tls_gateway(&ca, &a, &shop).await;
    let addr = gw.public_addr;
    let main_origin = format!("https://localhost:{}", addr.port());

    // Mint on the main host over HTTP/2.
    let tls = ca.connect(addr, "localhost", &[b"h2"]).await.expect("TLS as localhost");
    assert_eq!(alpn_of(&tls).as_deref(), Some(&b"h2"[..]));
    let mut main = H2Over::handshake(tls).await;
    let r = main
        .request(
            Request::post(format!("{main_origin}{MINT}"))
                .header("authorization", format!("Basic {API_TOKEN}"))
                .header("content-type", "application/json")
                .body(full(
                    json!({"email": "alice@example.com", "appId": APP_SHOP}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
    let pat = r.json()["personalAccessToken"].as_str().unwrap().to_string();

    // Exchange and use it on the app's host: :authority, no Host header.
    let tls = ca.connect(addr, SHOP_HOST, &[b"h2"]).await.expect("TLS as the shop");
    assert_eq!(alpn_of(&tls).as_deref(), Some(&b"h2"[..]));
    let mut c = H2Over::handshake(tls).await;
    let r = c
        .request(
            Request::get(format!("{SHOP_URL}/embed-apps/{APP_SHOP}?personal-access-token={pat}"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.version, hyper::Version::HTTP_2);
    assert_eq!(r.status, 303, "{r:?} {}", r.text());
    assert_eq!(r.header("location"), Some(format!("{SHOP_URL}/").as_str()));
    let s = set_cookie_value(&r, "embedgate_session").expect("no session cookie");
    let req = Request::get(format!("{SHOP_URL}/static/app.css"))
        .header("cookie", "a=1")
        .header("cookie", format!("embedgate_session={s}"))
        .body(empty())
        .unwrap();
    let e = c.request(req).await.echo();
    assert_eq!(e.upstream(), "shop");
    assert_eq!(e.uri(), "/static/app.css");
    assert_eq!(e.headers("x-embed-user"), ["alice@example.com"]);
    assert_eq!(e.headers("x-embed-app"), [APP_SHOP]);
    assert_eq!(e.headers("cookie"), ["a=1"]);
    assert!(e.headers("x-forwarded-prefix").is_empty(), "{:?}", e.0);

    // The same path on the main host's :authority is not the app.
    let r = main
        .request(
            Request::get(format!("{main_origin}/static/app.css"))
                .header("cookie", format!("embedgate_session={s}"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 404, "{r:?} {}", r.text());
    assert_eq!(shop.requests(), 1);
    assert_eq!(a.requests(), 0);
}

// ---------------------------------------------------------------------------
// embedgate check
// ---------------------------------------------------------------------------

/// A config on the TLS files in `dir` (`main.pem`, and `shop.pem` when
/// `shop_cert`) with `apps` appended; returns its path.
fn write_check_config(dir: &std::path::Path, shop_cert: bool, apps: &str) -> std::path::PathBuf {
    let extra_cert = if shop_cert {
        "[[tls.certificates]]\ncert = \"shop.pem\"\nkey = \"shop-key.pem\"\n\n"
    } else {
        ""
    };
    let text = format!(
        "[server]\n\
         listen = \"127.0.0.1:0\"\n\
         public_url = \"https://gw.public.example\"\n\n\
         [tls]\n\
         cert = \"main.pem\"\n\
         key = \"main-key.pem\"\n\n\
         {extra_cert}\
         [api]\n\
         token_sha256 = [\"{h}\"]\n\n\
         [[users]]\n\
         email = \"alice@example.com\"\n\
         groups = []\n\n\
         {apps}",
        h = sha256_hex(API_TOKEN)
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// An `[[apps]]` table with `id` and `public_url`.
fn app_table(id: &str, public_url: &str) -> String {
    format!(
        "[[apps]]\nid = \"{id}\"\nupstream = \"http://127.0.0.1:9\"\nallow_users = [\"*\"]\n\
         public_url = \"{public_url}\"\n\n"
    )
}

/// 1-based line numbers of the lines of `path` that contain `needle`.
fn lines_with(path: &std::path::Path, needle: &str) -> Vec<usize> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect()
}

/// Asserts `embedgate check` exits 1 with a `file:line: …public_url…` line
/// at one of `lines`.
fn assert_check_refuses_public_url(path: &std::path::Path, lines: &[usize], what: &str) {
    let out = run_check(path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: check must exit 1; stderr:\n{stderr}"
    );
    let named = stderr.lines().any(|l| {
        lines
            .iter()
            .any(|n| l.starts_with(&format!("{}:{n}: ", path.display())))
            && l.contains("public_url")
    });
    assert!(
        named,
        "{what}: no `{}:<line {lines:?}>: …public_url…: why` line in:\n{stderr}",
        path.display()
    );
}

#[test]
fn check_refuses_two_apps_on_one_host() {
    const OTHER: &str = "5e0b0000-0000-4000-8000-0000000000d4";
    for (what, second) in [
        ("the same URL", SHOP_URL),
        (
            "the same host in another case and port",
            "https://SHOP.apps.example:8443",
        ),
    ] {
        let dir = new_dir();
        let ca = SniCa::new();
        ca.leaf(dir.path(), "main", &["localhost"]);
        ca.leaf(dir.path(), "shop", &[SHOP_HOST]);
        let path = write_check_config(
            dir.path(),
            true,
            &format!("{}{}", app_table(APP_SHOP, SHOP_URL), app_table(OTHER, second)),
        );
        let lines = lines_with(&path, "public_url = \"https://");
        let lines: Vec<usize> = lines.into_iter().skip(1).collect();
        assert_eq!(lines.len(), 2, "test setup");
        assert_check_refuses_public_url(&path, &lines, what);
    }
}

#[test]
fn check_refuses_an_app_host_equal_to_the_main_host() {
    for (what, url) in [
        ("the same URL", "https://gw.public.example"),
        (
            "the same host in another case and port",
            "https://GW.Public.Example:8443",
        ),
    ] {
        let dir = new_dir();
        let ca = SniCa::new();
        ca.leaf(dir.path(), "main", &["gw.public.example"]);
        let path = write_check_config(dir.path(), false, &app_table(APP_SHOP, url));
        // The app's line: the last of those naming the URL (the server's may too).
        let line = *lines_with(&path, &format!("public_url = \"{url}\""))
            .last()
            .expect("test setup");
        assert!(line > 3, "test setup");
        assert_check_refuses_public_url(&path, &[line], what);
    }
}

#[test]
fn check_warns_when_no_certificate_covers_an_app_host() {
    let dir = new_dir();
    let ca = SniCa::new();
    ca.leaf(dir.path(), "main", &["gw.public.example", "localhost"]);
    ca.leaf(dir.path(), "shop", &[SHOP_HOST]);
    let apps = app_table(APP_SHOP, SHOP_URL);

    // Only the main certificate, which does not cover the shop: a warning.
    let path = write_check_config(dir.path(), false, &apps);
    let out = run_check(&path);
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "a warning is not an error:\n{output}");
    let warned = |output: &str| {
        output
            .lines()
            .any(|l| l.to_ascii_lowercase().contains("warn") && l.contains(SHOP_HOST))
    };
    assert!(
        warned(&output),
        "no warning line naming {SHOP_HOST} (no certificate covers it):\n{output}"
    );

    // With a certificate for it: no warning.
    let path = write_check_config(dir.path(), true, &apps);
    let out = run_check(&path);
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{output}");
    assert!(!warned(&output), "a warning about a covered host:\n{output}");
}
