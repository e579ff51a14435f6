//! What a connection's first bytes say, before anything is served: on the
//! demo's TLS port whether it speaks TLS at all, and in plain HTTP whether
//! HTTP/2's whole preface came first (prior knowledge) or HTTP/1.

use std::time::Duration;

use tokio::net::TcpStream;

/// What a plain-HTTP client's first bytes say.
pub(super) enum First {
    Http1,
    /// The whole HTTP/2 preface.
    Http2,
}

/// How often [`first_bytes`] looks again while it has only a beginning of
/// the preface (a peek returns at once while anything is unread).
const PREFACE_POLL: Duration = Duration::from_millis(10);

/// Waits at most `limit` for the client's first bytes and tells HTTP/2's
/// preface from anything else; `None` when nothing (or not enough to tell)
/// came. A beginning of the preface is waited on until it is whole or
/// turns out to be HTTP/1 (`P`, then `OST`).
pub(super) async fn first_bytes(stream: &TcpStream, limit: Duration) -> Option<First> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut first = [0u8; PREFACE.len()];
    let tell = async {
        loop {
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if !PREFACE.starts_with(&first[..n]) {
                return Some(First::Http1);
            }
            if n == PREFACE.len() {
                return Some(First::Http2);
            }
            tokio::time::sleep(PREFACE_POLL).await;
        }
    };
    tokio::time::timeout(limit, tell).await.ok().flatten()
}

/// Whether the client's first byte opens a TLS handshake record (RFC 8446
/// §5.1: content type 22). Waits at most `limit` for it.
pub(super) async fn starts_tls(stream: &TcpStream, limit: Duration) -> bool {
    const HANDSHAKE: u8 = 0x16;
    let mut first = [0u8; 1];
    matches!(tokio::time::timeout(limit, stream.peek(&mut first)).await, Ok(Ok(1)) if first[0] == HANDSHAKE)
}
