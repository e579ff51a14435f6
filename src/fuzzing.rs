//! Entry points for the fuzz targets in `fuzz/` only: each feeds arbitrary
//! bytes to the gateway's own parsing code — never a copy of it — and
//! checks what must hold of the result. A panic is a finding. Not a stable
//! API.

use std::path::Path;
use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderValue};
use http::Request;

use crate::config::{self, Config, UserSource};
use crate::embed::cookies;
use crate::router::{self, Route};
use crate::{api, query, token};

/// The cookie name the targets look for.
const COOKIE_NAME: &str = "embedgate_session";

/// A parsed minimal config, for the limits the mint body is checked against.
fn base() -> &'static Config {
    static BASE: OnceLock<Config> = OnceLock::new();
    BASE.get_or_init(|| {
        let text = "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://gw.example\"\n\
                    [api]\ntoken_sha256 = [\"0000000000000000000000000000000000000000000000000000000000000000\"]\n\
                    [identity]\nusers = \"portal\"\n";
        match config::parse(text, Path::new("fuzz.toml")) {
            Ok(config) => config,
            Err(errors) => panic!("the fuzz targets' own config is invalid: {errors}"),
        }
    })
}

/// `gateway.toml` text: parsed or refused with errors, never a panic.
pub fn config_text(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = config::parse(text, Path::new("fuzz.toml"));
    }
}

/// A mint body (SPEC §3), with configured and with portal-vouched users:
/// refused with a 4xx, or a request whose email is lowercase and whose app
/// id is a lowercase UUID.
pub fn mint_body(data: &[u8]) {
    for users in [UserSource::Config, UserSource::Portal] {
        match api::mint_request(data, &base().pat, users) {
            Ok(request) => {
                assert_eq!(request.email, request.email.to_ascii_lowercase());
                assert!(config::is_uuid(&request.app_id), "{:?}", request.app_id);
                assert_eq!(request.app_id, request.app_id.to_ascii_lowercase());
                assert!(request.session_expiry_minutes >= 1 && request.pat_expiry_seconds >= 1);
            }
            Err(error) => assert!(error.status().is_client_error(), "{error}"),
        }
    }
}

/// `Cookie` fields: the session cookies taken out are exactly those named
/// so, and none is left behind for the upstream.
pub fn cookie_fields(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for field in data.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(field) {
            headers.append(header::COOKIE, value);
        }
    }
    let taken = cookies::take(&mut headers, COOKIE_NAME);
    // Read as the pairs a server would read, bytes and all (a field that
    // is no UTF-8 text still carries cookies).
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            let name = name.trim_ascii_start().trim_ascii_end();
            assert!(
                name != COOKIE_NAME.as_bytes() || !pair.contains(&b'='),
                "a session cookie was left for the upstream: {value:?}"
            );
        }
    }
    drop(taken);
}

/// A query string: a PAT is found only as `pat_` and 64 lowercase hex
/// digits.
pub fn pat_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    for pair in query::pairs(query) {
        if token::looks_like_pat(&pair.value) {
            let hex = &pair.value[4..];
            assert!(pair.value.starts_with("pat_") && hex.len() == 64);
            assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
    }
}

/// A request target (and, after a line feed, a `Host`; `gw` without
/// one): whatever the request rules admit is routed, and an admitted path
/// in the gateway's trees has no dot segment, empty segment, backslash or
/// encoded slash, however encoded.
pub fn request_target(data: &[u8]) {
    let (target, host) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, Some(&b"gw"[..])),
    };
    let mut builder = Request::builder().uri(target);
    if let Some(host) = host {
        builder = builder.header(header::HOST, host);
    }
    let Ok(req) = builder.body(()) else {
        return;
    };
    // Once as the gateway's host, once as an app's own host, whose every
    // path gets the rules of the gateway's trees.
    for app_host in [false, true] {
        if router::check(&req, 65_536, app_host).is_err() {
            continue;
        }
        let path = req.uri().path();
        // No dot segment reaches any upstream, in any tree.
        for segment in decode_fully(path).split(|&b| b == b'/' || b == b'\\') {
            let name = segment
                .split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii_end();
            assert!(name != b"." && name != b"..", "a dot segment was admitted: {path:?}");
        }
        let rest = match router::route(path, true) {
            _ if app_host => path,
            Route::Api(rest) | Route::Embed(rest) | Route::WellKnown(rest) => rest,
            _ => continue,
        };
        for segment in decode_fully(rest).split(|&b| b == b'/') {
            assert!(!segment.contains(&b'\\') && !segment.contains(&0), "admitted: {path:?}");
        }
        assert!(!rest.contains("//"), "an empty segment was admitted: {path:?}");
        for encoded in ["%2f", "%5c"] {
            assert!(
                !String::from_utf8_lossy(&decode_once(rest.as_bytes()))
                    .to_ascii_lowercase()
                    .contains(encoded),
                "admitted: {path:?}"
            );
        }
    }
}

/// `%XX` decoded, twice over (what an upstream that decodes twice reads).
fn decode_fully(s: &str) -> Vec<u8> {
    decode_once(&decode_once(s.as_bytes()))
}

fn decode_once(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}
