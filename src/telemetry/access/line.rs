//! An access line's bytes: the text or JSON shape tracing would write,
//! written by index into a buffer made long enough beforehand (the line is
//! on every request). [`super::Access`] says what goes in it.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use http::Version;

use super::super::LogFormat;
use crate::metrics::RouteKind;

/// The version as tracing's `Debug` of it reads.
pub(super) fn version_name(version: Version) -> &'static Short {
    const HTTP_09: Short = short("HTTP/0.9");
    const HTTP_10: Short = short("HTTP/1.0");
    const HTTP_11: Short = short("HTTP/1.1");
    const HTTP_2: Short = short("HTTP/2.0");
    const HTTP_3: Short = short("HTTP/3.0");
    const OTHER: Short = short("HTTP");
    match version {
        Version::HTTP_09 => &HTTP_09,
        Version::HTTP_10 => &HTTP_10,
        Version::HTTP_11 => &HTTP_11,
        Version::HTTP_2 => &HTTP_2,
        Version::HTTP_3 => &HTTP_3,
        _ => &OTHER,
    }
}

/// Each route kind's name, by the kind's discriminant.
pub(super) const ROUTE_NAMES: [Short; RouteKind::ALL.len()] = {
    let mut names = [short(""); RouteKind::ALL.len()];
    let mut i = 0;
    while i < RouteKind::ALL.len() {
        let route = RouteKind::ALL[i];
        names[route as usize] = short(route.name());
        i += 1;
    }
    names
};

/// A name of a few bytes (a version, a route) padded to [`SHORT_BYTES`],
/// so that writing it is one copy of a constant size.
#[derive(Clone, Copy)]
pub(super) struct Short {
    text: [u8; SHORT_BYTES],
    len: usize,
}

const SHORT_BYTES: usize = 16;

const fn short(name: &str) -> Short {
    let name = name.as_bytes();
    assert!(name.len() <= SHORT_BYTES);
    let mut text = [0u8; SHORT_BYTES];
    let mut i = 0;
    while i < name.len() {
        text[i] = name[i];
        i += 1;
    }
    Short { text, len: name.len() }
}

/// A line's bytes besides its path, method, request id and app id: the
/// prefix, the keys, the quotes, numbers and addresses (an IPv6 address at
/// most 47), with room to spare for the pieces written a whole chunk at a
/// time.
pub(super) const LINE_BYTES: usize = 640;

/// A field's name as each format writes it before the value.
pub(super) struct FieldName {
    /// ` name=`
    pub(super) text: &'static str,
    /// `,"name":`
    pub(super) json: &'static str,
}

/// A field's [`FieldName`], made at compile time.
macro_rules! key {
    ($name:literal) => {
        &$crate::telemetry::access::line::FieldName {
            text: concat!(" ", $name, "="),
            json: concat!(",\"", $name, "\":"),
        }
    };
}
pub(super) use key;

/// A line being written: `key=value` pairs after tracing's text prefix, or
/// one JSON object with tracing's keys. It is written into a buffer made
/// long enough for the whole line beforehand, each piece by index: the
/// line is on every request, and growing a `Vec` or calling `memcpy` piece
/// by piece was most of its cost. The helpers are inlined, so that the keys
/// and short names are copied as constants. (Were the buffer ever short, a
/// piece would be left out: never a panic.)
pub(super) struct Line<'a> {
    pub(super) buf: &'a mut [u8],
    pub(super) len: usize,
    pub(super) format: LogFormat,
}

impl Line<'_> {
    #[inline(always)]
    pub(super) fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(to) = self.buf.get_mut(self.len..end) {
            to.copy_from_slice(bytes);
            self.len = end;
        }
    }

    #[inline(always)]
    pub(super) fn byte(&mut self, byte: u8) {
        if let Some(to) = self.buf.get_mut(self.len) {
            *to = byte;
            self.len += 1;
        }
    }

    pub(super) fn open(&mut self, now: SystemTime) {
        match self.format {
            LogFormat::Text => {
                self.put(&timestamp(now));
                self.put(b"  INFO embedgate::access: request");
            }
            LogFormat::Json => {
                self.put(b"{\"timestamp\":\"");
                self.put(&timestamp(now));
                self.put(b"\",\"level\":\"INFO\",\"target\":\"embedgate::access\",\"message\":\"request\"");
            }
        }
    }

    /// A `put` in each arm, so that each copies a constant length.
    #[inline(always)]
    pub(super) fn key(&mut self, key: &FieldName) {
        match self.format {
            LogFormat::Text => self.put(key.text.as_bytes()),
            LogFormat::Json => self.put(key.json.as_bytes()),
        }
    }

    /// `value` is UTF-8 (a `str`'s bytes, or a request id: ASCII).
    #[inline(always)]
    pub(super) fn str(&mut self, key: &FieldName, value: &[u8]) {
        self.key(key);
        match self.format {
            LogFormat::Text => self.put(value),
            LogFormat::Json => self.json_string(value),
        }
    }

    /// A name with nothing to escape.
    #[inline(always)]
    pub(super) fn short(&mut self, key: &FieldName, name: &Short) {
        self.key(key);
        let quoted = self.format == LogFormat::Json;
        if quoted {
            self.byte(b'"');
        }
        if let Some(to) = self.buf.get_mut(self.len..self.len + SHORT_BYTES) {
            to.copy_from_slice(&name.text);
            self.len += name.len;
        }
        if quoted {
            self.byte(b'"');
        }
    }

    #[inline(always)]
    pub(super) fn number(&mut self, key: &FieldName, value: u64) {
        self.key(key);
        self.put(itoa::Buffer::new().format(value).as_bytes());
    }

    pub(super) fn ip(&mut self, key: &FieldName, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.ipv4(key, v4, None),
            IpAddr::V6(_) => self.display(key, format_args!("{ip}")),
        }
    }

    pub(super) fn addr(&mut self, key: &FieldName, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(v4) => self.ipv4(key, *v4.ip(), Some(v4.port())),
            SocketAddr::V6(_) => self.display(key, format_args!("{addr}")),
        }
    }

    /// An IPv4 address (and port) by hand, the common case: octets from a
    /// table, each copied as three bytes wherever it starts. The text of
    /// the last address of each kind is kept per thread: a connection's
    /// client and its upstream stay the same from request to request, so
    /// most lines copy it rather than write it again.
    fn ipv4(&mut self, key: &FieldName, ip: Ipv4Addr, port: Option<u16>) {
        thread_local! {
            /// The last address without a port (a client) and with one (an upstream).
            static LAST: RefCell<[Ipv4Text; 2]> = const { RefCell::new([Ipv4Text::NONE; 2]) };
        }
        self.key(key);
        let start = self.len;
        let Some(text) = self.buf.get_mut(start..start + IPV4_BYTES) else {
            return;
        };
        let quoted = self.format == LogFormat::Json;
        let id =
            u64::from(u32::from(ip)) | port.map_or(0, |port| u64::from(port) << 32 | 1 << 48) | u64::from(quoted) << 49;
        let slot = usize::from(port.is_some());
        // A re-entered thread-local (never expected) writes it afresh.
        let written = LAST
            .with(|last| {
                let mut last = last.try_borrow_mut().ok()?;
                let last = &mut last[slot];
                if last.id != id {
                    *last = Ipv4Text::of(ip, port, quoted, id);
                }
                Some(*last)
            })
            .unwrap_or_else(|| Ipv4Text::of(ip, port, quoted, id));
        text.copy_from_slice(&written.text);
        self.len = start + written.len;
    }

    pub(super) fn display(&mut self, key: &FieldName, value: std::fmt::Arguments<'_>) {
        use std::io::Write;
        self.key(key);
        let quoted = self.format == LogFormat::Json;
        if quoted {
            self.byte(b'"');
        }
        // Addresses have nothing a JSON string must escape.
        let mut rest = self.buf.get_mut(self.len..).unwrap_or_default();
        let room = rest.len();
        let _ = rest.write_fmt(value);
        self.len += room - rest.len();
        if quoted {
            self.byte(b'"');
        }
    }

    /// `value` (UTF-8) as a JSON string (RFC 8259 §7): the runs between the
    /// bytes to escape are copied whole.
    pub(super) fn json_string(&mut self, value: &[u8]) {
        self.byte(b'"');
        let mut rest = value;
        while let Some(at) = rest.iter().position(|&b| matches!(b, b'"' | b'\\' | 0..0x20 | 0x7f)) {
            self.put(&rest[..at]);
            match rest[at] {
                b'"' => self.put(b"\\\""),
                b'\\' => self.put(b"\\\\"),
                b => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.put(b"\\u00");
                    self.byte(HEX[usize::from(b >> 4)]);
                    self.byte(HEX[usize::from(b & 0xf)]);
                }
            }
            rest = &rest[at + 1..];
        }
        self.put(rest);
        self.byte(b'"');
    }

    pub(super) fn close(&mut self) {
        if self.format == LogFormat::Json {
            self.byte(b'}');
        }
        self.byte(b'\n');
    }
}

/// `value` in decimal filling the whole of `to`, right-aligned and padded
/// with zeros (a timestamp's fields): what `itoa` does not do.
fn zero_padded(value: u64, to: &mut [u8]) {
    let mut rest = value;
    for digit in to.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
}

/// `"255.255.255.255:65535"`, and room for an octet's three bytes written
/// whole wherever one starts.
const IPV4_BYTES: usize = 24;

/// An IPv4 address (and port, and quotes) as a line writes it.
#[derive(Clone, Copy)]
struct Ipv4Text {
    /// The address, the port, and whether quoted, as one number.
    id: u64,
    text: [u8; IPV4_BYTES],
    len: usize,
}

impl Ipv4Text {
    /// Matches no address.
    const NONE: Ipv4Text = Ipv4Text {
        id: u64::MAX,
        text: [0; IPV4_BYTES],
        len: 0,
    };

    fn of(ip: Ipv4Addr, port: Option<u16>, quoted: bool, id: u64) -> Ipv4Text {
        let mut text = [0u8; IPV4_BYTES];
        let mut len = usize::from(quoted);
        text[0] = b'"';
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                text[len] = b'.';
                len += 1;
            }
            let (digits, n) = OCTETS[usize::from(octet)];
            text[len..len + 3].copy_from_slice(&digits);
            len += usize::from(n);
        }
        if let Some(port) = port {
            text[len] = b':';
            len += 1;
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(port).as_bytes();
            text[len..len + digits.len()].copy_from_slice(digits);
            len += digits.len();
        }
        if quoted {
            text[len] = b'"';
            len += 1;
        }
        Ipv4Text { id, text, len }
    }
}

/// Each octet's decimal text (padded to three bytes) and its length.
const OCTETS: [([u8; 3], u8); 256] = {
    let mut table = [([0u8; 3], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let n = i as u8;
        table[i] = if n >= 100 {
            ([b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10], 3)
        } else if n >= 10 {
            ([b'0' + n / 10, b'0' + n % 10, 0], 2)
        } else {
            ([b'0' + n, 0, 0], 1)
        };
        i += 1;
    }
    table
};

/// `now` as tracing's timestamps read (RFC 3339, UTC, microseconds):
/// `2026-12-01T22:30:00.123456Z`. The part up to the second is kept per
/// thread and made again only when the second changes.
fn timestamp(now: SystemTime) -> [u8; 27] {
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
    let mut text = [0u8; 27];
    text[..19].copy_from_slice(&prefix);
    text[19] = b'.';
    zero_padded(u64::from(since.subsec_micros()), &mut text[20..26]);
    text[26] = b'Z';
    text
}

/// [`timestamp`] as a string.
pub(crate) fn timestamp_string(now: SystemTime) -> String {
    String::from_utf8_lossy(&timestamp(now)).into_owned()
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time.
fn date_time(secs: u64) -> [u8; 19] {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut text = [0u8; 19];
    zero_padded(u64::try_from(t.year()).unwrap_or(0), &mut text[0..4]);
    zero_padded(u64::from(u8::from(t.month())), &mut text[5..7]);
    zero_padded(u64::from(t.day()), &mut text[8..10]);
    zero_padded(u64::from(t.hour()), &mut text[11..13]);
    zero_padded(u64::from(t.minute()), &mut text[14..16]);
    zero_padded(u64::from(t.second()), &mut text[17..19]);
    text[4] = b'-';
    text[7] = b'-';
    text[10] = b'T';
    text[13] = b':';
    text[16] = b':';
    text
}
