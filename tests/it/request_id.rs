//! `X-Request-Id` (issue 9): one id per request, returned to the client,
//! sent to the upstream and on the request's log lines; a trusted proxy's
//! well-formed id is kept, any other client's replaced.

use crate::common::*;

async fn gateway(trusted: &str) -> (Gateway, Upstream) {
    let up = echo_upstream("app").await;
    let gw = Gateway::start(
        new_dir(),
        &config(&format!("trusted_proxies = [{trusted}]"), &passthrough(&up.url())),
    )
    .await;
    (gw, up)
}

fn is_new_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_an_id_that_the_client_the_upstream_and_the_log_share() {
    let (gw, _up) = gateway("").await;
    let first = get(gw.public_addr, "/one").await;
    let second = get(gw.public_addr, "/two").await;
    let id = first.header("x-request-id").expect("an id returned").to_string();
    assert!(is_new_id(&id), "{id}");
    assert_eq!(
        first.echo().headers("x-request-id"),
        std::slice::from_ref(&id),
        "the upstream got the same id"
    );
    assert_ne!(second.header("x-request-id"), Some(id.as_str()), "ids differ");
    let found = eventually(T, || {
        let gw = &gw;
        let id = id.clone();
        async move {
            gw.stderr()
                .lines()
                .any(|l| l.contains(&format!("request_id={id}")) && l.contains("/one"))
        }
    })
    .await;
    assert!(found, "the request's log line carries its id:\n{}", gw.stderr());
    // Errors carry it too.
    let missing = get(gw.public_addr, "/api/ext/nothing").await;
    assert_eq!(missing.status, 404);
    assert!(is_new_id(missing.header("x-request-id").unwrap_or("")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_clients_id_is_replaced() {
    let (gw, _up) = gateway("").await;
    let r = get_with(gw.public_addr, "/", &[("x-request-id", "chosen-by-client")]).await;
    let id = r.header("x-request-id").unwrap_or("").to_string();
    assert!(is_new_id(&id), "{id}");
    assert_eq!(
        r.echo().headers("x-request-id"),
        [id],
        "the client's id never reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_well_formed_id_is_kept() {
    let (gw, _up) = gateway("\"127.0.0.1\"").await;
    let r = get_with(gw.public_addr, "/", &[("x-request-id", "lb-7f3a/42")]).await;
    assert_eq!(r.header("x-request-id"), Some("lb-7f3a/42"));
    assert_eq!(r.echo().headers("x-request-id"), ["lb-7f3a/42"]);
    let long = "x".repeat(129);
    for bad in ["two words", long.as_str()] {
        let r = get_with(gw.public_addr, "/", &[("x-request-id", bad)]).await;
        let id = r.header("x-request-id").unwrap_or("").to_string();
        assert!(is_new_id(&id), "{bad:?} replaced: {id}");
    }
}
