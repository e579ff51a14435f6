//! The one place that maps a request path to a route, and the rules a
//! request must meet before it is routed ([`check`]).
//!
//! The gateway owns three path trees — `/api/ext`, `/embed-apps` and
//! `/.well-known/embedgate` — matched segment by segment, so `/api/extra` is
//! not the API, and two paths: the host-page helper, `/embedgate.js` and
//! `/embedgate.mjs`. Everything else is `[passthrough]` traffic when
//! configured.
//!
//! # Request rules (SECURITY.md, "Request targets")
//!
//! A request is refused before routing, so that what the gateway routes is
//! exactly what the upstream is asked for:
//!
//! - **`Host`**: exactly one in HTTP/1.1 (RFC 9112 §3.2), at most one in
//!   HTTP/1.0 and HTTP/2, each a valid authority (`host[:port]`); in
//!   HTTP/2, equal to `:authority` when both are sent (RFC 9113 §8.3.1).
//!   400 otherwise.
//! - **Target form**: origin-form (`/path?query`), or absolute-form
//!   (`http://host/path`, RFC 9112 §3.2.2: routed by its path, its
//!   authority being the host). Authority-form is `CONNECT`'s, which is
//!   served only as HTTP/2's extended CONNECT for WebSockets (RFC 8441):
//!   405 otherwise. Asterisk-form (`OPTIONS *`) and anything else: 400.
//! - **Path, everywhere**: no `.` or `..` segment in any spelling an
//!   upstream may read as one: plain or percent-encoded once or twice
//!   (`%2e%2E`, `%252e`), with a path parameter (`..;x`, Tomcat and
//!   Spring), with trailing whitespace, as overlong UTF-8 (`%c0%ae`), as
//!   IIS's `%u002e`, or as a compatibility character that NFKC folds to
//!   dots (fullwidth `．`, `‥`) — since an upstream that resolves it would
//!   serve another path than the one routed (and could leave its base
//!   path); no NUL (`%00`) in any of those spellings. Browsers resolve dot
//!   segments before sending, so no real client is refused.
//! - **Path, in the gateway's own trees** (the API, `/embed-apps/…` and
//!   the JWKS tree) **and on an app's own host**: also no empty segment
//!   (`//`) before the last, no backslash and no `/` or `\` in any of the
//!   spellings above: what an upstream or a framework could read as a
//!   segment boundary the gateway did not see (Node's URL parser reads
//!   `/..\admin` as `/admin`). Passthrough paths keep them (`%2F` is common
//!   in REST paths) and go to the passthrough upstream untouched.
//! - **Matching**: paths are routed as sent, never decoded or case-folded
//!   (RFC 3986 §6.2.2.1: `/API/ext` is not the API, and goes to the
//!   passthrough); an app id segment is matched ignoring ASCII case, never
//!   decoded. An app served at its own host gets every path of that host,
//!   the gateway's trees included, and never reaches the gateway's API.
//!
//! The query string is not a path: it is forwarded as sent.

use std::borrow::Cow;

use http::{header, Method, Request, Version};

use crate::error::GatewayError;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/api/ext/<rest>`: the PAT API (SPEC §3, §6); holds `<rest>`.
    Api(&'a str),
    /// `/embed-apps/<rest>`: PAT exchange and embed proxying (SPEC §4, §5).
    Embed(&'a str),
    /// `/.well-known/embedgate/<rest>`: the JWKS and friends.
    WellKnown(&'a str),
    /// `/embedgate.js` (`false`) or `/embedgate.mjs` (`true`, the ES
    /// module): the host-page helper.
    Helper { module: bool },
    /// Anything else, with `[passthrough]` configured.
    Passthrough,
    /// Anything else, without it.
    NotFound,
}

const API: &str = "/api/ext";
const EMBED: &str = "/embed-apps";
const WELL_KNOWN: &str = "/.well-known/embedgate";

/// Routes `path` (the request target's path, without the query).
pub(crate) fn route(path: &str, has_passthrough: bool) -> Route<'_> {
    if path == "/embedgate.js" || path == "/embedgate.mjs" {
        Route::Helper {
            module: path.ends_with(".mjs"),
        }
    } else if let Some(rest) = under(path, API) {
        Route::Api(rest)
    } else if let Some(rest) = under(path, EMBED) {
        Route::Embed(rest)
    } else if let Some(rest) = under(path, WELL_KNOWN) {
        Route::WellKnown(rest)
    } else if has_passthrough {
        Route::Passthrough
    } else {
        Route::NotFound
    }
}

/// `Some(rest)` when `path` is `prefix` itself or below it (`rest` without
/// the leading slash).
fn under<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// Checks `req` against the request rules above; the error says which
/// one it broke. `app_host`: the request is for an app on its own host,
/// whose every path gets the rules of the gateway's own trees.
pub(crate) fn check<B>(req: &Request<B>, max_head: usize, app_host: bool) -> Result<(), GatewayError> {
    if head_size(req) > max_head {
        return Err(GatewayError::HeadTooLarge);
    }
    check_host(req)?;

    let uri = req.uri();
    if req.method() == Method::CONNECT {
        // HTTP/2's extended CONNECT (RFC 8441) carries `:protocol`, which
        // hyper keeps as an extension: WebSockets are served, no other
        // protocol; plain CONNECT asks for a tunnel.
        let websocket = req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
        if req.version() != Version::HTTP_2 || !websocket {
            return Err(GatewayError::MethodNotAllowed(
                "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
            ));
        }
    }
    // An absolute-form target's or HTTP/2's authority, checked as `Host` is.
    if let Some(authority) = uri.authority() {
        if authority.as_str().contains('@') || !port_is_valid(authority.as_str()) {
            return Err(GatewayError::BadRequest("the request's authority is not a valid host"));
        }
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(GatewayError::BadRequest("request target must be a path"));
    }
    if let Some(scheme) = uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(GatewayError::BadRequest("request target must be an http or https URL"));
        }
    }
    check_path(path, app_host || owned_by_gateway(path))
}

/// About the size of the request's head as sent: its target and fields,
/// each with its separators.
fn head_size<B>(req: &Request<B>) -> usize {
    let fields: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) + req.method().as_str().len() + fields + 12
}

/// `Host` as the rules say: counted, parsed, and (HTTP/2) compared with
/// `:authority`.
fn check_host<B>(req: &Request<B>) -> Result<(), GatewayError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest(
            "a request must have one Host header, not several",
        ));
    }
    let Some(host) = host else {
        return match req.version() {
            Version::HTTP_11 => Err(GatewayError::BadRequest("an HTTP/1.1 request must have a Host header")),
            _ => Ok(()),
        };
    };
    // An empty value is what a client sends for a target without an
    // authority (RFC 9112 §3.2).
    if host.is_empty() {
        return Ok(());
    }
    // `uri-host [":" port]` (RFC 3986 §3.2.2): a name, an IPv4 address or
    // a bracketed IPv6 one; no userinfo, path or whitespace. Checked by
    // hand: parsing it as an `Authority` would copy it, on every request.
    let valid = host
        .as_bytes()
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%' | b':' | b'[' | b']'))
        && host.as_bytes()[0] != b':';
    let host = host.to_str().unwrap_or("");
    if !valid || !port_is_valid(host) {
        return Err(GatewayError::BadRequest("the Host header is not a valid host"));
    }
    if req.version() == Version::HTTP_2 {
        if let Some(target) = req.uri().authority() {
            if !target.as_str().eq_ignore_ascii_case(host) {
                return Err(GatewayError::BadRequest("the Host header and :authority differ"));
            }
        }
    }
    Ok(())
}

/// Whether an authority's port, if it has one, is a number up to 65535
/// (`http`'s own parser leaves the port unchecked until asked).
fn port_is_valid(authority: &str) -> bool {
    let bytes = authority.as_bytes();
    let host_end = if bytes.first() == Some(&b'[') {
        match bytes.iter().position(|&b| b == b']') {
            Some(i) => i + 1,
            None => return false,
        }
    } else {
        match bytes.iter().position(|&b| b == b':') {
            Some(i) => i,
            None => return true,
        }
    };
    match &bytes[host_end..] {
        [] | [b':'] => true,
        // Digits only; five of them no more than 65535 (same-length digit
        // strings compare as numbers).
        [b':', port @ ..] => {
            port.len() <= 5 && port.iter().all(u8::is_ascii_digit) && (port.len() < 5 || port <= &b"65535"[..])
        }
        _ => false,
    }
}

/// Whether `path` is in one of the gateway's own trees.
fn owned_by_gateway(path: &str) -> bool {
    matches!(route(path, true), Route::Api(_) | Route::Embed(_) | Route::WellKnown(_))
}

/// The path rules (`path` starts with `/`); stricter (`strict`) in the
/// gateway's own trees and on an app's own host. Most paths have nothing
/// to look at twice.
fn check_path(path: &str, strict: bool) -> Result<(), GatewayError> {
    // Word at a time (memchr): this runs on every request.
    let bytes = path.as_bytes();
    let suspect = memchr::memchr3(b'.', b'%', b'\\', bytes).is_some()
        || memchr::memchr_iter(b'/', bytes).any(|at| bytes.get(at + 1) == Some(&b'/'))
        || !bytes.is_ascii();
    if !suspect {
        return Ok(());
    }
    let segments = path[1..].split('/');
    let last = path[1..].matches('/').count();
    for (i, segment) in segments.enumerate() {
        if strict && segment.is_empty() && i < last {
            return Err(GatewayError::BadRequest(
                "empty path segments (//) are not allowed here",
            ));
        }
        if strict && segment.contains('\\') {
            return Err(GatewayError::BadRequest("backslashes are not allowed in this path"));
        }
        if segment.bytes().all(|b| b.is_ascii() && b != b'.' && b != b'%') {
            continue;
        }
        // As an upstream may read it: decoded once, and once more; each
        // with overlong and compatibility spellings folded to ASCII.
        let once = percent_decoded(segment.as_bytes());
        let twice = percent_decoded(&once);
        for form in [segment.as_bytes(), &once, &twice] {
            let form = folded(form);
            // An encoded slash or a backslash that an upstream reads as a
            // boundary may hide a dot segment inside this one (`%2e%2f`).
            if form.split(|&b| b == b'/' || b == b'\\').any(is_dot_segment) {
                return Err(GatewayError::BadRequest("dot segments are not allowed in paths"));
            }
            if form.contains(&0) {
                return Err(GatewayError::BadRequest("NUL is not allowed in paths"));
            }
            if strict && form.iter().any(|&b| b == b'/' || b == b'\\') {
                return Err(GatewayError::BadRequest("encoded slashes are not allowed in this path"));
            }
        }
    }
    Ok(())
}

/// Whether a segment (decoded, folded) reads as `.` or `..` to some
/// server: up to a path parameter (`;`, which Tomcat and Spring cut off
/// before resolving) and without trailing whitespace (which Windows
/// servers drop).
fn is_dot_segment(segment: &[u8]) -> bool {
    let end = memchr::memchr(b';', segment).unwrap_or(segment.len());
    let name = segment[..end].trim_ascii_end();
    name == b"." || name == b".."
}

/// `bytes` with each valid `%XX` decoded, and IIS's `%uXXXX` too (as
/// UTF-8); anything else kept as it is.
fn percent_decoded(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h << 4 | l) as u8);
                i += 3;
                continue;
            }
            if matches!(bytes.get(i + 1), Some(b'u' | b'U')) {
                let digits = bytes
                    .get(i + 2..i + 6)
                    .map(|d| d.iter().map(|&b| hex(b)).collect::<Option<Vec<u32>>>());
                if let Some(Some(d)) = digits {
                    let code = d.iter().fold(0, |n, d| n << 4 | d);
                    let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    i += 6;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// `bytes` with what lenient decoders read as ASCII put as that ASCII:
/// overlong UTF-8 (`C0 AE` is `.` to a decoder that does not check), and
/// the compatibility characters that NFKC folds to dots, slashes and
/// backslashes (a framework that normalises paths would see them so).
/// Everything else is kept as it is.
fn folded(bytes: &[u8]) -> Cow<'_, [u8]> {
    if bytes.is_ascii() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let lead = bytes[i];
        let len = match lead {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        let continued = bytes
            .get(i + 1..i + len)
            .is_some_and(|rest| rest.iter().all(|&b| b & 0xC0 == 0x80));
        if len == 1 || !continued {
            out.push(lead);
            i += 1;
            continue;
        }
        let payload = bytes[i + 1..i + len]
            .iter()
            .fold(u32::from(lead) & (0x7F >> len), |code, &b| {
                code << 6 | u32::from(b & 0x3F)
            });
        match payload {
            0..=0x7F => out.push(payload as u8),
            // FULLWIDTH FULL STOP, SMALL FULL STOP, ONE DOT LEADER.
            0xFF0E | 0xFE52 | 0x2024 => out.push(b'.'),
            // TWO DOT LEADER.
            0x2025 => out.extend_from_slice(b".."),
            // FULLWIDTH SOLIDUS.
            0xFF0F => out.push(b'/'),
            // FULLWIDTH and SMALL REVERSE SOLIDUS.
            0xFF3C | 0xFE68 => out.push(b'\\'),
            _ => out.extend_from_slice(&bytes[i..i + len]),
        }
        i += len;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
