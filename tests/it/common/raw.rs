//! Raw TCP or TLS: a client that writes bytes as given and parses the
//! response by hand, for what hyper would not let a client get wrong
//! (malformed or oversize heads, framing checks, how a connection ended).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::TestTls;
use super::T;

/// A byte stream a raw client speaks over: a `TcpStream`, or TLS over one.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Io for S {}

/// How a raw client reaches the gateway, so that one table of cases runs
/// over plain TCP and over TLS alike.
#[derive(Clone, Copy)]
pub enum Dial<'a> {
    Tcp,
    /// TLS as `localhost`, trusting this CA.
    Tls(&'a TestTls),
}

impl Dial<'_> {
    /// A connection to `addr`; over TLS it offers `alpn` alone, and the
    /// gateway must pick it (a table run over TLS means that protocol).
    pub async fn stream(self, addr: SocketAddr, alpn: &[u8]) -> Box<dyn Io> {
        match self {
            Dial::Tcp => Box::new(tcp(addr).await),
            Dial::Tls(tls) => {
                let (stream, chosen) = tls.connect(addr, &[alpn]).await;
                assert_eq!(
                    chosen.as_deref(),
                    Some(alpn),
                    "the gateway must pick the one protocol offered by ALPN"
                );
                Box::new(stream)
            }
        }
    }
}

async fn tcp(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(T, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// A response parsed from the wire by hand.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    /// Field names lowercased, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// How a connection ended while waiting for it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Orderly close (read returned 0).
    Eof,
    /// Reset or another read error (over TLS, a close without
    /// close_notify too).
    Reset,
    /// Still open when the wait ended.
    StillOpen,
}

/// A hand-driven HTTP/1 client connection over `S`: plain TCP unless said.
pub struct RawConn<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        RawConn::new(tcp(addr).await)
    }

    pub async fn try_connect(addr: SocketAddr) -> std::io::Result<RawConn> {
        let stream = tokio::time::timeout(T, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        Ok(RawConn::new(stream))
    }
}

impl RawConn<Box<dyn Io>> {
    /// A connection to `addr` as `dial` says; over TLS, ALPN `http/1.1`.
    pub async fn dial(dial: Dial<'_>, addr: SocketAddr) -> Self {
        RawConn::new(dial.stream(addr, b"http/1.1").await)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    /// A raw client over a stream already open (and, for TLS, handshaken).
    pub fn new(stream: S) -> Self {
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(T, self.stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "raw read timed out"))??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn take_exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn take_line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads one response head (a 1xx counts as one).
    pub async fn read_head(&mut self) -> std::io::Result<RawResponse> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                let head = String::from_utf8_lossy(&head[..end]).into_owned();
                let status_line = head.lines().next().unwrap_or("");
                let status: u16 = status_line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("bad status line {status_line:?}"),
                        )
                    })?;
                return Ok(RawResponse {
                    status,
                    headers: parse_fields(&head),
                    head,
                    body: Vec::new(),
                });
            }
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads a whole response; `head_request`: it answers a HEAD (no body).
    pub async fn read_response(&mut self, head_request: bool) -> std::io::Result<RawResponse> {
        let mut resp = self.read_head().await?;
        let no_body = head_request || resp.status / 100 == 1 || resp.status == 204 || resp.status == 304;
        if no_body {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false);
        if chunked {
            loop {
                let line = self.take_line().await?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad chunk size line {line:?}"))
                })?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.take_line().await?.is_empty() {}
                    break;
                }
                let data = self.take_exact(size).await?;
                resp.body.extend_from_slice(&data);
                let crlf = self.take_exact(2).await?;
                if crlf != b"\r\n" {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "chunk not followed by CRLF",
                    ));
                }
            }
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad content-length"))?;
            resp.body = self.take_exact(len).await?;
        } else {
            while self.fill().await? != 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    /// Reads until the peer closes or `limit` passes; returns what arrived
    /// (including anything already buffered), how it ended and when.
    pub async fn wait_closed(&mut self, limit: Duration) -> (Vec<u8>, Ending, Duration) {
        let start = Instant::now();
        let deadline = start + limit;
        let mut got = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 16384];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Err(_) => return (got, Ending::StillOpen, start.elapsed()),
                Ok(Ok(0)) => return (got, Ending::Eof, start.elapsed()),
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                Ok(Err(_)) => return (got, Ending::Reset, start.elapsed()),
            }
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The header fields of a head (first line skipped), names lowercased.
pub fn parse_fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}
