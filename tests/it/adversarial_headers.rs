//! Headers that impersonate: a client's `X-Embed-*` (in any case, repeated,
//! empty), `X-Forwarded-*`, `Forwarded` and `X-Real-IP` from a peer that is
//! not a trusted proxy, and `X-Request-Id` values meant to inject or
//! overflow. What reaches the upstream is only what the gateway vouches
//! for; the client's own claims never do.

use crate::common::*;

/// Sends `/x` with `fields` on the passthrough and, with alice's session,
/// on app A; returns the two echoes' headers named `name`.
async fn both_routes(gw: &Gateway, session: &str, fields: &[(&str, &str)], name: &str) -> (Vec<String>, Vec<String>) {
    let pass = get_with(gw.public_addr, "/x", fields).await;
    assert_eq!(pass.status, 200, "passthrough: {pass:?}");
    let cookie = format!("embedgate_session={session}");
    let mut with_cookie = fields.to_vec();
    with_cookie.push(("cookie", &cookie));
    let embed = get_with(gw.public_addr, &format!("/embed-apps/{APP_A}/x"), &with_cookie).await;
    assert_eq!(embed.status, 200, "embed: {embed:?}");
    (pass.echo().headers(name), embed.echo().headers(name))
}

async fn gateway() -> (Gateway, Upstream, Upstream) {
    let a = echo_upstream("a").await;
    let pass = echo_upstream("pass").await;
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.extra = passthrough(&pass.url());
    (opts.start().await, a, pass)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_identity_headers_never_reach_an_upstream() {
    let (gw, _a, _pass) = gateway().await;
    let session = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    // Name, fields sent, the header looked at, what the embed upstream gets.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "X-Embed-User",
            vec![("x-embed-user", "mallory@example.com")],
            "x-embed-user",
            Some("alice@example.com"),
        ),
        (
            "X-EMBED-USER in capitals",
            vec![("X-EMBED-USER", "mallory@example.com")],
            "x-embed-user",
            Some("alice@example.com"),
        ),
        (
            "X-Embed-User twice",
            vec![("x-embed-user", "m1@example.com"), ("x-embed-user", "m2@example.com")],
            "x-embed-user",
            Some("alice@example.com"),
        ),
        (
            "X-Embed-User empty",
            vec![("x-embed-user", "")],
            "x-embed-user",
            Some("alice@example.com"),
        ),
        (
            "X-Embed-Groups",
            vec![("x-embed-groups", "admins")],
            "x-embed-groups",
            Some("sales,eng"),
        ),
        ("X-Embed-App", vec![("x-embed-app", APP_B)], "x-embed-app", Some(APP_A)),
        (
            "X-Embed-Assertion",
            vec![("x-embed-assertion", "eyJhbGciOiJub25lIn0.e30.")],
            "x-embed-assertion",
            None,
        ),
        (
            "X-Embed-Attr-Role",
            vec![("x-embed-attr-role", "admin")],
            "x-embed-attr-role",
            None,
        ),
        (
            "an unknown X-Embed- field",
            vec![("x-embed-anything", "1")],
            "x-embed-anything",
            None,
        ),
        (
            "X-Forwarded-Prefix",
            vec![("x-forwarded-prefix", "/admin")],
            "x-forwarded-prefix",
            Some("/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc"),
        ),
    ];
    let mut failures = Vec::new();
    for (name, fields, header, vouched) in &cases {
        let (pass, embed) = both_routes(&gw, &session, fields, header).await;
        // The passthrough vouches for nobody; the prefix is the embed route's.
        if !pass.is_empty() {
            failures.push(format!("{name}: the passthrough upstream got {header}: {pass:?}"));
        }
        let ok = match vouched {
            Some(v) => embed == [v.to_string()],
            // The assertion is the gateway's own, never the client's.
            None if *header == "x-embed-assertion" => embed.len() == 1 && !embed[0].starts_with("eyJhbGciOiJub25l"),
            None => embed.is_empty(),
        };
        if !ok {
            failures.push(format!("{name}: the embed upstream got {header}: {embed:?}"));
        }
    }
    assert_all_passed(cases.len(), &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced_or_removed() {
    let (gw, _a, _pass) = gateway().await;
    let session = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    // Name, field sent, the header looked at, what both upstreams get.
    type Case<'a> = (&'a str, (&'a str, &'a str), &'a str, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "X-Forwarded-For",
            ("x-forwarded-for", "10.9.8.7"),
            "x-forwarded-for",
            vec!["127.0.0.1"],
        ),
        (
            "X-Forwarded-For, a chain",
            ("x-forwarded-for", "10.9.8.7, 10.1.1.1"),
            "x-forwarded-for",
            vec!["127.0.0.1"],
        ),
        (
            "X-Forwarded-Proto",
            ("x-forwarded-proto", "https"),
            "x-forwarded-proto",
            vec!["http"],
        ),
        (
            "X-Forwarded-Host",
            ("x-forwarded-host", "admin.internal"),
            "x-forwarded-host",
            vec!["127.0.0.1"],
        ),
        (
            "Forwarded",
            ("forwarded", "for=10.9.8.7;proto=https"),
            "forwarded",
            vec![],
        ),
        ("X-Real-IP", ("x-real-ip", "10.9.8.7"), "x-real-ip", vec![]),
    ];
    let mut failures = Vec::new();
    for (name, field, header, want) in &cases {
        let (pass, embed) = both_routes(&gw, &session, &[*field], header).await;
        for (route, got) in [("passthrough", pass), ("embed", embed)] {
            let got: Vec<String> = got
                .iter()
                .map(|v| v.split(':').next().unwrap_or("").to_string())
                .collect();
            if got != *want {
                failures.push(format!("{name} on the {route}: {header} = {got:?}, want {want:?}"));
            }
        }
    }
    assert_all_passed(2 * cases.len(), &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_from_an_untrusted_peer_are_never_used() {
    let (gw, _a, _pass) = gateway().await;
    let is_ours = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let long = "a".repeat(10_000);
    let values = [
        "chosen-by-client",
        "%0d%0aSet-Cookie:%20x=1",
        "a\tb",
        "<script>alert(1)</script>",
        long.as_str(),
        "",
    ];
    for value in values {
        let r = get_with(gw.public_addr, "/x", &[("x-request-id", value)]).await;
        assert_eq!(r.status, 200, "{value:?}: {r:?}");
        let returned = r.header("x-request-id").unwrap_or("").to_string();
        let upstream = r.echo().headers("x-request-id");
        assert!(is_ours(&returned), "{value:?}: answered with {returned:?}");
        assert_eq!(upstream, std::slice::from_ref(&returned), "{value:?}");
    }
    // Two of them: one new id, once.
    let r = get_with(gw.public_addr, "/x", &[("x-request-id", "a"), ("x-request-id", "b")]).await;
    assert_eq!(r.echo().headers("x-request-id").len(), 1);
    // A CR or LF cannot get in at all: the head is refused.
    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(b"GET /x HTTP/1.1\r\nHost: gw\r\nX-Request-Id: a\rSet-Cookie: x=1\r\n\r\n")
        .await
        .unwrap();
    let answer = c.read_response(false).await;
    assert!(answer.as_ref().map_or(true, |r| r.status == 400), "{answer:?}");
}
