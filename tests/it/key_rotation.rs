//! Rotating the assertion signing key (issue 7): `[assertion] next_keys`
//! and `previous_keys` are published in the JWKS beside the signing key, so
//! an upstream that caches the JWKS never meets a `kid` it has not seen.
//! Walked through with SIGHUP reloads, as an operator would.
//!
//! The keys are made with ring and written as PKCS#8 PEM, as openssl
//! `genpkey` writes them; they are told apart in the JWKS by their public
//! key material, not by how the gateway derives a `kid`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// An `[assertion]` section naming the key files (relative to the config).
fn assertion_section(key: &AssertionKey, previous: &[&AssertionKey], next: &[&AssertionKey]) -> String {
    let list = |keys: &[&AssertionKey]| {
        keys.iter()
            .map(|k| format!("\"{}\"", k.file_name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!("[assertion]\nkey = \"{}\"\n", key.file_name);
    if !previous.is_empty() {
        s.push_str(&format!("previous_keys = [{}]\n", list(previous)));
    }
    if !next.is_empty() {
        s.push_str(&format!("next_keys = [{}]\n", list(next)));
    }
    s
}

fn config(up: &Upstream, assertion: &str) -> String {
    let mut o = EmbedOpts::new(&up.url(), &up.url());
    o.extra = assertion.to_string();
    o.config()
}

/// Whether `jwks` publishes exactly `want`, in that order.
fn publishes(jwks: &Value, want: &[&AssertionKey]) -> bool {
    let keys = jwks_keys(jwks);
    keys.len() == want.len() && keys.iter().zip(want).all(|(jwk, key)| key.is(jwk))
}

fn describe(keys: &[&AssertionKey]) -> Vec<String> {
    keys.iter().map(|k| format!("{} ({})", k.file_name, k.alg)).collect()
}

/// Waits up to [`T`] for the JWKS to publish exactly `want`, in order.
async fn jwks_becomes(addr: SocketAddr, want: &[&AssertionKey], when: &str) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let jwks = fetch_jwks(addr).await;
        if publishes(&jwks, want) {
            return jwks;
        }
        if Instant::now() > deadline {
            panic!(
                "{when}: the JWKS does not publish exactly {:?} in that order:\n{jwks}",
                describe(want)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rewrites the config with `assertion` and sends SIGHUP.
fn reload(gw: &Gateway, up: &Upstream, assertion: &str) {
    gw.write_config(&config(up, assertion));
    gw.signal("HUP");
}

/// The assertion the upstream gets on a request through `session`.
async fn assertion_via(addr: SocketAddr, session: &str) -> String {
    let e = embed_get(addr, APP_A, "/who", session).await.echo();
    let mut values = e.headers("x-embed-assertion");
    assert_eq!(values.len(), 1, "X-Embed-Assertion: {values:?}");
    values.pop().unwrap()
}

/// Verifies `jwt` against `jwks` and checks who it is about.
fn assert_verifies(jwks: &Value, jwt: &str, what: &str) {
    let claims = verify_jwt(jwks, jwt).unwrap_or_else(|why| panic!("{what}: {why}"));
    assert_eq!(claims["sub"], "alice@example.com", "{what}: {claims}");
    assert_eq!(claims["aud"], APP_A, "{what}: {claims}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertion_key_rotates_through_next_and_previous_keys() {
    let up = echo_upstream("a").await;
    let dir = new_dir();
    let a = AssertionKey::ed25519(dir.path(), "a.pem");
    let b = AssertionKey::p256(dir.path(), "b.pem");

    // 1. Key A only.
    let gw = Gateway::start(dir, &config(&up, &assertion_section(&a, &[], &[]))).await;
    let addr = gw.public_addr;
    let jwks1 = jwks_becomes(addr, &[&a], "key A only").await;
    let kid_a = a.kid_in(&jwks1).unwrap();
    let s = open_session(addr, "alice@example.com", APP_A).await;
    let jwt = assertion_via(addr, &s).await;
    assert_eq!(jwt_kid(&jwt), kid_a);
    assert_eq!(jwt_header(&jwt)["alg"], "EdDSA");
    assert_verifies(&jwks1, &jwt, "step 1");

    // 2. Key A signs; B is announced as next.
    reload(&gw, &up, &assertion_section(&a, &[], &[&b]));
    let jwks2 = jwks_becomes(addr, &[&a, &b], "key A, next_keys [B]").await;
    let kid_b = b.kid_in(&jwks2).unwrap();
    assert_ne!(kid_a, kid_b);
    assert!(
        !jwks_kids(&jwks1).contains(&kid_b),
        "B's kid {kid_b} was published before it was announced: {jwks1}"
    );
    assert_eq!(a.kid_in(&jwks2).as_deref(), Some(kid_a.as_str()), "A's kid changed");
    // Still signed by A, for the old session and a new one.
    let s2 = open_session(addr, "alice@example.com", APP_A).await;
    let before_switch = assertion_via(addr, &s2).await;
    for (what, jwt) in [
        ("old session", assertion_via(addr, &s).await),
        ("new session", before_switch.clone()),
    ] {
        assert_eq!(jwt_kid(&jwt), kid_a, "step 2, {what}: not signed by A");
        assert_verifies(&jwks2, &jwt, &format!("step 2, {what}"));
    }

    // 3. B signs; A stays published as previous.
    reload(&gw, &up, &assertion_section(&b, &[&a], &[]));
    let jwks3 = jwks_becomes(addr, &[&b, &a], "key B, previous_keys [A]").await;
    assert_eq!(b.kid_in(&jwks3).as_deref(), Some(kid_b.as_str()), "B's kid changed");
    assert_eq!(a.kid_in(&jwks3).as_deref(), Some(kid_a.as_str()), "A's kid changed");
    // What A signed before the switch still verifies after it.
    assert_verifies(
        &jwks3,
        &before_switch,
        "an assertion signed by A before the switch, against the JWKS after it",
    );
    let s3 = open_session(addr, "alice@example.com", APP_A).await;
    for (what, jwt) in [
        ("a session of key A's time", assertion_via(addr, &s).await),
        ("a session of step 2", assertion_via(addr, &s2).await),
        ("a new session", assertion_via(addr, &s3).await),
    ] {
        assert_eq!(jwt_kid(&jwt), kid_b, "step 3, {what}: not signed by B");
        assert_eq!(jwt_header(&jwt)["alg"], "ES256", "step 3, {what}");
        assert_verifies(&jwks3, &jwt, &format!("step 3, {what}"));
    }

    // 4. Key B only: A is gone.
    reload(&gw, &up, &assertion_section(&b, &[], &[]));
    let jwks4 = jwks_becomes(addr, &[&b], "key B only").await;
    assert!(
        !jwks_kids(&jwks4).contains(&kid_a),
        "A's kid is still published: {jwks4}"
    );
    assert!(
        verify_jwt(&jwks4, &before_switch).is_err(),
        "an assertion of the retired key A still verifies"
    );
    let jwt = assertion_via(addr, &s3).await;
    assert_eq!(jwt_kid(&jwt), kid_b);
    assert_verifies(&jwks4, &jwt, "step 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_lists_the_signing_key_first_and_each_key_once() {
    let up = echo_upstream("a").await;
    let dir = new_dir();
    let a = AssertionKey::ed25519(dir.path(), "a.pem");
    let b = AssertionKey::ed25519(dir.path(), "b.pem");
    let c = AssertionKey::p256(dir.path(), "c.pem");
    // A twice more, B in both lists, C once.
    let section = assertion_section(&a, &[&b, &a], &[&c, &b, &a]);
    let gw = Gateway::start(dir, &config(&up, &section)).await;
    let jwks = fetch_jwks(gw.public_addr).await;
    let keys = jwks_keys(&jwks);
    assert!(a.is(&keys[0]), "the signing key is not first: {jwks}");
    for (name, key) in [("a", &a), ("b", &b), ("c", &c)] {
        let n = keys.iter().filter(|k| key.is(k)).count();
        assert_eq!(n, 1, "key {name} is published {n} times: {jwks}");
    }
    assert_eq!(keys.len(), 3, "{jwks}");
    let mut kids = jwks_kids(&jwks);
    kids.sort();
    kids.dedup();
    assert_eq!(kids.len(), 3, "two keys share a kid: {jwks}");
    // Only the signing key signs.
    let s = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let jwt = assertion_via(gw.public_addr, &s).await;
    assert_eq!(Some(jwt_kid(&jwt)), a.kid_in(&jwks));
    assert_verifies(&jwks, &jwt, "signed by a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reload_naming_a_missing_key_keeps_the_old_keys() {
    let up = echo_upstream("a").await;
    let dir = new_dir();
    let a = AssertionKey::ed25519(dir.path(), "a.pem");
    let gw = Gateway::start(dir, &config(&up, &assertion_section(&a, &[], &[]))).await;
    let addr = gw.public_addr;
    jwks_becomes(addr, &[&a], "key A only").await;

    let mut missing = a.clone();
    missing.file_name = "no-such-next-key.pem".into();
    reload(&gw, &up, &assertion_section(&a, &[], &[&missing]));
    assert!(
        eventually(T, || async { gw.stderr().contains("no-such-next-key.pem") }).await,
        "no error naming no-such-next-key.pem was logged after the reload:\n{}",
        gw.stderr()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jwks = jwks_becomes(addr, &[&a], "after a refused reload").await;
    let s = open_session(addr, "alice@example.com", APP_A).await;
    let jwt = assertion_via(addr, &s).await;
    assert_eq!(Some(jwt_kid(&jwt)), a.kid_in(&jwks));
    assert_verifies(&jwks, &jwt, "after a refused reload");
}
