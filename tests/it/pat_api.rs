//! Minting a PAT: `POST /api/ext/users/personal-access-token` (SPEC §3).

use crate::common::*;
use serde_json::json;

const MINT: &str = "/api/ext/users/personal-access-token";

async fn gateway() -> (Gateway, Upstream) {
    let up = echo_upstream("app").await;
    let gw = EmbedOpts::new(&up.url(), &up.url()).start().await;
    (gw, up)
}

fn is_pat(s: &str) -> bool {
    s.len() == 4 + 64
        && s.starts_with("pat_")
        && s[4..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Mints `body` and asserts a 400 whose message is `message`.
async fn assert_400(gw: &Gateway, body: &str, message: &str) {
    let r = post_json(gw.public_addr, MINT, Some(API_TOKEN), body).await;
    let got = assert_error_body(&r, 400, "Bad Request");
    assert_eq!(got, message, "body {body}");
}

/// Mints `body` and asserts a 400 whose message names `field`.
async fn assert_400_names(gw: &Gateway, body: &str, field: &str) {
    let r = post_json(gw.public_addr, MINT, Some(API_TOKEN), body).await;
    let got = assert_error_body(&r, 400, "Bad Request");
    assert!(got.starts_with(&format!("{field}:")), "body {body}: message {got:?}");
}

fn body_with(extra: &str) -> String {
    format!("{{\"email\": \"alice@example.com\", \"appId\": \"{APP_A}\"{extra}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_returns_201_with_redirect_url_from_public_url() {
    let (gw, _up) = gateway().await;
    let req = hyper::Request::post(MINT)
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil2.example")
        .header("x-forwarded-proto", "http")
        .header("authorization", format!("Basic {API_TOKEN}"))
        .header("content-type", "application/json")
        .body(full(
            json!({"email": "alice@example.com", "appId": APP_A, "sessionExpiry": 30, "patExpiry": 600}).to_string(),
        ))
        .unwrap();
    let before = unix_now();
    let r = H1::connect(gw.public_addr).await.request(req).await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(
        r.header("content-type").unwrap_or("").starts_with("application/json"),
        "{r:?}"
    );
    let j = r.json();
    let obj = j.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expiresAt", "personalAccessToken", "redirectUrl"], "{j}");
    let pat = j["personalAccessToken"].as_str().unwrap();
    assert!(is_pat(pat), "not pat_ + 64 lowercase hex: {pat:?}");
    assert_eq!(
        j["redirectUrl"].as_str().unwrap(),
        format!("{PUBLIC_URL}/embed-apps/{APP_A}?personal-access-token={pat}")
    );
    let expires = parse_rfc3339(j["expiresAt"].as_str().unwrap())
        .unwrap_or_else(|| panic!("expiresAt is not RFC 3339: {}", j["expiresAt"]));
    assert!(
        (expires - (before + 600.0)).abs() < 5.0,
        "expiresAt {} is not now + patExpiry (600 s)",
        j["expiresAt"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_requires_api_token() {
    let (gw, _up) = gateway().await;
    let body = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    let base64_token = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(API_TOKEN)
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no Authorization", None),
        ("a wrong token", Some("Basic not-the-token".into())),
        ("the token with a suffix", Some(format!("Basic {API_TOKEN}x"))),
        ("the token base64-encoded", Some(format!("Basic {base64_token}"))),
        ("the token as Bearer", Some(format!("Bearer {API_TOKEN}"))),
        ("an empty Basic", Some("Basic ".into())),
    ];
    for (what, auth) in cases {
        let mut req = hyper::Request::post(MINT).header("content-type", "application/json");
        if let Some(a) = &auth {
            req = req.header("authorization", a.as_str());
        }
        let r = H1::connect(gw.public_addr)
            .await
            .request(req.body(full(body.clone())).unwrap())
            .await;
        assert_eq!(r.status, 401, "{what}: {r:?} {}", r.text());
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"embedgate\""),
            "{what}"
        );
        assert_error_body(&r, 401, "Unauthorized");
    }
    // Both configured tokens work.
    for token in [API_TOKEN, API_TOKEN_2] {
        let r = post_json(gw.public_addr, MINT, Some(token), &body).await;
        assert_eq!(r.status, 201, "{r:?} {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_accepts_token_from_token_env() {
    let up = echo_upstream("app").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.api_extra = "token_env = \"EMBEDGATE_TEST_ENV_TOKEN\"".into();
    let env_token = "env-token-0a1b2c3d4e5f";
    let gw = Gateway::start_full(
        new_dir(),
        &opts.config(),
        &[],
        &[("EMBEDGATE_TEST_ENV_TOKEN", env_token)],
    )
    .await;
    let body = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    let r = post_json(gw.public_addr, MINT, Some(env_token), &body).await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
    let r = post_json(gw.public_addr, MINT, Some("env-token-0a1b2c3d4e5"), &body).await;
    assert_eq!(r.status, 401, "{r:?} {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rejects_float_session_expiry() {
    let (gw, _up) = gateway().await;
    assert_400(
        &gw,
        &body_with(", \"sessionExpiry\": 30.5"),
        "sessionExpiry: must be an integer",
    )
    .await;
    assert_400(
        &gw,
        &body_with(", \"sessionExpiry\": 60.0"),
        "sessionExpiry: must be an integer",
    )
    .await;
    assert_400(
        &gw,
        &body_with(", \"sessionExpiry\": 1e2"),
        "sessionExpiry: must be an integer",
    )
    .await;
    assert_400(&gw, &body_with(", \"patExpiry\": 1.5"), "patExpiry: must be an integer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rejects_string_expiry() {
    let (gw, _up) = gateway().await;
    assert_400(
        &gw,
        &body_with(", \"sessionExpiry\": \"60\""),
        "sessionExpiry: must be an integer",
    )
    .await;
    assert_400(
        &gw,
        &body_with(", \"patExpiry\": \"3600\""),
        "patExpiry: must be an integer",
    )
    .await;
    assert_400(
        &gw,
        &body_with(", \"patExpiry\": true"),
        "patExpiry: must be an integer",
    )
    .await;
    assert_400(
        &gw,
        &body_with(", \"sessionExpiry\": [60]"),
        "sessionExpiry: must be an integer",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rejects_negative_expiry() {
    let (gw, _up) = gateway().await;
    assert_400(
        &gw,
        &body_with(", \"sessionExpiry\": -5"),
        "sessionExpiry: must be between 1 and 43200",
    )
    .await;
    assert_400(
        &gw,
        &body_with(", \"patExpiry\": -1"),
        "patExpiry: must be between 1 and 86400",
    )
    .await;
    assert_400_names(&gw, &body_with(", \"patExpiry\": -18446744073709551616"), "patExpiry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rejects_zero_expiry() {
    let (gw, _up) = gateway().await;
    assert_400(
        &gw,
        &body_with(", \"sessionExpiry\": 0"),
        "sessionExpiry: must be between 1 and 43200",
    )
    .await;
    assert_400(
        &gw,
        &body_with(", \"patExpiry\": 0"),
        "patExpiry: must be between 1 and 86400",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rejects_too_large_expiry() {
    let (gw, _up) = gateway().await;
    assert_400(
        &gw,
        &body_with(", \"sessionExpiry\": 43201"),
        "sessionExpiry: must be between 1 and 43200",
    )
    .await;
    assert_400(
        &gw,
        &body_with(", \"patExpiry\": 86401"),
        "patExpiry: must be between 1 and 86400",
    )
    .await;
    // Past u64: still a 400 naming the field, not a crash.
    assert_400_names(&gw, &body_with(", \"patExpiry\": 18446744073709551616"), "patExpiry").await;
    // The maxima themselves are accepted.
    let before = unix_now();
    let r = post_json(
        gw.public_addr,
        MINT,
        Some(API_TOKEN),
        &body_with(", \"sessionExpiry\": 43200, \"patExpiry\": 86400"),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
    let expires = parse_rfc3339(r.json()["expiresAt"].as_str().unwrap()).unwrap();
    assert!((expires - (before + 86400.0)).abs() < 5.0, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_honours_configured_expiry_maxima() {
    let up = echo_upstream("app").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.pat = "max_pat_expiry_seconds = 300\nmax_session_expiry_minutes = 30\n\
                default_pat_expiry_seconds = 300\ndefault_session_expiry_minutes = 30\n"
        .into();
    let gw = opts.start().await;
    assert_400(
        &gw,
        &body_with(", \"patExpiry\": 301"),
        "patExpiry: must be between 1 and 300",
    )
    .await;
    assert_400(
        &gw,
        &body_with(", \"sessionExpiry\": 31"),
        "sessionExpiry: must be between 1 and 30",
    )
    .await;
    let r = post_json(
        gw.public_addr,
        MINT,
        Some(API_TOKEN),
        &body_with(", \"patExpiry\": 300, \"sessionExpiry\": 30"),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rejects_missing_email() {
    let (gw, _up) = gateway().await;
    assert_400(&gw, &format!("{{\"appId\": \"{APP_A}\"}}"), "email: required").await;
    assert_400(
        &gw,
        &format!("{{\"email\": 5, \"appId\": \"{APP_A}\"}}"),
        "email: must be a string",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rejects_missing_app_id() {
    let (gw, _up) = gateway().await;
    assert_400(&gw, "{\"email\": \"alice@example.com\"}", "appId: required").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rejects_non_uuid_app_id() {
    let (gw, _up) = gateway().await;
    for bad in [
        "nope",
        "8ba8bf0e6b8f4e07abb96fd2d816fabc0",
        "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabz",
        "../../etc/passwd",
        "",
    ] {
        let body = json!({"email": "alice@example.com", "appId": bad}).to_string();
        let r = post_json(gw.public_addr, MINT, Some(API_TOKEN), &body).await;
        let msg = assert_error_body(&r, 400, "Bad Request");
        assert!(msg.starts_with("appId:"), "appId {bad:?}: message {msg:?}");
    }
    assert_400(
        &gw,
        "{\"email\": \"alice@example.com\", \"appId\": \"nope\"}",
        "appId: must be a UUID",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rejects_unknown_field() {
    let (gw, _up) = gateway().await;
    assert_400(&gw, &body_with(", \"extra\": 1"), "extra: unknown field").await;
    // ToolJet's spelling variants are not silently ignored either.
    assert_400(
        &gw,
        &body_with(", \"session_expiry\": 5"),
        "session_expiry: unknown field",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rejects_malformed_json() {
    let (gw, _up) = gateway().await;
    for body in [
        "{\"email\": \"alice@example.com\", ",
        "not json",
        "",
        "{\"email\": \"alice@example.com\", \"appId\": \"x\"} trailing",
    ] {
        let r = post_json(gw.public_addr, MINT, Some(API_TOKEN), body).await;
        assert_error_body(&r, 400, "Bad Request");
    }
    assert_400(&gw, "[1]", "body: expected a JSON object").await;
    assert_400(&gw, "\"alice@example.com\"", "body: expected a JSON object").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_requires_json_content_type() {
    let (gw, _up) = gateway().await;
    let body = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    for ct in ["text/plain", "application/x-www-form-urlencoded", "application/jsonx"] {
        let req = hyper::Request::post(MINT)
            .header("authorization", format!("Basic {API_TOKEN}"))
            .header("content-type", ct);
        let r = H1::connect(gw.public_addr)
            .await
            .request(req.body(full(body.clone())).unwrap())
            .await;
        assert_error_body(&r, 415, "Unsupported Media Type");
    }
    let r = H1::connect(gw.public_addr)
        .await
        .request(
            hyper::Request::post(MINT)
                .header("authorization", format!("Basic {API_TOKEN}"))
                .header("content-type", "application/json; charset=utf-8")
                .body(full(body.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 201, "application/json with a charset: {r:?} {}", r.text());
}

/// RFC 9110 §8.3: a body without a Content-Type may be taken as
/// `application/octet-stream`, which is not the JSON SPEC §3 asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_without_content_type_is_415() {
    let (gw, _up) = gateway().await;
    let body = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    let req = hyper::Request::post(MINT)
        .header("authorization", format!("Basic {API_TOKEN}"))
        .body(full(body))
        .unwrap();
    let r = H1::connect(gw.public_addr).await.request(req).await;
    assert_error_body(&r, 415, "Unsupported Media Type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_defaults_absent_expiries() {
    let up = echo_upstream("app").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.pat = "default_pat_expiry_seconds = 120\ndefault_session_expiry_minutes = 5\n".into();
    let gw = opts.start().await;
    let before = unix_now();
    let r = mint(gw.public_addr, &json!({"email": "alice@example.com", "appId": APP_A})).await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
    let expires = parse_rfc3339(r.json()["expiresAt"].as_str().unwrap()).unwrap();
    assert!(
        (expires - (before + 120.0)).abs() < 5.0,
        "expiresAt {} is not now + default_pat_expiry_seconds (120 s)",
        r.json()["expiresAt"]
    );
    // Only one of them given: the other still defaults.
    let r = mint(
        gw.public_addr,
        &json!({"email": "alice@example.com", "appId": APP_A, "sessionExpiry": 10}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
    let expires = parse_rfc3339(r.json()["expiresAt"].as_str().unwrap()).unwrap();
    assert!((expires - (unix_now() + 120.0)).abs() < 5.0, "{}", r.text());
    // And the defaulted PAT works.
    let pat = r.json()["personalAccessToken"].as_str().unwrap().to_string();
    assert_eq!(exchange(gw.public_addr, APP_A, &pat).await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_body_over_limit_is_413() {
    let up = echo_upstream("app").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.api_extra = "max_body_bytes = 256".into();
    let gw = opts.start().await;
    // Valid JSON, padded with whitespace past the limit.
    let padded = format!(
        "{{\"email\": \"alice@example.com\",{} \"appId\": \"{APP_A}\"}}",
        " ".repeat(1000)
    );
    let r = post_json(gw.public_addr, MINT, Some(API_TOKEN), &padded).await;
    assert_eq!(r.status, 413, "{r:?} {}", r.text());
    assert_eq!(r.json()["statusCode"], 413, "{}", r.text());

    // The same without a Content-Length (chunked): cut off while reading.
    let (tx, body) = channel_body();
    let sender = tokio::spawn(async move {
        for _ in 0..64 {
            if tx.send(bytes::Bytes::from_static(&[b' '; 1024])).await.is_err() {
                return;
            }
        }
    });
    let req = hyper::Request::post(MINT)
        .header("authorization", format!("Basic {API_TOKEN}"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let r = H1::connect(gw.public_addr).await.request(req).await;
    assert_eq!(r.status, 413, "chunked: {r:?} {}", r.text());
    sender.abort();

    // Under the limit: fine.
    let small = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    assert!(small.len() < 256);
    let r = post_json(gw.public_addr, MINT, Some(API_TOKEN), &small).await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
}

/// A refusal that comes before the body is read (bad credentials, too
/// large) still reads the body first, so a client that is slow to send it
/// gets the answer on a connection that stays usable, not a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_api_request_body_is_read_before_answering() {
    let up = echo_upstream("app").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.api_extra = "max_body_bytes = 256".into();
    let gw = opts.start().await;
    let valid = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    let padding = " ".repeat(4096);
    let cases = [
        ("bad credentials", mint_head("not-the-token", 4096, ""), 401),
        ("declared too large", mint_head(API_TOKEN, 4096, ""), 413),
        (
            "chunked, too large",
            format!(
                "POST {MINT} HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic {API_TOKEN}\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            413,
        ),
    ];
    for (case, head, status) in cases {
        let mut conn = RawConn::connect(gw.public_addr).await;
        conn.send(head.as_bytes()).await.unwrap();
        // The body comes late, in pieces: the gateway must wait for it.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if head.contains("chunked") {
            for _ in 0..4 {
                conn.send(format!("400\r\n{}\r\n", &padding[..1024]).as_bytes())
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            conn.send(b"0\r\n\r\n").await.unwrap();
        } else {
            conn.send(padding.as_bytes()).await.unwrap();
        }
        let r = conn.read_response(false).await.unwrap();
        assert_eq!(r.status, status, "{case}: {}", r.head);
        // The same connection carries the next request.
        let next = format!("{}{valid}", mint_head(API_TOKEN, valid.len(), ""));
        conn.send(next.as_bytes()).await.unwrap();
        let r = conn.read_response(false).await.unwrap();
        assert_eq!(r.status, 201, "{case}: the connection was not kept: {}", r.head);
    }
}

/// Refusals that must not wait for a body: a client waiting on `Expect:
/// 100-continue` (no `100 Continue` invites a body already refused), and a
/// body declared far past what the gateway would read and drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_api_request_is_answered_at_once_when_no_body_should_be_read() {
    let (gw, _up) = gateway().await;
    let expect = "Expect: 100-continue\r\n";
    let cases = [
        ("expect, bad credentials", "not-the-token", 100, expect, 401),
        ("expect, too large", API_TOKEN, 100_000, expect, 413),
        (
            "declared 100 MB, bad credentials",
            "not-the-token",
            100_000_000,
            "",
            401,
        ),
    ];
    for (case, token, length, extra, want) in cases {
        let mut conn = RawConn::connect(gw.public_addr).await;
        conn.send(mint_head(token, length, extra).as_bytes()).await.unwrap();
        // Well under the 10 s the gateway would give a body it waited for.
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_head())
            .await
            .unwrap_or_else(|_| panic!("{case}: no answer without the body"))
            .unwrap();
        assert_eq!(r.status, want, "{case}: {}", r.head);
    }
}

/// A raw HTTP/1.1 mint request head.
fn mint_head(token: &str, length: usize, extra: &str) -> String {
    format!(
        "POST {MINT} HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_unknown_user_is_404() {
    let (gw, _up) = gateway().await;
    let r = mint(gw.public_addr, &json!({"email": "nobody@example.com", "appId": APP_A})).await;
    let msg = assert_error_body(&r, 404, "Not Found");
    assert!(msg.starts_with("email:"), "{msg:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_unknown_app_is_404() {
    let (gw, _up) = gateway().await;
    let r = mint(
        gw.public_addr,
        &json!({"email": "alice@example.com", "appId": UNKNOWN_APP}),
    )
    .await;
    let msg = assert_error_body(&r, 404, "Not Found");
    assert!(msg.starts_with("appId:"), "{msg:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_user_not_admitted_is_403() {
    let (gw, _up) = gateway().await;
    // eve: neither her address, her domain nor her group is on A's lists.
    let r = mint(gw.public_addr, &json!({"email": "eve@other.example", "appId": APP_A})).await;
    assert_error_body(&r, 403, "Forbidden");
    // C admits nobody the tests know; alice is known but not admitted.
    let r = mint(gw.public_addr, &json!({"email": "alice@example.com", "appId": APP_C})).await;
    assert_error_body(&r, 403, "Forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_allows_by_domain_pattern_and_group() {
    let (gw, _up) = gateway().await;
    for (email, why) in [
        ("alice@example.com", "exact address"),
        ("ALICE@Example.COM", "exact address, other case"),
        ("carol@partner.example", "*@partner.example"),
        ("Carol@PARTNER.example", "*@partner.example, other case"),
        ("dave@other.example", "group sales"),
    ] {
        let r = mint(gw.public_addr, &json!({"email": email, "appId": APP_A})).await;
        assert_eq!(r.status, 201, "{email} ({why}): {r:?} {}", r.text());
    }
    // `*` admits every known user, but still no unknown one.
    for email in ["eve@other.example", "carol@partner.example"] {
        let r = mint(gw.public_addr, &json!({"email": email, "appId": APP_B})).await;
        assert_eq!(r.status, 201, "{email} on B (*): {r:?} {}", r.text());
    }
    let r = mint(gw.public_addr, &json!({"email": "zed@partner.example", "appId": APP_A})).await;
    assert_error_body(&r, 404, "Not Found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rate_limited_per_token_with_retry_after() {
    let up = echo_upstream("app").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.rate_limit =
        "pat_create_per_minute = 2\npat_create_per_user_per_minute = 1000\nbad_pat_per_minute = 1000\n".into();
    let gw = opts.start().await;
    let addr = gw.public_addr;
    let mut statuses = Vec::new();
    let mut last = None;
    for email in ["alice@example.com", "carol@partner.example", "dave@other.example"] {
        let body = json!({"email": email, "appId": APP_A}).to_string();
        let r = post_json(addr, MINT, Some(API_TOKEN), &body).await;
        statuses.push(r.status.as_u16());
        last = Some(r);
    }
    assert_eq!(statuses, [201, 201, 429]);
    let r = last.unwrap();
    assert_error_body(&r, 429, "Too Many Requests");
    let secs = retry_after_secs(&r);
    assert!((1..=60).contains(&secs), "Retry-After {secs} for 2/minute");
    // The other token has its own quota.
    let body = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    let r = post_json(addr, MINT, Some(API_TOKEN_2), &body).await;
    assert_eq!(
        r.status, 201,
        "the second API token shares the first one's quota: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rate_limited_per_user() {
    let up = echo_upstream("app").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.rate_limit =
        "pat_create_per_minute = 1000\npat_create_per_user_per_minute = 2\nbad_pat_per_minute = 1000\n".into();
    let gw = opts.start().await;
    let addr = gw.public_addr;
    let mut statuses = Vec::new();
    let mut last = None;
    // One user however the address is spelled, and whichever token asks.
    for (email, token) in [
        ("alice@example.com", API_TOKEN),
        ("Alice@Example.com", API_TOKEN_2),
        ("ALICE@EXAMPLE.COM", API_TOKEN),
    ] {
        let body = json!({"email": email, "appId": APP_A}).to_string();
        let r = post_json(addr, MINT, Some(token), &body).await;
        statuses.push(r.status.as_u16());
        last = Some(r);
    }
    assert_eq!(statuses, [201, 201, 429]);
    let r = last.unwrap();
    assert_error_body(&r, 429, "Too Many Requests");
    let secs = retry_after_secs(&r);
    assert!((1..=60).contains(&secs), "Retry-After {secs} for 2/minute");
    // Another user is not affected.
    let body = json!({"email": "carol@partner.example", "appId": APP_A}).to_string();
    let r = post_json(addr, MINT, Some(API_TOKEN), &body).await;
    assert_eq!(r.status, 201, "{r:?} {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mint_returns_a_new_pat() {
    let (gw, _up) = gateway().await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = mint(gw.public_addr, &json!({"email": "alice@example.com", "appId": APP_A})).await;
        assert_eq!(r.status, 201, "{r:?} {}", r.text());
        let j = r.json();
        let pat = j["personalAccessToken"].as_str().unwrap().to_string();
        assert!(is_pat(&pat), "not pat_ + 64 lowercase hex: {pat:?}");
        assert!(j["redirectUrl"].as_str().unwrap().ends_with(&format!("={pat}")), "{j}");
        assert!(seen.insert(pat.clone()), "the same PAT was minted twice: {pat}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_only_accepts_post() {
    let (gw, up) = gateway().await;
    let r = get_with(
        gw.public_addr,
        MINT,
        &[("authorization", &format!("Basic {API_TOKEN}"))],
    )
    .await;
    assert_eq!(r.status, 405, "{r:?} {}", r.text());
    assert_eq!(up.requests(), 0, "the API path reached an upstream");
}
