//! What every [`Store`] must do, as tests that take the store as a trait
//! object. A store's own test module runs them all with
//! [`store_conformance_tests!`](crate::store_conformance_tests), so the
//! in-process store and a shared one are held to the same rules.

use std::sync::Arc;
use std::time::Duration;

use super::{PatRecord, Revoked, SessionRecord, Store};
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

fn s(secs: u64) -> u64 {
    T0 + secs * 1_000
}

/// Runs every conformance test against the store `$make` builds (a fresh
/// one per test).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
            pat_is_taken_once_and_only_for_its_app,
            reusable_pat_works_until_expiry,
            expired_pat_is_not_taken,
            pat_keeps_what_was_minted,
            concurrent_takes_of_one_pat_yield_exactly_one,
            session_idle_expiry_slides_but_never_past_its_cap,
            idle_session_expires,
            session_is_refused_on_another_app_and_unknown_hashes_are_none,
            revoke_ends_a_users_sessions_and_pats_for_one_app_or_all,
            revoke_announces_the_ended_sessions,
            revoke_of_nobody_ends_nothing,
            count_counts_live_records_only,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: std::sync::Arc<dyn $crate::session::Store> = std::sync::Arc::new($make);
                $crate::session::conformance::$name(store).await;
            }
        )+
    };
}

pub(crate) async fn pat_is_taken_once_and_only_for_its_app(store: Arc<dyn Store>) {
    store.insert_pat([1; 32], pat(USER, APP, T0, 60)).await.unwrap();
    assert!(store.take_pat(&[1; 32], OTHER, true, T0).await.unwrap().is_none());
    assert!(
        store.take_pat(&[1; 32], APP, true, T0).await.unwrap().is_some(),
        "a wrong-app try must not burn it"
    );
    assert!(store.take_pat(&[1; 32], APP, true, T0).await.unwrap().is_none());
}

pub(crate) async fn reusable_pat_works_until_expiry(store: Arc<dyn Store>) {
    store.insert_pat([2; 32], pat(USER, APP, T0, 10)).await.unwrap();
    assert!(store.take_pat(&[2; 32], APP, false, T0).await.unwrap().is_some());
    assert!(store.take_pat(&[2; 32], APP, false, s(9)).await.unwrap().is_some());
    assert!(store.take_pat(&[2; 32], APP, false, s(10)).await.unwrap().is_none());
}

pub(crate) async fn expired_pat_is_not_taken(store: Arc<dyn Store>) {
    store.insert_pat([3; 32], pat(USER, APP, T0, 10)).await.unwrap();
    assert!(store.take_pat(&[3; 32], APP, true, s(10)).await.unwrap().is_none());
}

pub(crate) async fn pat_keeps_what_was_minted(store: Arc<dyn Store>) {
    let minted = pat(USER, APP, T0, 60);
    store.insert_pat([4; 32], minted.clone()).await.unwrap();
    assert_eq!(store.take_pat(&[4; 32], APP, true, T0).await.unwrap(), Some(minted));
}

pub(crate) async fn concurrent_takes_of_one_pat_yield_exactly_one(store: Arc<dyn Store>) {
    store.insert_pat([5; 32], pat(USER, APP, T0, 60)).await.unwrap();
    let tries: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_pat(&[5; 32], APP, true, T0).await.unwrap().is_some() })
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
    store
        .insert_session([6; 32], session(USER, APP, T0, 10, 40))
        .await
        .unwrap();
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

    store
        .insert_session([16; 32], session(USER, APP, T0, 10, 25))
        .await
        .unwrap();
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
    store
        .insert_session([7; 32], session(USER, APP, T0, 10, 100))
        .await
        .unwrap();
    assert!(store.use_session(&[7; 32], APP, s(10)).await.unwrap().is_none());
}

pub(crate) async fn session_is_refused_on_another_app_and_unknown_hashes_are_none(store: Arc<dyn Store>) {
    let started = session(USER, APP, T0, 10, 100);
    store.insert_session([8; 32], started.clone()).await.unwrap();
    assert!(store.use_session(&[8; 32], OTHER, T0).await.unwrap().is_none());
    assert_eq!(store.use_session(&[8; 32], APP, T0).await.unwrap(), Some(started));
    assert!(store.use_session(&[9; 32], APP, T0).await.unwrap().is_none());
}

pub(crate) async fn revoke_ends_a_users_sessions_and_pats_for_one_app_or_all(store: Arc<dyn Store>) {
    store
        .insert_session([10; 32], session(USER, APP, T0, 10, 100))
        .await
        .unwrap();
    store
        .insert_session([11; 32], session(USER, OTHER, T0, 10, 100))
        .await
        .unwrap();
    store
        .insert_session([12; 32], session("bob@example.com", APP, T0, 10, 100))
        .await
        .unwrap();
    store.insert_pat([13; 32], pat(USER, APP, T0, 60)).await.unwrap();
    store.insert_pat([14; 32], pat(USER, OTHER, T0, 60)).await.unwrap();

    assert_eq!(
        store.revoke(USER, Some(APP)).await.unwrap(),
        Revoked { sessions: 1, tokens: 1 }
    );
    assert!(store.use_session(&[10; 32], APP, T0).await.unwrap().is_none());
    assert!(store.use_session(&[11; 32], OTHER, T0).await.unwrap().is_some());
    assert!(store.take_pat(&[13; 32], APP, false, T0).await.unwrap().is_none());

    assert_eq!(
        store.revoke(USER, None).await.unwrap(),
        Revoked { sessions: 1, tokens: 1 }
    );
    assert!(store.use_session(&[11; 32], OTHER, T0).await.unwrap().is_none());
    assert!(store.take_pat(&[14; 32], OTHER, false, T0).await.unwrap().is_none());
    assert!(
        store.use_session(&[12; 32], APP, T0).await.unwrap().is_some(),
        "another user's session is untouched"
    );
}

pub(crate) async fn revoke_announces_the_ended_sessions(store: Arc<dyn Store>) {
    let mut heard = store.ended_sessions();
    store
        .insert_session([20; 32], session(USER, APP, T0, 10, 100))
        .await
        .unwrap();
    store
        .insert_session([21; 32], session(USER, OTHER, T0, 10, 100))
        .await
        .unwrap();
    store.revoke(USER, Some(APP)).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), heard.recv())
        .await
        .expect("a revocation is announced")
        .expect("the feed is open");
    assert_eq!(&*ended, &[[20u8; 32]] as &[TokenHash]);
    // Nothing ended, nothing announced.
    store.revoke("nobody@example.com", None).await.unwrap();
    assert!(heard.try_recv().is_err());
}

pub(crate) async fn revoke_of_nobody_ends_nothing(store: Arc<dyn Store>) {
    store
        .insert_session([30; 32], session(USER, APP, T0, 10, 100))
        .await
        .unwrap();
    assert_eq!(
        store.revoke("nobody@example.com", None).await.unwrap(),
        Revoked::default()
    );
    assert!(store.use_session(&[30; 32], APP, T0).await.unwrap().is_some());
}

pub(crate) async fn count_counts_live_records_only(store: Arc<dyn Store>) {
    store
        .insert_session([40; 32], session(USER, APP, T0, 10, 100))
        .await
        .unwrap();
    store
        .insert_session([41; 32], session(USER, APP, T0, 100, 100))
        .await
        .unwrap();
    store.insert_pat([42; 32], pat(USER, APP, T0, 5)).await.unwrap();
    let now = store.count(T0).await.unwrap();
    assert_eq!((now.sessions, now.pats), (2, 1));
    let later = store.count(s(20)).await.unwrap();
    assert_eq!((later.sessions, later.pats), (1, 0));
}
