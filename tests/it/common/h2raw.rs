//! Raw HTTP/2, frame by frame, over plain TCP (prior knowledge) or TLS
//! (ALPN `h2`): what an HTTP/2 library would refuse to send. HPACK blocks
//! are literal fields without indexing or Huffman, so any bytes at all can
//! be a name or value; a response's `:status` is told from its first byte
//! only (200 is static index 8).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::gateway::Gateway;
use super::raw::{Dial, Io};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits `first`.
pub fn hpack_int(first: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields without indexing, new names, no
/// Huffman: any bytes at all, as given.
pub fn block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(0, 7, name.len(), &mut out);
        out.extend_from_slice(name);
        hpack_int(0, 7, value.len(), &mut out);
        out.extend_from_slice(value);
    }
    out
}

/// A well-formed GET's fields for `path`, then `extra`.
pub fn get_fields<'a>(path: &'a [u8], extra: &[(&'a [u8], &'a [u8])]) -> Vec<(&'a [u8], &'a [u8])> {
    let mut f: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"gw"),
        (b":path", path),
    ];
    f.extend_from_slice(extra);
    f
}

/// How a raw HTTP/2 exchange ended for stream 1.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response head; `ok`: its `:status` was 200 (static index 8).
    Response { ok: bool, first_byte: u8 },
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection closed with neither.
    Closed,
    /// Nothing within the wait.
    Silent,
}

/// One raw HTTP/2 connection over `S`: plain TCP unless said.
pub struct Raw<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Raw {
    /// Prior knowledge over plain TCP.
    pub async fn connect(gw: &Gateway) -> Raw {
        Raw::start(TcpStream::connect(gw.public_addr).await.unwrap()).await
    }
}

impl Raw<Box<dyn Io>> {
    /// A connection as `dial` says: prior knowledge over TCP, ALPN `h2`
    /// over TLS.
    pub async fn dial(dial: Dial<'_>, gw: &Gateway) -> Self {
        Raw::start(dial.stream(gw.public_addr, b"h2").await).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    /// Sends the client preface and an empty SETTINGS on `stream`.
    async fn start(mut stream: S) -> Self {
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.unwrap();
        stream.flush().await.unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        // A TLS stream holds what it was given until flushed.
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// Reads frames until stream 1 gets a response head or a reset, or the
    /// connection a GOAWAY or its end.
    pub async fn outcome(&mut self, wait: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16) | (usize::from(self.buf[1]) << 8) | usize::from(self.buf[2]);
                if self.buf.len() < 9 + len {
                    break;
                }
                let kind = self.buf[3];
                let id = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) & 0x7fff_ffff;
                let payload: Vec<u8> = self.buf[9..9 + len].to_vec();
                self.buf.drain(..9 + len);
                let code =
                    |at: usize| u32::from_be_bytes([payload[at], payload[at + 1], payload[at + 2], payload[at + 3]]);
                match kind {
                    HEADERS if id == 1 => {
                        let first = payload.first().copied().unwrap_or(0);
                        return Outcome::Response {
                            ok: first == 0x88,
                            first_byte: first,
                        };
                    }
                    RST_STREAM if id == 1 && payload.len() >= 4 => return Outcome::Reset(code(0)),
                    GOAWAY if payload.len() >= 8 => return Outcome::GoAway(code(4)),
                    _ => {}
                }
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Outcome::Silent,
                Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
