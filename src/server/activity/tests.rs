use super::*;
use bytes::Bytes;
use std::task::Context;

#[test]
fn a_request_is_unfinished_until_its_body_is_dropped() {
    let activity = Arc::new(Activity::default());
    let busy = activity.begin();
    assert_eq!(activity.started(), 1);
    assert!(!activity.between_requests());
    drop(Tracked::new(http_body_util::Empty::<Bytes>::new(), busy, None));
    assert!(activity.between_requests());
    assert_eq!(activity.started(), 1);
}

#[test]
fn the_head_wait_counts_whole_checks_and_restarts_with_each_request() {
    let activity = Arc::new(Activity::default());
    let mut wait = ClientHeadWait::new();
    assert_eq!(
        wait.check(&activity),
        IDLE_CHECK,
        "the first head is awaited from the start"
    );
    assert_eq!(wait.check(&activity), 2 * IDLE_CHECK);
    let busy = activity.begin();
    assert_eq!(wait.check(&activity), Duration::ZERO, "a request in flight");
    assert_eq!(wait.check(&activity), Duration::ZERO);
    drop(busy);
    assert_eq!(
        wait.check(&activity),
        Duration::ZERO,
        "finished since the last check: counted from this one"
    );
    assert_eq!(wait.check(&activity), IDLE_CHECK);
    drop(activity.begin());
    assert_eq!(
        wait.check(&activity),
        Duration::ZERO,
        "one begun and finished between checks"
    );
    wait.add(Duration::from_secs(5));
    assert_eq!(wait.left(Duration::from_secs(7)), Duration::from_secs(2));
    assert_eq!(wait.check(&activity), Duration::from_secs(5) + IDLE_CHECK);
}

#[test]
fn a_body_is_stalled_while_it_gives_no_frame() {
    let activity = Arc::new(Activity::default());
    let mut stall = BodyStall::default();
    assert_eq!(stall.check(&activity).0, Duration::ZERO, "nothing being sent");
    let mut body = Tracked::new(
        http_body_util::Full::new(Bytes::from_static(b"x")),
        activity.begin(),
        None,
    );
    assert_eq!(stall.check(&activity), (IDLE_CHECK, Turn::Client), "never asked for");
    assert_eq!(stall.check(&activity), (2 * IDLE_CHECK, Turn::Client));
    let waker = futures_util::task::noop_waker();
    let _ = http_body::Body::poll_frame(Pin::new(&mut body), &mut Context::from_waker(&waker));
    assert_eq!(stall.check(&activity), (Duration::ZERO, Turn::Client), "a frame came");
    drop(body);
    assert_eq!(stall.check(&activity).0, Duration::ZERO, "done");
}

#[test]
fn a_body_waiting_on_its_upstream_is_the_upstreams_stall() {
    let activity = Arc::new(Activity::default());
    let mut stall = BodyStall::default();
    // An upstream that went quiet: a body with nothing yet.
    let quiet = futures_util::stream::pending::<Result<Frame<Bytes>, std::convert::Infallible>>();
    let mut body = Tracked::new(http_body_util::StreamBody::new(quiet), activity.begin(), None);
    let waker = futures_util::task::noop_waker();
    let polled = http_body::Body::poll_frame(Pin::new(&mut body), &mut Context::from_waker(&waker));
    assert!(polled.is_pending());
    assert_eq!(stall.check(&activity), (IDLE_CHECK, Turn::Upstream));
    assert_eq!(stall.check(&activity), (2 * IDLE_CHECK, Turn::Upstream));
}
