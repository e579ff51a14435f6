use super::*;
use crate::session::conformance::{self, pat, session, APP, OTHER, USER};
use std::sync::Arc;

conformance::store_conformance_tests!(MemoryStore::new());

#[tokio::test]
async fn sweep_drops_only_expired_entries_and_their_index() {
    let store = MemoryStore::new();
    let t0 = conformance::T0;
    conformance::open(&store, [10; 32], session(USER, APP, t0, 10, 100)).await;
    conformance::open(&store, [11; 32], session(USER, APP, t0, 100, 100)).await;
    store.insert_pat([12; 32], pat(USER, APP, t0, 5), t0).await.unwrap();
    store
        .insert_pat([13; 32], pat("other@example.com", APP, t0, 5), t0)
        .await
        .unwrap();
    assert_eq!(store.sweep(t0 + 20_000).await.unwrap(), 3);
    assert_eq!(store.sessions.len(), 1);
    assert!(store.pats.is_empty());
    // Left: the marks of the two PATs `open` exchanged, until they
    // would have expired.
    assert_eq!(store.used.len(), 2);
    assert_eq!(store.sweep(t0 + 61_000).await.unwrap(), 2);
    assert!(store.used.is_empty());
    let owned = store.by_user.get(USER).expect("alice still owns a session");
    assert_eq!(owned.sessions, HashSet::from([[11; 32]]));
    assert!(owned.pats.is_empty());
    drop(owned);
    assert!(
        !store.by_user.contains_key("other@example.com"),
        "an index entry with nothing left goes"
    );
}

/// A user's sessions on one app point at one subject (email, groups,
/// attributes, app id); a session with other groups, or on another
/// app, has its own; every record still reads as it was started.
#[tokio::test]
async fn sessions_of_one_user_on_one_app_share_their_subject() {
    let store = MemoryStore::new();
    let t0 = conformance::T0;
    conformance::open(&store, [20; 32], session(USER, APP, t0, 600, 3_600)).await;
    conformance::open(&store, [21; 32], session(USER, APP, t0, 600, 3_600)).await;
    let mut other_groups = session(USER, APP, t0, 600, 3_600);
    Arc::make_mut(&mut other_groups.subject).groups = vec!["ops".to_string()];
    conformance::open(&store, [22; 32], other_groups).await;
    conformance::open(&store, [23; 32], session(USER, OTHER, t0, 600, 3_600)).await;
    conformance::open(&store, [24; 32], session("bob@example.com", APP, t0, 600, 3_600)).await;

    let get = |h: u8| store.sessions.get(&[h; 32]).map(|s| s.clone()).expect("a session");
    let (a, b, c, d, e) = (get(20), get(21), get(22), get(23), get(24));
    assert!(Arc::ptr_eq(&a.subject, &b.subject));
    for other in [&c, &d, &e] {
        assert!(!Arc::ptr_eq(&a.subject, &other.subject));
    }
    assert_eq!(
        (&a.subject.groups[..], &c.subject.groups[..]),
        (&["sales".to_string()][..], &["ops".to_string()][..])
    );
    assert_eq!((a.subject.app_id.as_str(), d.subject.app_id.as_str()), (APP, OTHER));
    assert_eq!(e.subject.email, "bob@example.com");
    let used = store.use_session(&[21; 32], APP, t0 + 1).await.unwrap().expect("live");
    assert!(Arc::ptr_eq(&used.subject, &a.subject), "a request's copy shares too");
    // A fifth subject of one user pushes out the oldest, never grows the list.
    for (i, group) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let mut s = session(USER, APP, t0, 600, 3_600);
        Arc::make_mut(&mut s.subject).groups = vec![group.to_string()];
        conformance::open(&store, [30 + i as u8; 32], s).await;
    }
    assert_eq!(
        store.by_user.get(USER).map(|o| o.subjects.len()),
        Some(SUBJECTS_PER_USER)
    );
}

/// Tunnels of a session that expired end once it is swept, as they end
/// on a revocation.
#[tokio::test]
async fn sweep_announces_the_sessions_it_drops() {
    let store = MemoryStore::new();
    let mut heard = store.ended_sessions();
    let t0 = conformance::T0;
    conformance::open(&store, [20; 32], session(USER, APP, t0, 10, 100)).await;
    conformance::open(&store, [21; 32], session(USER, APP, t0, 100, 100)).await;
    store.insert_pat([22; 32], pat(USER, APP, t0, 5), t0).await.unwrap();
    assert_eq!(store.sweep(t0 + 20_000).await.unwrap(), 2);
    let ended = heard.try_recv().expect("the swept session is announced");
    assert_eq!(ended, Ended::Sessions(Arc::from([[20u8; 32]].as_slice())));
    assert_eq!(store.sweep(t0 + 20_000).await.unwrap(), 0);
    assert!(heard.try_recv().is_err(), "nothing swept, nothing announced");
}

/// Each session that ends is one audit event, with why: swept after
/// its idle timeout or its lifetime cap, noticed at its next use, or
/// revoked; never twice.
#[tokio::test]
async fn ended_sessions_are_audited_once_with_the_reason() {
    let (_guard, audit) = crate::telemetry::audit::testing::capture();
    let store = MemoryStore::new();
    let t0 = conformance::T0;
    // Idle 10 s under a 100 s cap; idle 100 s under a 30 s cap.
    conformance::open(&store, [30; 32], session(USER, APP, t0, 10, 100)).await;
    conformance::open(&store, [31; 32], session(USER, APP, t0, 100, 30)).await;
    conformance::open(&store, [32; 32], session(USER, OTHER, t0, 100, 100)).await;
    conformance::open(&store, [33; 32], session(USER, OTHER, t0, 10, 100)).await;
    store.sweep(t0 + 20_000).await.unwrap();
    assert!(store.use_session(&[31; 32], APP, t0 + 31_000).await.unwrap().is_none());
    store.revoke(USER, Some(OTHER)).await.unwrap();
    store.sweep(t0 + 200_000).await.unwrap();
    assert!(store.use_session(&[30; 32], APP, t0 + 300_000).await.unwrap().is_none());
    let fingerprint = |b: u8| crate::telemetry::audit::fingerprint(&[b; 32]);
    let ended = |b: u8, app: &str, reason: &str| {
        serde_json::json!({
            "message": "audit", "event": "session_end", "user": USER, "app": app,
            "session": fingerprint(b), "reason": reason,
        })
    };
    let mut events = audit.events();
    events.sort_by_key(|e| e["session"].as_str().map(str::to_owned));
    let mut expected = [
        ended(30, APP, "idle"),
        ended(31, APP, "lifetime"),
        ended(32, OTHER, "revoked"),
        ended(33, OTHER, "idle"),
    ];
    expected.sort_by_key(|e| e["session"].as_str().map(str::to_owned));
    assert_eq!(events, expected);
}

/// A claimed PAT stays indexed (a revocation must still find it) until
/// its session starts; then only the session is.
#[tokio::test]
async fn claimed_pats_leave_the_index_when_their_session_starts() {
    let store = MemoryStore::new();
    let minted = pat(USER, APP, conformance::T0, 60);
    store
        .insert_pat([1; 32], minted.clone(), conformance::T0)
        .await
        .unwrap();
    let taken = store.take_pat(&[1; 32], APP, true, conformance::T0).await.unwrap();
    assert!(taken.is_ok());
    assert_eq!(
        store.by_user.get(USER).map(|o| o.pats.clone()),
        Some(HashSet::from([[1; 32]]))
    );
    let started = SessionRecord::start(&minted, vec![], std::time::Duration::from_secs(60), conformance::T0);
    assert!(store.start_session([2; 32], started, &[1; 32], true).await.unwrap());
    let owned = store.by_user.get(USER).expect("the session is indexed");
    assert!(owned.pats.is_empty());
    assert_eq!(owned.sessions, HashSet::from([[2; 32]]));
    drop(owned);
    assert!(store.pats.is_empty());
    assert!(
        store.used.contains_key(&used_mark(&[1; 32])),
        "only a mark that it was used is left"
    );
}

/// Revocation goes through the user's index entry: with 100k live
/// sessions of other users, none of their records or index entries
/// changes.
#[tokio::test]
async fn revoking_one_user_among_100k_touches_no_other() {
    const OTHERS: u32 = 100_000;
    let store = MemoryStore::new();
    let t0 = conformance::T0;
    let mut hash = [0u8; 32];
    for i in 0..OTHERS {
        hash[..4].copy_from_slice(&i.to_be_bytes());
        let email = format!("user{}@example.com", i % 5_000);
        conformance::open(&store, hash, session(&email, APP, t0, 600, 3_600)).await;
    }
    for i in 0..3u8 {
        let mut mine = [0xAA; 32];
        mine[0] = i;
        conformance::open(&store, mine, session(USER, APP, t0, 600, 3_600)).await;
    }
    store
        .insert_pat([0xBB; 32], pat(USER, OTHER, t0, 60), t0)
        .await
        .unwrap();
    let before: Vec<(TokenHash, SessionRecord)> = store
        .sessions
        .iter()
        .filter(|e| &*e.subject.email != USER)
        .map(|e| (*e.key(), e.value().clone()))
        .collect();
    let index_before: Vec<(Arc<str>, usize)> = store
        .by_user
        .iter()
        .filter(|e| &**e.key() != USER)
        .map(|e| (e.key().clone(), e.sessions.len()))
        .collect();

    let revoked = store.revoke(USER, None).await.unwrap();
    assert_eq!(revoked, Revoked { sessions: 3, tokens: 1 });

    assert_eq!(store.sessions.len(), OTHERS as usize);
    for (hash, record) in &before {
        assert_eq!(store.sessions.get(hash).as_deref(), Some(record));
    }
    assert!(!store.by_user.contains_key(USER));
    for (email, sessions) in &index_before {
        assert_eq!(
            store.by_user.get(&**email).map(|o| o.sessions.len()),
            Some(*sessions),
            "{email}"
        );
    }
    assert_eq!(store.by_user.len(), index_before.len());
}
