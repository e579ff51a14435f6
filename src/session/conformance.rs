//! What every [`Store`] must do, as tests that take the store as a trait
//! object. A store's own test module runs them all with
//! [`store_conformance_tests!`](store_conformance_tests), so the
//! in-process store and a shared one are held to the same rules.

use std::sync::Arc;
use std::time::Duration;

use super::{Counts, PatRecord, Revoked, SessionRecord, Store};
use crate::telemetry::audit::Refusal;
use crate::token::TokenHash;

/// An app id.
pub(crate) const APP: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";
/// Another app id.
pub(crate) const OTHER: &str = "00000000-0000-4000-8000-000000000000";
/// The user most records belong to.
pub(crate) const USER: &str = "u@example.com";
/// A fixed "now" (2023-11-14T22:13:20Z), in Unix milliseconds.
pub(crate) const T0: u64 = 1_700_000_000_000;

/// A PAT of `email` for `app`, live for `ttl` seconds after `now`.
pub(crate) fn pat(email: &str, app: &str, now: u64, ttl: u64) -> PatRecord {
    PatRecord {
        attributes: Default::default(),
        email: email.into(),
        groups: vec!["sales".into()],
        app_id: app.into(),
        session_idle_ms: 60_000,
        expires_ms: now + ttl * 1_000,
    }
}

/// A session of `email` on `app` started at `now`, idle timeout `idle`
/// seconds, capped `max` seconds after its start.
pub(crate) fn session(email: &str, app: &str, now: u64, idle: u64, max: u64) -> SessionRecord {
    let mut minted = pat(email, app, now, 60);
    minted.session_idle_ms = idle * 1_000;
    SessionRecord::start(&minted, vec!["sales".into()], Duration::from_secs(max), now)
}

/// Starts `session` under `hash` as an exchange does: from a PAT of the
/// same identity, just minted and taken (single use).
pub(crate) async fn open(store: &dyn Store, hash: TokenHash, session: SessionRecord) {
    let mut pat_hash = hash;
    pat_hash[30] ^= 0xA5;
    pat_hash[31] ^= 0x5A;
    let minted = PatRecord {
        email: session.subject.email.clone(),
        groups: session.subject.groups.clone(),
        attributes: session.subject.attributes.clone(),
        app_id: session.subject.app_id.clone(),
        session_idle_ms: session.idle_ms,
        expires_ms: session.created_ms + 60_000,
    };
    store.insert_pat(pat_hash, minted, session.created_ms).await.unwrap();
    let taken = store
        .take_pat(&pat_hash, &session.subject.app_id, true, session.created_ms)
        .await
        .unwrap();
    assert!(taken.is_ok(), "the PAT just minted is taken");
    assert!(
        store.start_session(hash, session, &pat_hash, true).await.unwrap(),
        "a session starts from a PAT just taken"
    );
}

fn s(secs: u64) -> u64 {
    T0 + secs * 1_000
}

/// Runs every conformance test against the store `$make` builds (a fresh
/// one per test). With `async`, `$make` is a future of
/// `Option<(Arc<dyn Store>, guard)>` — `None` skips the test (a server the
/// machine lacks), and the guard lives as long as the test.
macro_rules! store_conformance_tests {
    (async $make:expr) => {
        $crate::session::conformance::store_conformance_tests!(@list (async $make));
    };
    ($make:expr) => {
        $crate::session::conformance::store_conformance_tests!(@list ($make));
    };
    (@list $make:tt) => {
        $crate::session::conformance::store_conformance_tests!(@tests $make;
            pat_is_taken_once_and_only_for_its_app,
            reusable_pat_works_until_expiry,
            expired_pat_is_not_taken,
            pat_keeps_what_was_minted,
            session_keeps_vouched_groups_and_attributes,
            concurrent_takes_of_one_pat_yield_exactly_one,
            session_idle_expiry_slides_but_never_past_its_cap,
            idle_session_expires,
            session_is_refused_on_another_app_and_unknown_hashes_are_none,
            revoke_ends_a_users_sessions_and_pats_for_one_app_or_all,
            revoke_announces_the_ended_sessions,
            revoke_of_nobody_ends_nothing,
            count_counts_live_records_only,
            a_revocation_between_taking_a_pat_and_starting_its_session_wins,
            a_claimed_pat_is_not_taken_again,
            a_refused_pat_says_why,
        );
    };
    (@tests (async $make:expr); $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((store, _guard)) = $make.await else { return };
                $crate::session::conformance::$name(store).await;
            }
        )+
    };
    (@tests ($make:expr); $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: std::sync::Arc<dyn $crate::session::Store> = std::sync::Arc::new($make);
                $crate::session::conformance::$name(store).await;
            }
        )+
    };
}

pub(crate) use store_conformance_tests;

pub(crate) async fn pat_is_taken_once_and_only_for_its_app(store: Arc<dyn Store>) {
    store.insert_pat([1; 32], pat(USER, APP, T0, 60), T0).await.unwrap();
    assert_eq!(
        store.take_pat(&[1; 32], OTHER, true, T0).await.unwrap(),
        Err(Refusal::WrongApp)
    );
    assert!(
        store.take_pat(&[1; 32], APP, true, T0).await.unwrap().is_ok(),
        "a wrong-app try must not burn it"
    );
    assert_eq!(
        store.take_pat(&[1; 32], APP, true, T0).await.unwrap(),
        Err(Refusal::Used)
    );
}

pub(crate) async fn reusable_pat_works_until_expiry(store: Arc<dyn Store>) {
    store.insert_pat([2; 32], pat(USER, APP, T0, 10), T0).await.unwrap();
    assert!(store.take_pat(&[2; 32], APP, false, T0).await.unwrap().is_ok());
    assert!(store.take_pat(&[2; 32], APP, false, s(9)).await.unwrap().is_ok());
    assert!(store.take_pat(&[2; 32], APP, false, s(10)).await.unwrap().is_err());
}

pub(crate) async fn expired_pat_is_not_taken(store: Arc<dyn Store>) {
    store.insert_pat([3; 32], pat(USER, APP, T0, 10), T0).await.unwrap();
    assert_eq!(
        store.take_pat(&[3; 32], APP, true, s(10)).await.unwrap(),
        Err(Refusal::Expired)
    );
}

/// Why a PAT is refused, for the audit log: never minted, or used — also
/// once its session started, until it would have expired; a used PAT is no
/// live PAT.
pub(crate) async fn a_refused_pat_says_why(store: Arc<dyn Store>) {
    assert_eq!(
        store.take_pat(&[6; 32], APP, true, T0).await.unwrap(),
        Err(Refusal::Unknown)
    );
    open(&*store, [7; 32], session(USER, APP, T0, 60, 600)).await;
    // The PAT `open` exchanged.
    let mut used = [7; 32];
    used[30] ^= 0xA5;
    used[31] ^= 0x5A;
    assert_eq!(store.take_pat(&used, APP, true, T0).await.unwrap(), Err(Refusal::Used));
    assert_eq!(store.take_pat(&used, APP, false, T0).await.unwrap(), Err(Refusal::Used));
    assert_eq!(store.count(T0).await.unwrap(), Counts { sessions: 1, pats: 0 });
    // Nothing to revoke in a used PAT; the session goes.
    let revoked = store.revoke(USER, None).await.unwrap();
    assert_eq!((revoked.sessions, revoked.tokens), (1, 0));
}

/// The portal's word, as a PAT and a session carry it.
fn vouched() -> crate::session::Attributes {
    serde_json::json!({"department": "Sales EMEA", "level": 3, "beta": true, "city": "Zürich"})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

pub(crate) async fn pat_keeps_what_was_minted(store: Arc<dyn Store>) {
    let mut minted = pat(USER, APP, T0, 60);
    minted.groups = vec!["sales".into(), "org:acme".into()];
    minted.attributes = vouched();
    store.insert_pat([4; 32], minted.clone(), T0).await.unwrap();
    assert_eq!(store.take_pat(&[4; 32], APP, true, T0).await.unwrap(), Ok(minted));
}

pub(crate) async fn session_keeps_vouched_groups_and_attributes(store: Arc<dyn Store>) {
    let mut minted = pat(USER, APP, T0, 60);
    minted.attributes = vouched();
    let started = SessionRecord::start(&minted, vec!["org:acme".into()], Duration::from_secs(600), T0);
    open(&*store, [14; 32], started.clone()).await;
    let used = store.use_session(&[14; 32], APP, T0).await.unwrap();
    assert_eq!(used.as_ref().map(|s| &s.subject.attributes), Some(&vouched()));
    assert_eq!(
        used.map(|s| s.subject.groups.clone()),
        Some(vec!["org:acme".to_string()])
    );
}

pub(crate) async fn concurrent_takes_of_one_pat_yield_exactly_one(store: Arc<dyn Store>) {
    store.insert_pat([5; 32], pat(USER, APP, T0, 60), T0).await.unwrap();
    let tries: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_pat(&[5; 32], APP, true, T0).await.unwrap().is_ok() })
        })
        .collect();
    let mut winners = 0;
    for attempt in tries {
        winners += usize::from(attempt.await.unwrap());
    }
    assert_eq!(winners, 1);
}

/// The expiry a use of session `hash` at `at` leaves, or `None` when refused.
async fn expiry_after_use(store: &dyn Store, hash: TokenHash, at: u64) -> Option<u64> {
    store.use_session(&hash, APP, at).await.unwrap().map(|r| r.expires_ms)
}

pub(crate) async fn session_idle_expiry_slides_but_never_past_its_cap(store: Arc<dyn Store>) {
    let store = &*store;
    open(store, [6; 32], session(USER, APP, T0, 10, 40)).await;
    assert_eq!(expiry_after_use(store, [6; 32], s(9)).await, Some(s(19)), "slid to 19");
    assert_eq!(
        expiry_after_use(store, [6; 32], s(18)).await,
        Some(s(28)),
        "alive at 18 (< 19), slid to 28"
    );
    assert_eq!(
        expiry_after_use(store, [6; 32], s(35)).await,
        None,
        "idle for 17 s: gone at 28"
    );

    open(store, [16; 32], session(USER, APP, T0, 10, 25)).await;
    assert_eq!(expiry_after_use(store, [16; 32], s(9)).await, Some(s(19)));
    assert_eq!(
        expiry_after_use(store, [16; 32], s(18)).await,
        Some(s(25)),
        "slid only to the cap, 25"
    );
    assert_eq!(expiry_after_use(store, [16; 32], s(24)).await, Some(s(25)));
    assert_eq!(
        expiry_after_use(store, [16; 32], s(25)).await,
        None,
        "capped at max lifetime"
    );
}

pub(crate) async fn idle_session_expires(store: Arc<dyn Store>) {
    open(&*store, [7; 32], session(USER, APP, T0, 10, 100)).await;
    assert!(store.use_session(&[7; 32], APP, s(10)).await.unwrap().is_none());
}

pub(crate) async fn session_is_refused_on_another_app_and_unknown_hashes_are_none(store: Arc<dyn Store>) {
    let started = session(USER, APP, T0, 10, 100);
    open(&*store, [8; 32], started.clone()).await;
    assert!(store.use_session(&[8; 32], OTHER, T0).await.unwrap().is_none());
    assert_eq!(store.use_session(&[8; 32], APP, T0).await.unwrap(), Some(started));
    assert!(store.use_session(&[9; 32], APP, T0).await.unwrap().is_none());
}

pub(crate) async fn revoke_ends_a_users_sessions_and_pats_for_one_app_or_all(store: Arc<dyn Store>) {
    open(&*store, [10; 32], session(USER, APP, T0, 10, 100)).await;
    open(&*store, [11; 32], session(USER, OTHER, T0, 10, 100)).await;
    open(&*store, [12; 32], session("bob@example.com", APP, T0, 10, 100)).await;
    store.insert_pat([13; 32], pat(USER, APP, T0, 60), T0).await.unwrap();
    store.insert_pat([14; 32], pat(USER, OTHER, T0, 60), T0).await.unwrap();

    assert_eq!(
        store.revoke(USER, Some(APP)).await.unwrap(),
        Revoked { sessions: 1, tokens: 1 }
    );
    assert!(store.use_session(&[10; 32], APP, T0).await.unwrap().is_none());
    assert!(store.use_session(&[11; 32], OTHER, T0).await.unwrap().is_some());
    assert!(store.take_pat(&[13; 32], APP, false, T0).await.unwrap().is_err());

    assert_eq!(
        store.revoke(USER, None).await.unwrap(),
        Revoked { sessions: 1, tokens: 1 }
    );
    assert!(store.use_session(&[11; 32], OTHER, T0).await.unwrap().is_none());
    assert!(store.take_pat(&[14; 32], OTHER, false, T0).await.unwrap().is_err());
    assert!(
        store.use_session(&[12; 32], APP, T0).await.unwrap().is_some(),
        "another user's session is untouched"
    );
}

pub(crate) async fn revoke_announces_the_ended_sessions(store: Arc<dyn Store>) {
    let mut heard = store.ended_sessions();
    open(&*store, [20; 32], session(USER, APP, T0, 10, 100)).await;
    open(&*store, [21; 32], session(USER, OTHER, T0, 10, 100)).await;
    store.revoke(USER, Some(APP)).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), heard.recv())
        .await
        .expect("a revocation is announced")
        .expect("the feed is open");
    assert_eq!(ended, super::Ended::Sessions(Arc::from([[20u8; 32]].as_slice())));
    // Nothing ended, nothing announced.
    store.revoke("nobody@example.com", None).await.unwrap();
    assert!(heard.try_recv().is_err());
}

pub(crate) async fn revoke_of_nobody_ends_nothing(store: Arc<dyn Store>) {
    open(&*store, [30; 32], session(USER, APP, T0, 10, 100)).await;
    assert_eq!(
        store.revoke("nobody@example.com", None).await.unwrap(),
        Revoked::default()
    );
    assert!(store.use_session(&[30; 32], APP, T0).await.unwrap().is_some());
}

pub(crate) async fn count_counts_live_records_only(store: Arc<dyn Store>) {
    open(&*store, [40; 32], session(USER, APP, T0, 10, 100)).await;
    open(&*store, [41; 32], session(USER, APP, T0, 100, 100)).await;
    store.insert_pat([42; 32], pat(USER, APP, T0, 5), T0).await.unwrap();
    let now = store.count(T0).await.unwrap();
    assert_eq!((now.sessions, now.pats), (2, 1));
    let later = store.count(s(20)).await.unwrap();
    assert_eq!((later.sessions, later.pats), (1, 0));
}

/// The exchange takes the PAT, then starts the session: a revocation that
/// runs in between finds neither a session nor an unused PAT, and must
/// still win — with single-use PATs and reusable ones.
pub(crate) async fn a_revocation_between_taking_a_pat_and_starting_its_session_wins(store: Arc<dyn Store>) {
    for single_use in [true, false] {
        let minted = pat(USER, APP, T0, 60);
        store.insert_pat([50; 32], minted.clone(), T0).await.unwrap();
        let taken = store.take_pat(&[50; 32], APP, single_use, T0).await.unwrap();
        assert!(taken.is_ok(), "single_use = {single_use}");
        store.revoke(USER, None).await.unwrap();
        let started = SessionRecord::start(&minted, vec![], Duration::from_secs(600), T0);
        assert!(
            !store
                .start_session([51; 32], started, &[50; 32], single_use)
                .await
                .unwrap(),
            "single_use = {single_use}: the session of a revoked PAT is not started"
        );
        assert!(store.use_session(&[51; 32], APP, T0).await.unwrap().is_none());
    }
    // Without a revocation, the same steps start it.
    let minted = pat(USER, APP, T0, 60);
    store.insert_pat([52; 32], minted.clone(), T0).await.unwrap();
    assert!(store.take_pat(&[52; 32], APP, false, T0).await.unwrap().is_ok());
    let started = SessionRecord::start(&minted, vec![], Duration::from_secs(600), T0);
    assert!(store.start_session([53; 32], started, &[52; 32], false).await.unwrap());
    assert!(store.use_session(&[53; 32], APP, T0).await.unwrap().is_some());
}

/// A single-use PAT claimed by an exchange that never started its session
/// (its user was no longer admitted, say) stays spent.
pub(crate) async fn a_claimed_pat_is_not_taken_again(store: Arc<dyn Store>) {
    store.insert_pat([54; 32], pat(USER, APP, T0, 60), T0).await.unwrap();
    assert!(store.take_pat(&[54; 32], APP, true, T0).await.unwrap().is_ok());
    assert!(store.take_pat(&[54; 32], APP, true, T0).await.unwrap().is_err());
    assert!(store.take_pat(&[54; 32], APP, false, T0).await.unwrap().is_err());
}
