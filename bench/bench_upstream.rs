//! A minimal upstream for `bench/load.sh`: answers every request with a
//! fixed 1 KiB body over HTTP/1.1 keep-alive, as fast as hyper can, so the
//! benchmark measures the gateway and not the app behind it.
//!
//! `cargo run --release --example bench_upstream` prints `listening <addr>`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    let body = Bytes::from(vec![b'x'; 1024]);
    loop {
        let (stream, _) = listener.accept().await?;
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
