use super::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn unread_bytes_come_first_in_order() {
    let (client, mut server) = tokio::io::duplex(64);
    let mut io = Rewound::new(client, Arc::default());
    server.write_all(b"/ HTTP/1.1\r\n").await.unwrap();
    io.unread(Bytes::from_static(b"GET "));
    io.unread(Bytes::from_static(b""));
    let mut got = vec![0u8; 16];
    let mut read = 0;
    while read < 16 {
        read += io.read(&mut got[read..]).await.unwrap();
    }
    assert_eq!(&got, b"GET / HTTP/1.1\r\n");
}

#[tokio::test]
async fn hyper_leftovers_go_before_what_woke_the_connection() {
    let (client, mut server) = tokio::io::duplex(64);
    let mut io = Rewound::new(client, Arc::default());
    server.write_all(b"C").await.unwrap();
    assert!(io.wait_for_bytes().await.unwrap());
    io.unread(Bytes::from_static(b"AB"));
    let mut got = [0u8; 3];
    io.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ABC");
}

#[tokio::test]
async fn a_parked_connection_sees_the_client_close() {
    let (client, server) = tokio::io::duplex(64);
    let mut io = Rewound::new(client, Arc::default());
    drop(server);
    assert!(!io.wait_for_bytes().await.unwrap());
}

#[tokio::test]
async fn shutdown_while_parking_keeps_the_socket_open() {
    let (client, mut server) = tokio::io::duplex(64);
    let activity = Arc::new(Activity::default());
    let mut io = Rewound::new(client, activity.clone());
    activity.set_parking(true);
    io.shutdown().await.unwrap();
    activity.set_parking(false);
    io.write_all(b"still open").await.unwrap();
    let mut got = [0u8; 10];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"still open");
    io.shutdown().await.unwrap();
    assert_eq!(
        server.read(&mut got).await.unwrap(),
        0,
        "a real shutdown reaches the peer"
    );
}

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

#[tokio::test]
async fn bytes_of_a_next_request_mean_it_is_not_between_requests() {
    let (client, mut server) = tokio::io::duplex(64);
    let activity = Arc::new(Activity::default());
    let mut io = Rewound::new(client, activity.clone());
    let busy = activity.begin();
    server.write_all(b"GET /next").await.unwrap();
    let mut got = [0u8; 9];
    io.read_exact(&mut got).await.unwrap();
    drop(busy);
    assert!(
        activity.between_requests(),
        "read before the response finished: pipelined"
    );
    server.write_all(b" HTTP/1.1").await.unwrap();
    io.read_exact(&mut got).await.unwrap();
    assert!(!activity.between_requests(), "a head has begun");
}
