//! Bodies are streamed both ways, never buffered whole: 100 MiB through the
//! gateway moves its peak resident memory (VmHWM) by far less than 100 MiB.

use std::time::Duration;

use crate::common::*;
use http_body_util::BodyExt;
use hyper::Request;

const SIZE: u64 = 100 * MIB;
/// Allowed growth of the gateway's peak RSS while moving `SIZE` bytes.
const MAX_GROWTH_KIB: u64 = 40 * 1024;

async fn warmed_gateway(up: &Upstream) -> Gateway {
    let gw = Gateway::start(new_dir(), &config("", &passthrough(&up.url()))).await;
    // Warm the pool and the allocator with a small body of each kind.
    let mut c = H1::connect(gw.public_addr).await;
    assert_eq!(c.get("/download/65536").await.body.len(), 65536);
    let r = c
        .request(Request::post("/upload").body(zeros_body(65536)).unwrap())
        .await;
    assert_eq!(r.json()["bytes"], 65536);
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_100_mib_is_streamed_without_buffering() {
    let up = echo_upstream("a").await;
    let gw = warmed_gateway(&up).await;
    let before = gw.vm_hwm_kib();

    let mut c = H1::connect(gw.public_addr).await;
    let req = Request::post("/upload?slow")
        .header("content-length", SIZE.to_string())
        .body(zeros_body(SIZE))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(45), c.try_send(req))
        .await
        .expect("100 MiB upload did not finish in 45 s")
        .expect("upload failed");
    let r = read_reply(resp).await;
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["bytes"], SIZE, "{j}");
    assert_eq!(j["content_length"], SIZE.to_string(), "{j}");

    let after = gw.vm_hwm_kib();
    eprintln!("VmHWM {before} KiB -> {after} KiB");
    assert!(
        after.saturating_sub(before) < MAX_GROWTH_KIB,
        "gateway peak RSS grew by {} KiB ({before} → {after}) during a 100 MiB upload",
        after.saturating_sub(before)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_100_mib_is_streamed_without_buffering() {
    let up = echo_upstream("a").await;
    let gw = warmed_gateway(&up).await;
    let before = gw.vm_hwm_kib();

    let mut c = H1::connect(gw.public_addr).await;
    let resp = c
        .send(Request::get(format!("/download/{SIZE}")).body(empty()).unwrap())
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_string()),
        Some(SIZE.to_string())
    );
    let mut body = resp.into_body();
    let mut n: u64 = 0;
    let count = async {
        while let Some(frame) = body.frame().await {
            if let Some(d) = frame.expect("body error").data_ref() {
                let before = n / MIB;
                n += d.len() as u64;
                // A slow reader (10 ms per MiB): a gateway without
                // back-pressure would have to hold what it cannot hand over.
                if n / MIB != before {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(45), count)
        .await
        .expect("100 MiB download did not finish in 45 s");
    assert_eq!(n, SIZE);

    let after = gw.vm_hwm_kib();
    eprintln!("VmHWM {before} KiB -> {after} KiB");
    assert!(
        after.saturating_sub(before) < MAX_GROWTH_KIB,
        "gateway peak RSS grew by {} KiB ({before} → {after}) during a 100 MiB download",
        after.saturating_sub(before)
    );
}
