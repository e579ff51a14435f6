//! The access log: one line per request on its own target
//! (`embedgate::access`), written when the request is over — the response's
//! last byte sent (or the client gone) and the request body done — so it
//! can say how many bytes went each way and how long it all took.
//!
//! A request's [`Access`] record is shared by its two bodies (each counts
//! its bytes into it) and written when the last holder drops it. The line
//! is formatted here rather than by `tracing_subscriber::fmt` — the same
//! shape, a fraction of the cost — into the log [`Sink`](super::sink::Sink)
//! as a line that may wait for its batch. `RUST_LOG` still decides whether
//! it is written (`embedgate::access=off` silences it), as does
//! `[log] access`.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method, Uri, Version};

use super::{output, LogFormat};
use crate::body::{Direction, Tally};
use crate::metrics::RouteKind;

/// One request, as its access line will tell it.
pub(crate) struct Access {
    started: Instant,
    request_id: HeaderValue,
    client: IpAddr,
    method: Method,
    /// Logged with PATs redacted.
    uri: Uri,
    version: Version,
    received: AtomicU64,
    sent: AtomicU64,
    answer: OnceLock<Answer>,
}

/// What the gateway answered, known once the response head is ready.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) route: RouteKind,
    /// The embedded app's id.
    pub(crate) app: Option<String>,
    pub(crate) status: u16,
    pub(crate) upstream: Option<UpstreamSeen>,
}

/// The upstream's side of a proxied request; the proxy puts it in the
/// response's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamSeen {
    /// The address the pooled connection is connected to.
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) status: u16,
}

/// The status logged for a request whose client left before the answer
/// (nginx's 499).
const CLIENT_CLOSED: u16 = 499;

impl Access {
    /// The record of a request that started at `started`, or `None` when no access line
    /// is to be written (`[log] access = false`, or `RUST_LOG` filters the
    /// target out).
    pub(crate) fn begin(
        enabled: bool,
        started: Instant,
        request_id: &HeaderValue,
        client: impl FnOnce() -> IpAddr,
        method: &Method,
        uri: &Uri,
        version: Version,
    ) -> Option<Arc<Access>> {
        if !enabled || !tracing::enabled!(target: "embedgate::access", tracing::Level::INFO) {
            return None;
        }
        Some(Arc::new(Access {
            started,
            request_id: request_id.clone(),
            client: client(),
            method: method.clone(),
            uri: uri.clone(),
            version,
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            answer: OnceLock::new(),
        }))
    }

    /// Records the answer (the first one counts).
    pub(crate) fn answered(&self, answer: Answer) {
        let _ = self.answer.set(answer);
    }

    /// The line, in `format`, ending in a newline.
    fn write_line(&self, format: LogFormat, now: SystemTime, out: &mut Vec<u8>) {
        let answer = self.answer.get();
        let elapsed_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let path = super::redacted_target(&self.uri);
        // Enough for every field but the variable ones, so that the pushes
        // below never grow the buffer.
        out.reserve(
            LINE_BYTES
                + path.len()
                + self.request_id.len()
                + answer.and_then(|a| a.app.as_ref()).map_or(0, |app| app.len()),
        );
        let mut line = Line { out, format };
        line.open(now);
        line.str(key!("request_id"), self.request_id.to_str().unwrap_or(""));
        line.ip(key!("client"), self.client);
        line.str(key!("method"), self.method.as_str());
        line.str(key!("path"), &path);
        line.str(key!("version"), version_name(self.version));
        if let Some(answer) = answer {
            line.str(key!("route"), answer.route.name());
            if let Some(app) = &answer.app {
                line.str(key!("app"), app);
            }
        }
        line.number(key!("status"), u64::from(answer.map_or(CLIENT_CLOSED, |a| a.status)));
        line.number(key!("bytes_in"), self.received.load(Ordering::Relaxed));
        line.number(key!("bytes_out"), self.sent.load(Ordering::Relaxed));
        line.number(key!("elapsed_us"), elapsed_us);
        if let Some(upstream) = answer.and_then(|a| a.upstream) {
            if let Some(addr) = upstream.addr {
                line.addr(key!("upstream"), addr);
            }
            line.number(key!("upstream_status"), u64::from(upstream.status));
        }
        line.close();
    }
}

impl Tally for Access {
    fn count(&self, direction: Direction, bytes: u64) {
        let counter = match direction {
            Direction::Received => &self.received,
            Direction::Sent => &self.sent,
        };
        counter.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        let Some((sink, format)) = output() else {
            return;
        };
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return;
            };
            line.clear();
            self.write_line(format, SystemTime::now(), &mut line);
            sink.append(&line, false);
        });
    }
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

/// A line's bytes besides its path, request id and app id: the prefix,
/// the keys, numbers and addresses (an IPv6 address at most 47).
const LINE_BYTES: usize = 512;

/// A field's name as each format writes it before the value.
struct Key {
    /// ` name=`
    text: &'static str,
    /// `,"name":`
    json: &'static str,
}

/// The [`Key`] of a field name, made at compile time.
macro_rules! key {
    ($name:literal) => {
        &Key {
            text: concat!(" ", $name, "="),
            json: concat!(",\"", $name, "\":"),
        }
    };
}
use key;

/// A line being written: `key=value` pairs after tracing's text prefix, or
/// one JSON object with tracing's keys. Numbers and IPv4 addresses are
/// written a byte at a time into room reserved beforehand: the line is on
/// every request, and `core::fmt` or a `memcpy` per piece would be most of
/// its cost.
struct Line<'a> {
    out: &'a mut Vec<u8>,
    format: LogFormat,
}

impl Line<'_> {
    fn open(&mut self, now: SystemTime) {
        match self.format {
            LogFormat::Text => {
                timestamp(now, self.out);
                self.out.extend_from_slice(b"  INFO embedgate::access: request");
            }
            LogFormat::Json => {
                self.out.extend_from_slice(b"{\"timestamp\":\"");
                timestamp(now, self.out);
                self.out.extend_from_slice(
                    b"\",\"level\":\"INFO\",\"target\":\"embedgate::access\",\"message\":\"request\"",
                );
            }
        }
    }

    fn key(&mut self, key: &Key) {
        let name = match self.format {
            LogFormat::Text => key.text,
            LogFormat::Json => key.json,
        };
        self.out.extend_from_slice(name.as_bytes());
    }

    fn str(&mut self, key: &Key, value: &str) {
        self.key(key);
        match self.format {
            LogFormat::Text => self.out.extend_from_slice(value.as_bytes()),
            LogFormat::Json => json_string(value, self.out),
        }
    }

    fn number(&mut self, key: &Key, value: u64) {
        self.key(key);
        decimal(value, self.out);
    }

    fn ip(&mut self, key: &Key, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.ipv4(key, v4, None),
            IpAddr::V6(_) => self.display(key, format_args!("{ip}")),
        }
    }

    fn addr(&mut self, key: &Key, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(v4) => self.ipv4(key, *v4.ip(), Some(v4.port())),
            SocketAddr::V6(_) => self.display(key, format_args!("{addr}")),
        }
    }

    /// An IPv4 address (and port) by hand, the common case: written into a
    /// buffer on the stack and copied once.
    fn ipv4(&mut self, key: &Key, ip: Ipv4Addr, port: Option<u16>) {
        self.key(key);
        let quoted = self.format == LogFormat::Json;
        // `"255.255.255.255:65535"`
        let mut text = [0u8; 23];
        let mut len = 0;
        let mut put = |byte: u8| {
            text[len] = byte;
            len += 1;
        };
        if quoted {
            put(b'"');
        }
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                put(b'.');
            }
            if octet >= 100 {
                put(b'0' + octet / 100);
            }
            if octet >= 10 {
                put(b'0' + octet / 10 % 10);
            }
            put(b'0' + octet % 10);
        }
        if let Some(port) = port {
            put(b':');
            let (digits, at) = digits(u64::from(port));
            for &digit in &digits[at..] {
                put(digit);
            }
        }
        if quoted {
            put(b'"');
        }
        self.out.extend_from_slice(&text[..len]);
    }

    fn display(&mut self, key: &Key, value: std::fmt::Arguments<'_>) {
        use std::io::Write;
        self.key(key);
        let quoted = self.format == LogFormat::Json;
        if quoted {
            self.out.push(b'"');
        }
        // Addresses have nothing a JSON string must escape.
        let _ = self.out.write_fmt(value);
        if quoted {
            self.out.push(b'"');
        }
    }

    fn close(&mut self) {
        if self.format == LogFormat::Json {
            self.out.push(b'}');
        }
        self.out.push(b'\n');
    }
}

/// `value` in decimal, a byte at a time.
fn decimal(value: u64, out: &mut Vec<u8>) {
    let (digits, at) = digits(value);
    for &digit in &digits[at..] {
        out.push(digit);
    }
}

/// The decimal digits of `value`: the buffer, and where they start in it.
fn digits(value: u64) -> ([u8; 20], usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    (digits, at)
}

/// `value` as a JSON string (RFC 8259 §7).
fn json_string(value: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in value.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..0x20 | 0x7f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// `now` as tracing's timestamps read (RFC 3339, UTC, microseconds):
/// `2026-12-01T22:30:00.123456Z`. The part up to the second is kept per
/// thread and made again only when the second changes.
fn timestamp(now: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let prefix = SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, date_time(secs));
        }
        cached.1
    });
    out.extend_from_slice(&prefix);
    out.push(b'.');
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

/// [`timestamp`] as a string.
pub(crate) fn timestamp_string(now: SystemTime) -> String {
    let mut out = Vec::with_capacity(27);
    timestamp(now, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time.
fn date_time(secs: u64) -> [u8; 19] {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut text = [0u8; 19];
    let mut put = |at: usize, value: u32, width: usize| {
        let mut rest = value;
        for i in (0..width).rev() {
            text[at + i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    };
    put(0, u32::try_from(t.year()).unwrap_or(0), 4);
    put(5, u32::from(u8::from(t.month())), 2);
    put(8, u32::from(t.day()), 2);
    put(11, u32::from(t.hour()), 2);
    put(14, u32::from(t.minute()), 2);
    put(17, u32::from(t.second()), 2);
    text[4] = b'-';
    text[7] = b'-';
    text[10] = b'T';
    text[13] = b':';
    text[16] = b':';
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record() -> Access {
        Access {
            started: Instant::now(),
            request_id: HeaderValue::from_static("id\"1"),
            client: IpAddr::from([127, 0, 0, 1]),
            method: Method::GET,
            uri: "/a?b=%22c%22&personal-access-token=pat_x".parse().unwrap_or_default(),
            version: Version::HTTP_2,
            received: AtomicU64::new(3),
            sent: AtomicU64::new(0),
            answer: OnceLock::new(),
        }
    }

    fn line(access: &Access, format: LogFormat) -> String {
        let mut out = Vec::new();
        let at = UNIX_EPOCH + Duration::from_micros(1_796_163_000_123_456);
        access.write_line(format, at, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn the_timestamp_reads_like_tracings() {
        let mut out = Vec::new();
        timestamp(UNIX_EPOCH + Duration::from_micros(1_796_163_000_000_042), &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "2026-12-01T22:10:00.000042Z");
        out.clear();
        timestamp(UNIX_EPOCH, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn a_json_line_is_one_object_with_every_field_once() {
        let access = record();
        access.count(Direction::Sent, 10);
        access.count(Direction::Sent, 5);
        access.answered(Answer {
            route: RouteKind::Embed,
            app: Some("app-1".into()),
            status: 200,
            upstream: Some(UpstreamSeen {
                addr: Some(SocketAddr::from(([10, 0, 0, 1], 8080))),
                status: 201,
            }),
        });
        let text = line(&access, LogFormat::Json);
        assert!(text.ends_with("}\n"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2026-12-01T22:10:00.123456Z", "level": "INFO",
                "target": "embedgate::access", "message": "request",
                "request_id": "id\"1", "client": "127.0.0.1", "method": "GET",
                "path": "/a?b=%22c%22&personal-access-token=REDACTED", "version": "HTTP/2.0", "route": "embed",
                "app": "app-1", "status": 200, "bytes_in": 3, "bytes_out": 15,
                "elapsed_us": v["elapsed_us"].as_u64().unwrap_or(u64::MAX),
                "upstream": "10.0.0.1:8080", "upstream_status": 201,
            })
        );
        assert_eq!(text.matches("\"target\"").count(), 1);
    }

    #[test]
    fn a_request_the_client_left_logs_499_and_no_upstream() {
        let access = record();
        let text = line(&access, LogFormat::Text);
        assert!(
            text.starts_with(
                "2026-12-01T22:10:00.123456Z  INFO embedgate::access: request request_id=id\"1 client=127.0.0.1 \
                 method=GET path=/a?b=%22c%22&personal-access-token=REDACTED version=HTTP/2.0 status=499 bytes_in=3 bytes_out=0 elapsed_us="
            ),
            "{text}"
        );
        assert!(!text.contains("upstream") && !text.contains("route="), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn ipv6_addresses_are_written_whole() {
        let mut access = record();
        access.client = "2001:db8::1".parse().unwrap_or(access.client);
        access.answered(Answer {
            route: RouteKind::Passthrough,
            app: None,
            status: 502,
            upstream: Some(UpstreamSeen {
                addr: "[::1]:8443".parse().ok(),
                status: 502,
            }),
        });
        let text = line(&access, LogFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(
            (&v["client"], &v["upstream"]),
            (&"2001:db8::1".into(), &"[::1]:8443".into()),
            "{text}"
        );
    }

    #[test]
    fn ipv4_addresses_read_as_display_writes_them() {
        let cases = [
            ([0, 0, 0, 0], 0),
            ([255, 255, 255, 255], 65535),
            ([9, 10, 99, 100], 80),
            ([1, 20, 3, 199], 8080),
        ];
        for (ip, port) in cases {
            let addr = SocketAddr::from((ip, port));
            for format in [LogFormat::Text, LogFormat::Json] {
                let (mut with_port, mut without) = (Vec::new(), Vec::new());
                Line {
                    out: &mut with_port,
                    format,
                }
                .addr(key!("upstream"), addr);
                Line {
                    out: &mut without,
                    format,
                }
                .ip(key!("client"), addr.ip());
                let (with_port, without) = (String::from_utf8_lossy(&with_port), String::from_utf8_lossy(&without));
                match format {
                    LogFormat::Text => {
                        assert_eq!(with_port, format!(" upstream={addr}"));
                        assert_eq!(without, format!(" client={}", addr.ip()));
                    }
                    LogFormat::Json => {
                        assert_eq!(with_port, format!(",\"upstream\":\"{addr}\""));
                        assert_eq!(without, format!(",\"client\":\"{}\"", addr.ip()));
                    }
                }
            }
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 100, 65535, u64::MAX] {
            let mut out = Vec::new();
            decimal(n, &mut out);
            assert_eq!(String::from_utf8_lossy(&out), n.to_string());
        }
    }

    #[test]
    fn control_characters_are_escaped_in_json() {
        let mut out = Vec::new();
        json_string("a\u{1}\n\\", &mut out);
        assert_eq!(String::from_utf8_lossy(&out), r#""a\u0001\u000a\\""#);
    }
}
