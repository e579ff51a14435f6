use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use http::header;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::jwks::JWKS_PATH;
use super::mount_prefix;
use crate::assertion::{Claims, Signer, LIFETIME_SECONDS};
use crate::demo::testing::{dead_base, fake_gateway, get, request, Log, APP_ID, EMAIL};
use crate::demo::{spawn_app, GatewayLink};

/// The demo app with a gateway that cannot be reached.
async fn start() -> SocketAddr {
    start_with(dead_base().await).await
}

async fn start_with(base: String) -> SocketAddr {
    spawn_app("127.0.0.1:0".parse().unwrap(), GatewayLink { base })
        .await
        .unwrap()
}

/// A fake gateway that serves `jwks` (which a test may swap) at the
/// JWKS path, and 404 elsewhere.
async fn jwks_server(jwks: Arc<Mutex<String>>) -> (String, Log) {
    fake_gateway(move |req| {
        if req.method == Method::GET && req.path == JWKS_PATH {
            (StatusCode::OK, jwks.lock().unwrap().clone())
        } else {
            (StatusCode::NOT_FOUND, "{}".to_owned())
        }
    })
    .await
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn sign(signer: &Signer, sub: &str) -> String {
    let groups = vec!["sales".to_owned(), "ops".to_owned()];
    let iat = now();
    signer
        .sign(&Claims {
            iss: "http://localhost:8443",
            aud: APP_ID,
            sub,
            groups: &groups,
            attrs: None,
            iat,
            exp: iat + LIFETIME_SECONDS,
        })
        .unwrap()
}

/// An app whose gateway serves `signer`'s JWKS.
async fn app_trusting(signer: &Signer) -> (SocketAddr, Log) {
    let jwks = Arc::new(Mutex::new(signer.jwks_json().to_owned()));
    let (base, log) = jwks_server(jwks).await;
    (start_with(base).await, log)
}

fn identity(token: &str) -> [(&'static str, &str); 4] {
    [
        ("x-embed-user", EMAIL),
        ("x-embed-groups", "sales,ops"),
        ("x-embed-app", APP_ID),
        ("x-embed-assertion", token),
    ]
}

#[tokio::test]
async fn page_builds_urls_under_forwarded_prefix() {
    let addr = start().await;
    let prefix = "/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";
    let (status, headers, body) = get(
        addr,
        "/",
        &[
            ("x-forwarded-prefix", prefix),
            ("x-embed-user", "user@example.com"),
            ("x-embed-groups", "sales, ops"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(body.contains("embedgate demo app"));
    assert!(body.contains(&format!("href=\"{prefix}/api/whoami\"")));
    assert!(body.contains(&format!("data-prefix=\"{prefix}\"")));
    assert!(body.contains("form.dataset.prefix + '/ws'"));
    assert!(body.contains("<code>user@example.com</code>"));
    assert!(body.contains("<code>sales, ops</code>"));
    assert!(!body.contains("href=\"/api/whoami\""));
    assert!(!body.contains("no identity"));
}

#[tokio::test]
async fn page_escapes_header_values() {
    let addr = start().await;
    let (status, _, body) = get(
        addr,
        "/",
        &[
            ("x-embed-user", "<script>alert(1)</script>"),
            ("x-embed-app", "\"'&"),
            ("x-forwarded-host", "<img src=x>"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("<script>alert"));
    assert!(!body.contains("<img"));
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(body.contains("&quot;&#39;&amp;"));
    assert!(body.contains("&lt;img src=x&gt;"));
}

#[tokio::test]
async fn page_without_identity_says_so() {
    let addr = start().await;
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("no identity: reached without an embed session"));
    assert!(body.contains("X-Embed-Assertion: <strong>absent</strong>"));
    assert!(body.contains("href=\"/api/whoami\""));
    assert!(body.contains("data-prefix=\"\""));
}

#[tokio::test]
async fn page_ignores_a_prefix_that_leaves_the_origin() {
    let addr = start().await;
    for bad in ["//evil.example", "https://evil.example", "/a\" onclick=\"x"] {
        let (_, _, body) = get(addr, "/", &[("x-forwarded-prefix", bad)]).await;
        assert!(body.contains("href=\"/api/whoami\""), "{bad}");
        assert!(body.contains("data-prefix=\"\""), "{bad}");
    }
}

#[tokio::test]
async fn websocket_echoes_text_and_binary() {
    let addr = start().await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 255])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(vec![0u8, 1, 255]));
    ws.close(None).await.unwrap();
    // The server completes the closing handshake, then the stream ends.
    while let Some(message) = ws.next().await {
        assert!(matches!(message, Ok(Message::Close(_))), "{message:?}");
    }
}

#[tokio::test]
async fn ws_without_upgrade_is_bad_request() {
    let addr = start().await;
    let (status, _, _) = get(addr, "/ws", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unknown_path_is_not_found() {
    let addr = start().await;
    let (status, _, body) = get(addr, "/nope", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "not found\n");
}

#[test]
fn mount_prefix_takes_plain_paths_only() {
    assert_eq!(mount_prefix(None), "");
    assert_eq!(mount_prefix(Some("/embed-apps/x/")), "/embed-apps/x");
    assert_eq!(mount_prefix(Some("/a, /b")), "/a");
    assert_eq!(mount_prefix(Some("//evil.example")), "");
    assert_eq!(mount_prefix(Some("javascript:x")), "");
    assert_eq!(mount_prefix(Some("/a<b")), "");
}

#[tokio::test]
async fn page_reports_assertion_presence_not_value() {
    let addr = start().await;
    let (_, _, body) = get(addr, "/", &[("x-embed-assertion", "eyJsecret")]).await;
    assert!(body.contains("X-Embed-Assertion: <strong>present</strong>"));
    assert!(
        body.contains("assertion NOT verified: cannot fetch the gateway&#39;s JWKS"),
        "{body}"
    );
    assert!(!body.contains("eyJsecret"));
}

#[tokio::test]
async fn page_shows_a_verified_assertion_and_its_claims() {
    let signer = Signer::generate().unwrap();
    let (addr, _) = app_trusting(&signer).await;
    let token = sign(&signer, EMAIL);
    let (status, _, body) = get(addr, "/", &identity(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("assertion verified against the gateway's JWKS ✓"),
        "{body}"
    );
    assert!(
        body.contains("<tr><th>sub</th><td><code>user@example.com</code></td></tr>"),
        "{body}"
    );
    assert!(body.contains(&format!("<tr><th>aud</th><td><code>{APP_ID}</code></td></tr>")));
    assert!(body.contains("<tr><th>groups</th><td><code>sales, ops</code></td></tr>"));
    assert!(body.contains("<tr><th>exp</th><td><code>"));
    assert!(!body.contains(&token));
    assert!(!body.contains("NOT verified"));
}

#[tokio::test]
async fn whoami_returns_identity_and_verified_claims_as_json() {
    let signer = Signer::generate().unwrap();
    let (addr, _) = app_trusting(&signer).await;
    let token = sign(&signer, EMAIL);
    let mut headers = identity(&token).to_vec();
    headers.extend([
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "localhost:8443"),
        ("x-forwarded-prefix", "/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc"),
    ]);
    let (status, headers, body) = get(addr, "/api/whoami", &headers).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(!body.contains(&token));
    let mut json: Value = serde_json::from_str(&body).unwrap();
    let claims = json["assertion"]["claims"].take();
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(
        claims,
        json!({
            "iss": "http://localhost:8443", "aud": APP_ID, "sub": EMAIL,
            "groups": ["sales", "ops"], "iat": iat, "exp": iat + LIFETIME_SECONDS,
        })
    );
    assert_eq!(
        json,
        json!({
            "user": EMAIL,
            "groups": ["sales", "ops"],
            "app": APP_ID,
            "assertion": {"present": true, "verified": true, "claims": null},
            "forwarded": {
                "for": "203.0.113.7",
                "proto": "https",
                "host": "localhost:8443",
                "prefix": "/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc",
            },
        })
    );
}

#[tokio::test]
async fn whoami_gives_null_for_absent_headers() {
    let addr = start().await;
    let (status, _, body) = get(addr, "/api/whoami", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        json!({
            "user": null, "groups": null, "app": null,
            "assertion": {"present": false, "verified": false},
            "forwarded": {"for": null, "proto": null, "host": null, "prefix": null},
        })
    );
}

/// The token with its claims rewritten to name another user, keeping
/// the original signature.
fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("admin@example.com");
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{claims}.{}", parts[0], parts[2])
}

#[tokio::test]
async fn tampered_assertion_is_not_verified() {
    let signer = Signer::generate().unwrap();
    let (addr, _) = app_trusting(&signer).await;
    let token = tampered(&sign(&signer, EMAIL));
    let headers = [
        ("x-embed-user", "admin@example.com"),
        ("x-embed-assertion", token.as_str()),
    ];
    let (_, _, body) = get(addr, "/api/whoami", &headers).await;
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["assertion"],
        json!({"present": true, "verified": false, "error": "assertion signature does not verify"})
    );
    let (_, _, body) = get(addr, "/", &headers).await;
    assert!(
        body.contains("assertion NOT verified: assertion signature does not verify"),
        "{body}"
    );
    assert!(!body.contains("verified against"));
    assert!(!body.contains(&token));
}

#[tokio::test]
async fn assertion_for_another_user_or_app_is_not_verified() {
    let signer = Signer::generate().unwrap();
    let (addr, _) = app_trusting(&signer).await;
    let token = sign(&signer, "someone@example.com");
    let (_, _, body) = get(addr, "/api/whoami", &identity(&token)).await;
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["assertion"]["verified"], false);
    assert_eq!(json["assertion"]["error"], "its sub is not the X-Embed-User header");

    let token = sign(&signer, EMAIL);
    let headers = [
        ("x-embed-app", "00000000-0000-4000-8000-000000000000"),
        ("x-embed-assertion", token.as_str()),
    ];
    let (_, _, body) = get(addr, "/api/whoami", &headers).await;
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["assertion"]["error"], "its aud is not the X-Embed-App header");
}

#[tokio::test]
async fn garbage_assertion_is_not_verified() {
    let signer = Signer::generate().unwrap();
    let (addr, _) = app_trusting(&signer).await;
    let (_, _, body) = get(addr, "/api/whoami", &[("x-embed-assertion", "not-a-jwt")]).await;
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["assertion"]["present"], true);
    assert_eq!(json["assertion"]["verified"], false);
    assert!(json["assertion"]["error"]
        .as_str()
        .unwrap()
        .starts_with("malformed assertion"));
}

#[tokio::test]
async fn jwks_is_cached_and_fetched_again_for_an_unknown_kid() {
    let first = Signer::generate().unwrap();
    let jwks = Arc::new(Mutex::new(first.jwks_json().to_owned()));
    let (base, log) = jwks_server(jwks.clone()).await;
    let addr = start_with(base).await;
    let verified = |body: String| serde_json::from_str::<Value>(&body).unwrap()["assertion"].clone();

    for _ in 0..2 {
        let token = sign(&first, EMAIL);
        let (_, _, body) = get(addr, "/api/whoami", &identity(&token)).await;
        assert_eq!(verified(body)["verified"], true);
    }
    assert_eq!(log.lock().unwrap().len(), 1, "the second request uses the cached JWKS");

    // The gateway restarts with a new key: one more fetch finds it.
    let second = Signer::generate().unwrap();
    *jwks.lock().unwrap() = second.jwks_json().to_owned();
    let token = sign(&second, EMAIL);
    let (_, _, body) = get(addr, "/api/whoami", &identity(&token)).await;
    assert_eq!(verified(body)["verified"], true);
    assert_eq!(log.lock().unwrap().len(), 2);

    // A key the gateway never had: fetched once more, then refused.
    let stranger = Signer::generate().unwrap();
    let token = sign(&stranger, EMAIL);
    let (_, _, body) = get(addr, "/api/whoami", &identity(&token)).await;
    let assertion = verified(body);
    assert_eq!(assertion["verified"], false);
    assert_eq!(assertion["error"], "assertion signed by an unknown key id");
    assert_eq!(log.lock().unwrap().len(), 3);
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.path == JWKS_PATH && r.method == Method::GET));
}

#[tokio::test]
async fn jwks_error_status_is_reported() {
    let (base, _) = fake_gateway(|_| (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned())).await;
    let addr = start_with(base).await;
    let (_, _, body) = get(addr, "/api/whoami", &[("x-embed-assertion", "a.b.c")]).await;
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["assertion"]["error"],
        "the gateway's JWKS answered 503 Service Unavailable"
    );
}

#[tokio::test]
async fn page_leaves_no_placeholder_unfilled() {
    let signer = Signer::generate().unwrap();
    let (addr, _) = app_trusting(&signer).await;
    let token = sign(&signer, EMAIL);
    let not_verified = [("x-embed-assertion", "not-a-jwt")];
    for headers in [&identity(&token)[..], &not_verified, &[]] {
        let (status, _, body) = get(addr, "/", headers).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("</html>") && !body.contains("{{"), "{body}");
    }
}

#[tokio::test]
async fn shop_page_loads_its_files_and_api_by_absolute_paths() {
    let addr = start().await;
    for path in ["/shop/", "/shop"] {
        let (status, headers, body) = get(addr, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(body.contains("<title>Acme shop (embedgate demo)</title>"), "{body}");
        assert!(
            body.contains("<link rel=\"stylesheet\" href=\"/static/shop.css\">"),
            "{body}"
        );
        assert!(body.contains("<script src=\"/static/shop.js\"></script>"), "{body}");
        assert!(body.contains("<p id=\"shop-status\" role=\"status\">"), "{body}");
        assert!(body.contains("</html>") && !body.contains("{{"), "{body}");
    }
}

#[tokio::test]
async fn shop_serves_its_stylesheet_and_script_with_their_types() {
    let addr = start().await;
    let (status, headers, css) = get(addr, "/shop/static/shop.css", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    // What the script reads back to tell that the stylesheet applied.
    assert!(css.contains(".shop-bar {\n  --shop-stylesheet: applied;"), "{css}");

    let (status, headers, js) = get(addr, "/shop/static/shop.js", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(js.contains("getPropertyValue('--shop-stylesheet')"), "{js}");
    assert!(js.contains("fetch('/api/whoami'"), "{js}");
    assert!(js.contains("type: 'embedgate-demo:shop'"), "{js}");
}

#[tokio::test]
async fn shop_whoami_answers_as_the_apps_whoami() {
    let signer = Signer::generate().unwrap();
    let (addr, _) = app_trusting(&signer).await;
    let token = sign(&signer, EMAIL);
    let mut headers = identity(&token).to_vec();
    headers.extend([
        ("x-forwarded-host", "app.localhost:8443"),
        ("x-forwarded-proto", "http"),
    ]);
    let (status, response_headers, body) = get(addr, "/shop/api/whoami", &headers).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response_headers[header::CONTENT_TYPE], "application/json");
    assert!(!body.contains(&token));
    let shop: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shop["user"], EMAIL);
    assert_eq!(shop["app"], APP_ID);
    assert_eq!(shop["assertion"]["verified"], true, "{shop}");
    assert_eq!(shop["forwarded"]["host"], "app.localhost:8443");
    assert_eq!(shop["forwarded"]["prefix"], Value::Null);
    let (_, _, first) = get(addr, "/api/whoami", &headers).await;
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(shop, first);
}

#[tokio::test]
async fn shop_routes_take_get_and_head_only() {
    let addr = start().await;
    for path in [
        "/shop/",
        "/shop/static/shop.css",
        "/shop/static/shop.js",
        "/shop/api/whoami",
    ] {
        let (status, headers, _) = request(addr, Method::POST, path, &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(headers[header::ALLOW], "GET, HEAD", "{path}");
        let (status, _, body) = request(addr, Method::HEAD, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body.is_empty(), "{path}");
    }
}

#[tokio::test]
async fn shop_unknown_paths_are_not_found() {
    let addr = start().await;
    for path in [
        "/shop/nope",
        "/shop/static/app.css",
        "/static/shop.css",
        "/shopping",
        "/shop//",
    ] {
        let (status, _, body) = get(addr, path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, "not found\n", "{path}");
    }
}
