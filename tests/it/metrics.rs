//! `/metrics` on the admin listener (issue 9): scraped before and after
//! each event, exactly the right series move by exactly the right amount;
//! and nothing secret and no email is ever in it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::common::*;

/// Every sample of a scrape: series (name and labels, as written) → value.
async fn scrape(admin: SocketAddr) -> BTreeMap<String, f64> {
    let r = get(admin, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
    assert!(
        text.trim_end().ends_with("# EOF"),
        "an OpenMetrics exposition ends with # EOF"
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The series whose value differs between two scrapes, and by how much.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(series, value)| {
            let delta = value - before.get(series).copied().unwrap_or(0.0);
            (delta != 0.0).then(|| (series.clone(), delta))
        })
        .collect()
}

/// The counters (not histograms or gauges) that moved.
fn counters_moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    moved(before, after)
        .into_iter()
        .filter(|(series, _)| series.contains("_total"))
        .collect()
}

fn requests(route: &str, app: &str, class: &str) -> String {
    format!("embedgate_requests_total{{route=\"{route}\",app=\"{app}\",status_class=\"{class}\"}}")
}

fn expect(pairs: &[(String, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_moves_exactly_its_counters() {
    let up = echo_upstream("app").await;
    // App B's upstream refuses connections: its requests are 502s.
    let mut opts = EmbedOpts::new(&up.url(), "http://127.0.0.1:1");
    opts.rate_limit =
        "pat_create_per_minute = 10000\npat_create_per_user_per_minute = 10000\nbad_pat_per_minute = 1\n".into();
    let gw = opts.start().await;
    let (addr, admin) = (gw.public_addr, gw.admin());

    // A mint.
    let before = scrape(admin).await;
    let pat = mint_pat(addr, "alice@example.com", APP_A).await;
    let after = scrape(admin).await;
    assert_eq!(
        counters_moved(&before, &after),
        expect(&[
            (requests("api", "", "2xx"), 1.0),
            ("embedgate_pats_minted_total{token=\"token_sha256[0]\"}".into(), 1.0),
        ])
    );

    // An exchange.
    let before = after;
    let r = exchange(addr, APP_A, &pat).await;
    assert_eq!(r.status, 303);
    let session = set_cookie_value(&r, "embedgate_session").expect("a session");
    let after = scrape(admin).await;
    assert_eq!(
        counters_moved(&before, &after),
        expect(&[
            (requests("exchange", APP_A, "3xx"), 1.0),
            ("embedgate_exchanges_total{outcome=\"ok\"}".into(), 1.0),
        ])
    );

    // A request through the session: a 2xx of the app, and the upstream's
    // response-head latency.
    let before = after;
    assert_eq!(embed_get(addr, APP_A, "/", &session).await.status, 200);
    let after = scrape(admin).await;
    assert_eq!(
        counters_moved(&before, &after),
        expect(&[(requests("embed", APP_A, "2xx"), 1.0)])
    );
    let moved_all = moved(&before, &after);
    assert_eq!(
        moved_all.get("embedgate_upstream_response_head_seconds_count"),
        Some(&1.0)
    );
    assert_eq!(
        moved_all.get("embedgate_request_duration_seconds_count{route=\"embed\"}"),
        Some(&1.0)
    );

    // A refused PAT (the same one again: used), then one over the limit.
    let before = after;
    assert_eq!(exchange(addr, APP_A, &pat).await.status, 401);
    let after = scrape(admin).await;
    assert_eq!(
        counters_moved(&before, &after),
        expect(&[
            (requests("exchange", APP_A, "4xx"), 1.0),
            ("embedgate_exchanges_total{outcome=\"invalid\"}".into(), 1.0),
        ])
    );
    let before = after;
    assert_eq!(exchange(addr, APP_A, &pat).await.status, 429);
    let after = scrape(admin).await;
    assert_eq!(
        counters_moved(&before, &after),
        expect(&[
            (requests("exchange", APP_A, "4xx"), 1.0),
            ("embedgate_exchanges_total{outcome=\"rate_limited\"}".into(), 1.0),
            ("embedgate_rate_limited_total{limiter=\"bad_pat\"}".into(), 1.0),
        ])
    );

    // A 502: the upstream refuses the connection.
    let b_session = open_session(addr, "alice@example.com", APP_B).await;
    let before = scrape(admin).await;
    assert_eq!(embed_get(addr, APP_B, "/", &b_session).await.status, 502);
    let after = scrape(admin).await;
    assert_eq!(
        counters_moved(&before, &after),
        expect(&[
            (requests("embed", APP_B, "5xx"), 1.0),
            ("embedgate_upstream_errors_total{kind=\"refused\"}".into(), 1.0),
        ])
    );

    // Passthrough is not configured here: another path is "other", 404.
    let before = after;
    assert_eq!(get(addr, "/nothing-here").await.status, 404);
    let after = scrape(admin).await;
    assert_eq!(
        counters_moved(&before, &after),
        expect(&[(requests("other", "", "4xx"), 1.0)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_never_show_a_secret_or_an_email() {
    let up = echo_upstream("app").await;
    let gw = EmbedOpts::new(&up.url(), &up.url()).start().await;
    let (addr, admin) = (gw.public_addr, gw.admin());
    let pat = mint_pat(addr, "alice@example.com", APP_A).await;
    let r = exchange(addr, APP_A, &pat).await;
    let session = set_cookie_value(&r, "embedgate_session").expect("a session");
    assert_eq!(embed_get(addr, APP_A, "/", &session).await.status, 200);
    let revoke = post_json(
        addr,
        "/api/ext/users/sessions/revoke",
        Some(API_TOKEN),
        "{\"email\": \"alice@example.com\"}",
    )
    .await;
    assert_eq!(revoke.status, 200);
    let text = get(admin, "/metrics").await.text();
    assert!(text.contains("embedgate_pats_minted_total"), "{text}");
    for secret in [
        pat.as_str(),
        &pat[4..],
        session.as_str(),
        API_TOKEN,
        &sha256_hex(API_TOKEN),
        "alice@example.com",
        "@",
    ] {
        assert!(!text.contains(secret), "{secret} in /metrics:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_on_the_admin_listener_only() {
    let up = echo_upstream("app").await;
    let gw = EmbedOpts::new(&up.url(), &up.url()).start().await;
    assert_eq!(get(gw.admin(), "/metrics").await.status, 200);
    // The public port has no /metrics (no passthrough here: 404).
    assert_eq!(get(gw.public_addr, "/metrics").await.status, 404);
}

/// With the in-process store the live gauges are counted at each scrape,
/// not at the 30 s sweep: a mint, an exchange and a revocation show in the
/// very next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_and_pats_are_counted_at_each_scrape() {
    let up = echo_upstream("app").await;
    let gw = EmbedOpts::new(&up.url(), &up.url()).start().await;
    let (addr, admin) = (gw.public_addr, gw.admin());
    let live = |m: &BTreeMap<String, f64>| {
        (
            m.get("embedgate_sessions_live").copied(),
            m.get("embedgate_pats_live").copied(),
        )
    };
    assert_eq!(live(&scrape(admin).await), (Some(0.0), Some(0.0)));
    let first = mint_pat(addr, "alice@example.com", APP_A).await;
    let _second = mint_pat(addr, "alice@example.com", APP_B).await;
    assert_eq!(live(&scrape(admin).await), (Some(0.0), Some(2.0)), "two PATs minted");
    assert_eq!(exchange(addr, APP_A, &first).await.status, 303);
    assert_eq!(
        live(&scrape(admin).await),
        (Some(1.0), Some(1.0)),
        "one PAT exchanged for a session"
    );
    let revoke = post_json(
        addr,
        "/api/ext/users/sessions/revoke",
        Some(API_TOKEN),
        "{\"email\": \"alice@example.com\"}",
    )
    .await;
    assert_eq!(revoke.status, 200);
    assert_eq!(live(&scrape(admin).await), (Some(0.0), Some(0.0)), "all revoked");
}
