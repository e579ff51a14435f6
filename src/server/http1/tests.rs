use super::*;
use crate::server::activity::Activity;
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
