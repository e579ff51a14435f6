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
//! - **Path, everywhere**: no `.` or `..` segment, whether plain or
//!   percent-encoded once or twice (`%2e%2E`, `%252e`), since an upstream
//!   that resolves it would serve another path than the one routed (and
//!   could leave its base path); no encoded NUL (`%00`). Browsers resolve
//!   dot segments before sending, so no real client is refused.
//! - **Path, in the gateway's own trees** (the API, `/embed-apps/…` and
//!   the JWKS tree): also no empty segment (`//`) before the last, no
//!   backslash and no encoded `/` or `\` (once or twice): what an
//!   upstream or a framework could read as a segment boundary the gateway
//!   did not see. Passthrough paths keep them (`%2F` is common in REST
//!   paths) and go to the passthrough upstream untouched.
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
/// one it broke.
pub(crate) fn check<B>(req: &Request<B>, max_head: usize) -> Result<(), GatewayError> {
    if head_size(req) > max_head {
        return Err(GatewayError::HeadTooLarge);
    }
    check_host(req)?;

    let uri = req.uri();
    if req.method() == Method::CONNECT {
        // HTTP/2's extended CONNECT (RFC 8441) carries `:protocol`, which
        // hyper keeps as an extension; plain CONNECT asks for a tunnel.
        if req.version() == Version::HTTP_2 && req.extensions().get::<hyper::ext::Protocol>().is_some() {
            return Ok(());
        }
        return Err(GatewayError::MethodNotAllowed(
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        ));
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
    check_path(path)
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

/// The path rules (`path` starts with `/`); stricter in the gateway's own
/// trees. Most paths have nothing to look at twice.
fn check_path(path: &str) -> Result<(), GatewayError> {
    // Word at a time (memchr): this runs on every request.
    let bytes = path.as_bytes();
    let suspect = memchr::memchr3(b'.', b'%', b'\\', bytes).is_some()
        || memchr::memchr_iter(b'/', bytes).any(|at| bytes.get(at + 1) == Some(&b'/'));
    if !suspect {
        return Ok(());
    }
    let strict = owned_by_gateway(path);
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
        if !segment.contains(['.', '%']) {
            continue;
        }
        // As an upstream may read it: decoded once, and once more.
        let once = percent_decoded(segment.as_bytes());
        let twice = percent_decoded(&once);
        for form in [segment.as_bytes(), &once, &twice] {
            if form == b"." || form == b".." {
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

/// `bytes` with each valid `%XX` decoded; anything else kept as it is.
fn percent_decoded(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(target: &str, host: Option<&str>) -> Request<()> {
        let mut req = Request::builder().uri(target);
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        req.body(()).unwrap_or_default()
    }

    fn check(req: &Request<()>) -> Result<(), GatewayError> {
        super::check(req, 65_536)
    }

    fn refused(target: &str) -> bool {
        check(&get(target, Some("gw"))).is_err()
    }

    #[test]
    fn dot_segments_are_refused_plain_and_encoded_once_or_twice() {
        for target in [
            "/../x",
            "/a/./b",
            "/a/..",
            "/a/%2e%2E/b",
            "/a/.%2e/b",
            "/a/%252e%252e/b",
            "/embed-apps/app/../../api/ext/x",
            "/x?y=1/../..&z",
        ] {
            let is_query = target.starts_with("/x?");
            assert_eq!(refused(target), !is_query, "{target}");
        }
        for target in ["/a/..b/c.d", "/a/...", "/.well-known/x", "/a.b/.c"] {
            assert!(!refused(target), "{target}");
        }
    }

    #[test]
    fn encoded_nul_is_refused_everywhere() {
        assert!(refused("/x%00y"));
        assert!(refused("/x%2500y"));
        assert!(refused("/embed-apps/a/%00"));
    }

    #[test]
    fn the_gateway_trees_refuse_what_could_split_a_segment_elsewhere() {
        for target in [
            "/embed-apps/app//x",
            "/embed-apps/app/a%2Fb",
            "/embed-apps/app/a%252fb",
            "/embed-apps/app/a%5Cb",
            "/embed-apps/app/a\\b",
            "/api/ext//users",
        ] {
            assert!(refused(target), "{target}");
        }
        // The passthrough forwards them as sent.
        for target in ["/files/a%2Fb", "/a//b", "/a%5Cb", "/a\\b", "/embed-apps/app/"] {
            assert!(!refused(target), "{target}");
        }
    }

    #[test]
    fn host_must_be_one_valid_authority() {
        assert!(check(&get("/", None)).is_err(), "HTTP/1.1 without Host");
        let mut two = get("/", Some("a"));
        two.headers_mut()
            .append(header::HOST, http::HeaderValue::from_static("b"));
        assert!(check(&two).is_err());
        for bad in [
            "a b",
            "user@host",
            "host:port",
            "[::1",
            "gw:http",
            "gw:65536",
            "gw:1:2",
            "[::1]x",
            ":80",
        ] {
            assert!(check(&get("/", Some(bad))).is_err(), "{bad}");
        }
        for good in [
            "gw",
            "gw.example.com:8443",
            "[::1]:80",
            "[::1]",
            "127.0.0.1",
            "",
            "gw:",
            "gw:65535",
        ] {
            assert!(check(&get("/", Some(good))).is_ok(), "{good}");
        }
        let mut old = get("/", None);
        *old.version_mut() = Version::HTTP_10;
        assert!(check(&old).is_ok(), "HTTP/1.0 may leave Host out");
    }

    #[test]
    fn a_head_over_the_limit_is_431() {
        let mut big = get("/", Some("gw"));
        big.headers_mut().insert(
            "x-big",
            http::HeaderValue::from_str(&"a".repeat(70_000)).unwrap_or(http::HeaderValue::from_static("")),
        );
        assert!(matches!(check(&big), Err(GatewayError::HeadTooLarge)));
    }

    #[test]
    fn only_origin_and_absolute_form_are_routed() {
        assert!(!refused("http://gw/x"));
        assert!(refused("http://user@gw/x"));
        assert!(refused("http://gw:99999/x"));
        assert!(refused("ftp://gw/x"));
        let mut connect = get("gw:443", Some("gw:443"));
        *connect.method_mut() = Method::CONNECT;
        assert!(matches!(check(&connect), Err(GatewayError::MethodNotAllowed(_))));
        assert!(refused("*"));
    }

    #[test]
    fn gateway_trees_match_whole_segments() {
        assert_eq!(
            route("/api/ext/users/personal-access-token", false),
            Route::Api("users/personal-access-token")
        );
        assert_eq!(route("/api/ext", false), Route::Api(""));
        assert_eq!(route("/api/extra", true), Route::Passthrough);
        assert_eq!(route("/embed-apps/abc/x", true), Route::Embed("abc/x"));
        assert_eq!(route("/embed-appsx", false), Route::NotFound);
        assert_eq!(
            route("/.well-known/embedgate/jwks.json", true),
            Route::WellKnown("jwks.json")
        );
    }

    #[test]
    fn the_helper_has_two_paths_of_its_own() {
        assert_eq!(route("/embedgate.js", true), Route::Helper { module: false });
        assert_eq!(route("/embedgate.mjs", false), Route::Helper { module: true });
        assert_eq!(route("/embedgate.json", true), Route::Passthrough);
        assert_eq!(route("/x/embedgate.js", false), Route::NotFound);
    }

    #[test]
    fn other_paths_go_to_passthrough_only_when_configured() {
        assert_eq!(route("/", true), Route::Passthrough);
        assert_eq!(route("/", false), Route::NotFound);
        assert_eq!(route("/api", true), Route::Passthrough);
    }
}
