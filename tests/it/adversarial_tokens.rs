//! Adversarial PATs and session cookies: every bad PAT gets the one
//! indistinguishable 401 (SPEC §4) and sets no cookie, every bad session
//! the 401 of SPEC §5, and no app upstream ever sees a request for either;
//! after each, the gateway serves a good session normally.

use std::time::Duration;

use crate::common::*;

const INVALID_PAT: &str = "Invalid or expired PAT";
const REVOKE: &str = "/api/ext/users/sessions/revoke";

/// The gateway and its two app upstreams (A's, B's).
async fn gateway() -> (Gateway, Upstream, Upstream) {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let gw = EmbedOpts::new(&a.url(), &b.url()).start().await;
    (gw, a, b)
}

fn check_invalid_pat(r: &Reply) -> Result<(), String> {
    if r.status != 401 {
        return Err(format!("want 401, got {} {}", r.status, r.text()));
    }
    if r.json()["message"] != INVALID_PAT {
        return Err(format!("message {}", r.text()));
    }
    if r.headers.get("set-cookie").is_some() {
        return Err("a refused exchange set a cookie".into());
    }
    Ok(())
}

async fn revoke(gw: &Gateway, email: &str) -> Reply {
    post_json(
        gw.public_addr,
        REVOKE,
        Some(API_TOKEN),
        &serde_json::json!({ "email": email }).to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pats_all_get_the_same_401_and_no_cookie() {
    let (gw, a, _b) = gateway().await;
    let addr = gw.public_addr;
    let good = mint_pat(addr, "alice@example.com", APP_A).await;
    let hex = good.trim_start_matches("pat_").to_string();
    let of_b = mint_pat(addr, "alice@example.com", APP_B).await;
    let used = mint_pat(addr, "alice@example.com", APP_A).await;
    assert_eq!(exchange(addr, APP_A, &used).await.status, 303);
    let short_lived = mint(
        addr,
        &serde_json::json!({"email": "alice@example.com", "appId": APP_A, "patExpiry": 1}),
    )
    .await;
    let short_lived = short_lived.json()["personalAccessToken"].as_str().unwrap().to_string();
    let revoked = mint_pat(addr, "carol@partner.example", APP_A).await;
    assert_eq!(revoke(&gw, "carol@partner.example").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let cases: Vec<(&str, String)> = vec![
        ("wrong prefix", format!("tok_{hex}")),
        ("no prefix", hex.clone()),
        ("prefix in capitals", format!("PAT_{hex}")),
        ("truncated by one", good[..good.len() - 1].to_string()),
        ("half of it", good[..good.len() / 2].to_string()),
        ("one character more", format!("{good}0")),
        ("hex in capitals", format!("pat_{}", hex.to_uppercase())),
        ("one digit changed", {
            let mut b = good.clone().into_bytes();
            let last = b.len() - 1;
            b[last] = if b[last] == b'0' { b'1' } else { b'0' };
            String::from_utf8(b).unwrap()
        }),
        ("another app's PAT", of_b.clone()),
        ("a replayed PAT", used.clone()),
        ("an expired PAT", short_lived.clone()),
        ("a revoked user's PAT", revoked.clone()),
        ("empty", String::new()),
        ("10 KB long", format!("pat_{}", "a".repeat(10_000))),
        ("an encoded NUL", "pat_%00".into()),
        ("percent-encoded garbage", "%ff%fe%fd".into()),
        ("all zeros", format!("pat_{}", "0".repeat(64))),
        ("the API token", API_TOKEN.into()),
    ];
    let mut failures = Vec::new();
    for (name, pat) in &cases {
        let r = exchange(addr, APP_A, pat).await;
        if let Err(why) = check_invalid_pat(&r) {
            failures.push(format!("{name}: {why}"));
        }
    }
    // The good PAT of app A exchanged at app B, and at app C.
    for app in [APP_B, APP_C] {
        let r = exchange(addr, app, &good).await;
        if let Err(why) = check_invalid_pat(&r) {
            failures.push(format!("app A's PAT at {app}: {why}"));
        }
    }
    assert_all_passed(cases.len() + 2, &failures);
    assert_eq!(a.requests(), 0, "a refused exchange reached the upstream");
    // Still good where it belongs, untouched by the tries above.
    assert_eq!(exchange(addr, APP_A, &good).await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pat_parameters_are_a_bad_pat_whichever_is_good() {
    let (gw, a, _b) = gateway().await;
    let addr = gw.public_addr;
    let good = mint_pat(addr, "alice@example.com", APP_A).await;
    for query in [
        format!("personal-access-token=pat_bogus&personal-access-token={good}"),
        format!("personal-access-token={good}&personal-access-token=pat_bogus"),
        format!("personal-access-token={good}&Personal-Access-Token={good}"),
    ] {
        let r = exchange_query(addr, APP_A, &query).await;
        if let Err(why) = check_invalid_pat(&r) {
            panic!("{query}: {why}");
        }
    }
    assert_eq!(a.requests(), 0);
    // Not spent by the refused tries.
    assert_eq!(exchange(addr, APP_A, &good).await.status, 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_cookies_get_401_and_never_reach_the_upstream() {
    let (gw, a, b) = gateway().await;
    let addr = gw.public_addr;
    let alice_a = open_session(addr, "alice@example.com", APP_A).await;
    let alice_b = open_session(addr, "alice@example.com", APP_B).await;
    let carol = open_session(addr, "carol@partner.example", APP_A).await;
    assert_eq!(revoke(&gw, "carol@partner.example").await.status, 200);

    let cookie = |v: &str| format!("embedgate_session={v}");
    let cases: Vec<(&str, String, String)> = vec![
        ("another app's session", APP_A.into(), cookie(&alice_b)),
        ("app A's session on app B", APP_B.into(), cookie(&alice_a)),
        ("a revoked session", APP_A.into(), cookie(&carol)),
        ("empty value", APP_A.into(), cookie("")),
        ("quoted value", APP_A.into(), format!("embedgate_session=\"{alice_a}\"")),
        ("value in capitals", APP_A.into(), cookie(&alice_a.to_uppercase())),
        ("truncated value", APP_A.into(), cookie(&alice_a[..alice_a.len() - 1])),
        (
            "value with one more character",
            APP_A.into(),
            cookie(&format!("{alice_a}0")),
        ),
        ("8 KB value", APP_A.into(), cookie(&"a".repeat(8192))),
        ("name in capitals", APP_A.into(), format!("EMBEDGATE_SESSION={alice_a}")),
        (
            "name with a prefix",
            APP_A.into(),
            format!("x-embedgate_session={alice_a}"),
        ),
        (
            "the session under another name",
            APP_A.into(),
            format!("session={alice_a}"),
        ),
        ("no equals sign", APP_A.into(), format!("embedgate_session{alice_a}")),
        (
            "a PAT as the session",
            APP_A.into(),
            cookie(&mint_pat(addr, "alice@example.com", APP_A).await),
        ),
        (
            "300 bad session cookies",
            APP_A.into(),
            (0..300)
                .map(|i| cookie(&format!("{i:064x}")))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    ];
    let mut failures = Vec::new();
    for (name, app, cookie_field) in &cases {
        let r = get_with(addr, &format!("/embed-apps/{app}/x"), &[("cookie", cookie_field)]).await;
        if r.status != 401 {
            failures.push(format!("{name}: want 401, got {} {}", r.status, r.text()));
        }
    }
    // The session in another place than the cookie.
    for (name, field, value) in [
        ("as a bearer token", "authorization", format!("Bearer {alice_a}")),
        ("in a header of its own", "x-embedgate-session", alice_a.clone()),
    ] {
        let r = get_with(addr, &format!("/embed-apps/{APP_A}/x"), &[(field, value.as_str())]).await;
        if r.status != 401 {
            failures.push(format!("{name}: want 401, got {}", r.status));
        }
    }
    assert_all_passed(cases.len() + 2, &failures);
    assert_eq!(
        (a.requests(), b.requests()),
        (0, 0),
        "a refused session reached an upstream"
    );
    // The good ones still work, each where it belongs.
    assert_eq!(embed_get(addr, APP_A, "/x", &alice_a).await.status, 200);
    assert_eq!(embed_get(addr, APP_B, "/x", &alice_b).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_session_among_many_cookies_is_found_and_only_it_is_removed() {
    let (gw, _a, _b) = gateway().await;
    let addr = gw.public_addr;
    let alice = open_session(addr, "alice@example.com", APP_A).await;
    let mut jar: Vec<String> = (0..200).map(|i| format!("c{i}=v{i}")).collect();
    jar.insert(100, format!("embedgate_session={}", "f".repeat(64)));
    jar.push(format!("embedgate_session={alice}"));
    let r = get_with(addr, &format!("/embed-apps/{APP_A}/x"), &[("cookie", &jar.join("; "))]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.echo();
    assert_eq!(echo.headers("x-embed-user"), ["alice@example.com"]);
    let forwarded = echo.headers("cookie").join("; ");
    assert!(!forwarded.contains("embedgate_session"), "{forwarded}");
    assert_eq!(forwarded.matches("=v").count(), 200, "every other cookie passes");
}

/// Unknown session ids sent at speed from one address are limited like bad
/// PATs (`rate_limit.bad_pat_per_minute`): 429 with `Retry-After`, while a
/// good session from that address is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_session_ids_at_speed_is_rate_limited_per_address() {
    let a = echo_upstream("a").await;
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.rate_limit = "bad_pat_per_minute = 5\n".into();
    let gw = opts.start().await;
    let addr = gw.public_addr;
    let alice = open_session(addr, "alice@example.com", APP_A).await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let r = embed_get(addr, APP_A, "/x", &format!("{i:064x}")).await;
        statuses.push(r.status.as_u16());
        if r.status == 429 {
            assert!(retry_after_secs(&r) >= 1, "{r:?}");
        }
    }
    assert!(statuses[..5].iter().all(|&s| s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|&s| s == 429), "{statuses:?}");
    assert_eq!(
        embed_get(addr, APP_A, "/x", &alice).await.status,
        200,
        "a good session is never limited"
    );
    assert_eq!(a.requests(), 1);
}

/// A revoke racing many concurrent exchanges of that user's PATs leaves no
/// live session: each exchange either fails or its session is ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_racing_exchanges_leaves_no_live_session() {
    let (gw, a, _b) = gateway().await;
    let addr = gw.public_addr;
    for round in 0..3 {
        let mut pats = Vec::new();
        for _ in 0..40 {
            pats.push(mint_pat(addr, "alice@example.com", APP_A).await);
        }
        let exchanges: Vec<_> = pats
            .into_iter()
            .map(|pat| tokio::spawn(async move { exchange(addr, APP_A, &pat).await }))
            .collect();
        tokio::time::sleep(Duration::from_millis(5 * round)).await;
        let revoked = revoke(&gw, "alice@example.com").await;
        assert_eq!(revoked.status, 200, "{revoked:?}");
        let mut sessions = Vec::new();
        for e in exchanges {
            let r = e.await.unwrap();
            match r.status.as_u16() {
                303 => sessions.push(set_cookie_value(&r, "embedgate_session").unwrap()),
                401 => {}
                other => panic!("exchange answered {other}"),
            }
        }
        for s in &sessions {
            let r = embed_get(addr, APP_A, "/x", s).await;
            assert_eq!(
                r.status, 401,
                "round {round}: a session made in the race outlived the revoke"
            );
        }
    }
    assert_eq!(a.requests(), 0);
}
