//! Changing the gateway without dropping traffic, proven under load (SPEC §1,
//! issue 9): SIGHUP reloads and a SIGTERM drain while keep-alive HTTP/1.1
//! connections and an HTTP/2 connection with concurrent streams loop
//! requests over passthrough and an embed session as fast as they go.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// The whole of one test, however the gateway behaves.
const TEST_BOUND: Duration = Duration::from_secs(60);
/// HTTP/1.1 keep-alive connections of the load.
const H1_CONNECTIONS: usize = 3;
/// Concurrent stream loops on the load's one HTTP/2 connection.
const H2_STREAMS: usize = 4;

/// `frame_ancestors` of app A: a third origin in odd variants.
fn ancestors(variant: usize) -> Vec<&'static str> {
    let mut a = FRAME_ANCESTORS_A.to_vec();
    if variant % 2 == 1 {
        a.push("https://portal3.example.com");
    }
    a
}

/// The CSP an embed response of app A carries under `variant`.
fn csp_of(variant: usize) -> String {
    format!("frame-ancestors {}", ancestors(variant).join(" "))
}

/// A TLS gateway with `[passthrough]` to `passthrough` and app A (alice,
/// by address) on `app_a`; app B (everyone) on `app_b` when given. Each
/// `variant` changes a `[rate_limit]` value, `upstream_timeout_seconds` and
/// app A's `frame_ancestors`.
fn gateway_config(passthrough: &str, app_a: &str, app_b: Option<&str>, variant: usize, server_extra: &str) -> String {
    let fa = ancestors(variant)
        .iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let app_b = app_b
        .map(|up| {
            format!(
                "[[apps]]\n\
                 id = \"{APP_B}\"\n\
                 upstream = \"{up}\"\n\
                 allow_users = [\"*\"]\n\
                 frame_ancestors = []\n"
            )
        })
        .unwrap_or_default();
    format!(
        "[server]\n\
         listen = \"127.0.0.1:0\"\n\
         public_url = \"{PUBLIC_URL}\"\n\
         admin_listen = \"127.0.0.1:0\"\n\
         upstream_timeout_seconds = {timeout}\n\
         {server_extra}\n\n\
         {tls}\n\
         [api]\n\
         token_sha256 = [\"{token}\"]\n\n\
         [rate_limit]\n\
         pat_create_per_minute = {rate}\n\
         pat_create_per_user_per_minute = 10000\n\
         bad_pat_per_minute = 10000\n\n\
         {users}\n\n\
         [[apps]]\n\
         id = \"{APP_A}\"\n\
         upstream = \"{app_a}\"\n\
         allow_users = [\"alice@example.com\"]\n\
         frame_ancestors = [{fa}]\n\n\
         {app_b}\n\
         [passthrough]\n\
         upstream = \"{passthrough}\"\n",
        timeout = 30 + variant,
        tls = tls_section(),
        token = sha256_hex(API_TOKEN),
        rate = 10_000 + variant,
        users = DEFAULT_USERS,
    )
}

fn reloads_logged(gw: &Gateway) -> usize {
    gw.stderr().matches("configuration reloaded").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_no_request() {
    tokio::time::timeout(TEST_BOUND, reloads_under_load())
        .await
        .expect("the test did not finish within its bound");
}

async fn reloads_under_load() {
    const RELOADS: usize = 10;
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let dir = new_dir();
    let tls = TestTls::generate(dir.path());
    // App B comes and goes with the variants.
    let app_b = |v: usize| (v / 2 % 2 == 1).then(|| b.url());
    let gw = Gateway::start(dir, &gateway_config(&a.url(), &a.url(), app_b(0).as_deref(), 0, "")).await;
    let addr = gw.public_addr;
    let session = open_session_tls(&tls, addr, "alice@example.com", APP_A).await;
    let embed = |csp: Vec<String>| Route::Embed {
        app: APP_A,
        session: session.clone(),
        user: "alice@example.com",
        upstream: "a",
        csp,
    };
    // Either variant's CSP: a request that straddles a reload may get either.
    let routes = vec![Route::Passthrough { upstream: "a" }, embed(vec![csp_of(0), csp_of(1)])];
    let load = Load::start(&tls, addr, routes, H1_CONNECTIONS, H2_STREAMS).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(load.ok() > 0, "the load got no answer before the first reload");

    let mut ok_at_reload = vec![load.ok()];
    let t0 = Instant::now();
    for v in 1..=RELOADS {
        let before = reloads_logged(&gw);
        gw.write_config(&gateway_config(&a.url(), &a.url(), app_b(v).as_deref(), v, ""));
        gw.signal("HUP");
        assert!(
            eventually(T, || async { reloads_logged(&gw) > before }).await,
            "reload {v}: no \"configuration reloaded\" logged (refused?)"
        );
        assert_eq!(reloads_logged(&gw), before + 1, "reload {v}: logged more than once");
        // It took effect: a request that starts now gets the new CSP, and
        // app B is there exactly when the variant has it.
        let probe = embed(vec![csp_of(v)]);
        let r = fetch_h1_tls(&tls, addr, probe.request("/after-reload", None, "localhost"))
            .await
            .unwrap_or_else(|e| panic!("reload {v}: the check request failed: {e:?}"));
        probe
            .check("/after-reload", &r)
            .unwrap_or_else(|e| panic!("reload {v} did not take effect: {e}"));
        let req = hyper::Request::post("/api/ext/users/personal-access-token")
            .header("host", "localhost")
            .header("authorization", format!("Basic {API_TOKEN}"))
            .header("content-type", "application/json")
            .body(full(
                serde_json::json!({"email": "alice@example.com", "appId": APP_B}).to_string(),
            ))
            .unwrap();
        let minted = fetch_h1_tls(&tls, addr, req).await.expect("mint for app B").status;
        let want = if app_b(v).is_some() { 201 } else { 404 };
        assert_eq!(minted, want, "reload {v}: app B's presence is not the new config's");
        // Let the load run on the new config before the next change.
        tokio::time::sleep(Duration::from_millis(250)).await;
        ok_at_reload.push(load.ok());
    }
    let reload_time = t0.elapsed();
    let report = load.stop().await;

    println!(
        "{RELOADS} reloads in {reload_time:.2?}; load: {} requests answered ({} passthrough, {} embed), {} failed",
        report.ok(),
        report.ok_by_route("passthrough"),
        report.ok_by_route("embed"),
        report.failures().count()
    );
    println!("{}", report.summary());
    println!("answered so far at each reload: {ok_at_reload:?}");

    let failures: Vec<_> = report.failures().collect();
    assert!(
        failures.is_empty(),
        "{} requests failed across the reloads; first ones:\n{:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // The load really ran across every reload, on every lane.
    for (i, w) in ok_at_reload.windows(2).enumerate() {
        assert!(w[1] > w[0], "no request was answered around reload {}", i + 1);
    }
    for lane in &report.lanes {
        assert!(
            lane.ok.len() >= 20,
            "lane {} made only {} requests",
            lane.lane,
            lane.ok.len()
        );
    }
    assert!(report.ok() >= 500, "only {} requests were made", report.ok());
    assert!(
        !gw.stderr().contains("reload refused"),
        "a reload was refused:\n{}",
        gw.stderr()
    );
    assert_eq!(reloads_logged(&gw), RELOADS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_cuts_no_in_flight_request() {
    tokio::time::timeout(TEST_BOUND, sigterm_under_load())
        .await
        .expect("the test did not finish within its bound");
}

async fn sigterm_under_load() {
    const GRACE: Duration = Duration::from_secs(5);
    const SLOW_H1: usize = 2;
    const SLOW_H2: usize = 2;
    let a = echo_upstream("a").await;
    // App B's upstream gets only the slow requests, so its count says when
    // they are all in flight.
    let slow = echo_upstream("slow").await;
    let dir = new_dir();
    let tls = Arc::new(TestTls::generate(dir.path()));
    let mut gw = Gateway::start(
        dir,
        &gateway_config(
            &a.url(),
            &a.url(),
            Some(&slow.url()),
            0,
            &format!("shutdown_grace_seconds = {}", GRACE.as_secs()),
        ),
    )
    .await;
    let addr = gw.public_addr;
    let session_a = open_session_tls(&tls, addr, "alice@example.com", APP_A).await;
    let session_b = open_session_tls(&tls, addr, "alice@example.com", APP_B).await;
    let passthrough = Route::Passthrough { upstream: "a" };
    let routes = vec![
        passthrough.clone(),
        Route::Embed {
            app: APP_A,
            session: session_a,
            user: "alice@example.com",
            upstream: "a",
            csp: vec![csp_of(0)],
        },
    ];
    let slow_route = Route::Embed {
        app: APP_B,
        session: session_b,
        user: "alice@example.com",
        upstream: "slow",
        csp: vec!["frame-ancestors 'none'".into()],
    };

    let prober = Prober::start(tls.clone(), addr, passthrough, Duration::from_millis(30));
    let load = Load::start(&tls, addr, routes, H1_CONNECTIONS, H2_STREAMS).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Slow requests: on fresh HTTP/1.1 connections and as streams of the
    // load's HTTP/2 connection.
    let mut slow_requests = Vec::new();
    for _ in 0..SLOW_H1 {
        let (tls, req) = (tls.clone(), slow_route.request("/delay/1000", None, "localhost"));
        slow_requests.push(tokio::spawn(async move {
            let r = fetch_h1_tls(&tls, addr, req).await;
            (r, Instant::now())
        }));
    }
    for _ in 0..SLOW_H2 {
        let mut sender = load.h2_sender();
        let req = slow_route.request("/delay/1000", Some(&load.origin), "");
        slow_requests.push(tokio::spawn(async move {
            let r = send_h2(&mut sender, req, &mut None).await;
            (r, Instant::now())
        }));
    }
    assert!(
        eventually(T, || async { slow.requests() == SLOW_H1 + SLOW_H2 }).await,
        "the slow requests did not all reach their upstream ({} did)",
        slow.requests()
    );
    let ok_before = load.ok();

    let t_signal = Instant::now();
    gw.signal("TERM");
    let signal_took = t_signal.elapsed();

    let mut slow_done = Vec::new();
    for handle in slow_requests {
        let (r, ended) = tokio::time::timeout(T, handle)
            .await
            .expect("a slow request never ended")
            .unwrap();
        let r = r.unwrap_or_else(|e| panic!("a slow request in flight at SIGTERM was cut: {e:?}"));
        slow_route
            .check("/delay/1000", &r)
            .unwrap_or_else(|e| panic!("a slow request in flight at SIGTERM got a bad answer: {e}"));
        slow_done.push(ended);
    }
    let last_slow_done = *slow_done.iter().max().unwrap();

    let status = gw.wait_exit(GRACE + Duration::from_secs(3)).await;
    let exit_after = t_signal.elapsed();
    let status = status.expect("the gateway did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    assert!(
        exit_after < GRACE,
        "the gateway exited {exit_after:.2?} after SIGTERM, not within shutdown_grace ({GRACE:?})"
    );
    let log = gw.stderr();
    assert!(
        log.contains("drained") && !log.contains("grace period over"),
        "the drain did not end by itself:\n{log}"
    );

    let report = load.stop().await;
    let probes = prober.stop().await;

    // Every load request written before the signal got its good answer;
    // a request the server had begun to answer was never cut, whenever it
    // was sent. What fails is only what was not yet sent when the server
    // closed its connection.
    let mut cut = Vec::new();
    let mut not_sent = Vec::new();
    for f in report.failures() {
        if f.answered || f.sent.written_before(t_signal) {
            cut.push(f);
        } else {
            not_sent.push(f);
        }
    }
    let written_before = report.ok_sent().filter(|s| s.written_before(t_signal)).count();
    let in_flight = report.ok_sent().filter(|s| s.in_flight_at(t_signal)).count();
    let after = report
        .ok_sent()
        .filter(|s| s.written.is_some_and(|w| w >= t_signal))
        .count();
    println!(
        "load: {} requests answered ({} passthrough, {} embed; {ok_before} before the slow ones were all in flight), \
         {written_before} written before SIGTERM, {in_flight} of them in flight at it, {after} sent and answered \
         after it; {} not sent because the connection was closed first; {} cut",
        report.ok(),
        report.ok_by_route("passthrough"),
        report.ok_by_route("embed"),
        not_sent.len(),
        cut.len()
    );
    println!("{}", report.summary());
    for f in &not_sent {
        println!(
            "  not sent: {} {}: written {:?} s, ended {:.3} s from SIGTERM: {}",
            f.lane,
            f.sent.path,
            f.sent.written.map(|w| secs_from(t_signal, w)),
            secs_from(t_signal, f.sent.ended),
            f.error
        );
    }
    println!(
        "slow requests done {:?} after SIGTERM; exit {exit_after:.2?} after it (kill took {signal_took:.2?})",
        slow_done.iter().map(|t| *t - t_signal).collect::<Vec<_>>()
    );
    assert!(
        cut.is_empty(),
        "{} requests sent before SIGTERM (or already being answered) were cut; first ones:\n{:#?}\n\
         (times in seconds from the signal: {:?})",
        cut.len(),
        &cut[..cut.len().min(5)],
        cut.iter()
            .take(5)
            .map(|f| (
                f.sent.written.map(|w| secs_from(t_signal, w)),
                secs_from(t_signal, f.sent.ended)
            ))
            .collect::<Vec<_>>()
    );
    assert!(written_before >= 200, "only {written_before} requests before SIGTERM");
    for lane in &report.lanes {
        assert!(
            lane.ok.len() >= 20,
            "lane {} made only {} requests",
            lane.lane,
            lane.ok.len()
        );
    }

    // New connections: served up to the signal, refused only after it (and
    // already while the drain still waited for the slow requests).
    let served = |p: &&Probe| matches!(p.outcome, ProbeOutcome::Served);
    let before: Vec<&Probe> = probes.iter().filter(|p| p.ended < t_signal).collect();
    assert!(before.len() >= 5, "only {} probes before SIGTERM", before.len());
    let unserved_before: Vec<_> = before.iter().filter(|p| !served(p)).collect();
    assert!(
        unserved_before.is_empty(),
        "new connections were not served before SIGTERM: {unserved_before:#?}"
    );
    // A probe whose request was written before the signal is a request in flight too.
    let probe_cut: Vec<_> = probes
        .iter()
        .filter(|p| p.written.is_some_and(|w| w < t_signal) && !served(p))
        .collect();
    assert!(
        probe_cut.is_empty(),
        "a new connection's request, written before SIGTERM, was cut: {probe_cut:#?}"
    );
    let first_refusal = probes
        .iter()
        .find(|p| !served(p))
        .expect("no new connection was refused after SIGTERM");
    println!(
        "probes: {} served before SIGTERM (last ended {:.3} s before it); first refusal {:.3} s after it \
         ({:?}); {} probes in all",
        before.len(),
        -secs_from(t_signal, before.last().unwrap().ended),
        secs_from(t_signal, first_refusal.ended),
        first_refusal.outcome,
        probes.len()
    );
    assert!(
        first_refusal.ended > t_signal,
        "a new connection was refused {:.3} s before SIGTERM",
        -secs_from(t_signal, first_refusal.ended)
    );
    assert!(
        first_refusal.ended < last_slow_done,
        "new connections were still served while the drain waited for the slow requests \
         (first refusal {:.3} s after SIGTERM, slow requests done {:.3} s after it)",
        secs_from(t_signal, first_refusal.ended),
        secs_from(t_signal, last_slow_done)
    );
    let late_served: Vec<_> = probes
        .iter()
        .filter(|p| p.started > t_signal + Duration::from_millis(300) && served(p))
        .collect();
    assert!(
        late_served.is_empty(),
        "new connections were served well after SIGTERM: {late_served:#?}"
    );
}
