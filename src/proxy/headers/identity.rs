//! `X-Embed-*` headers carry the identity the gateway vouches for (SPEC §5).
//! Whatever a client sent under that prefix is removed first, always, on
//! every route, so an upstream can trust what it finds there.
//!
//! So is any field whose name reads as one the gateway sets or trusts once
//! `_` is read as `-`: CGI-style servers (WSGI, Rack, PHP, and the
//! frameworks on them) fold both into one name (`X_Embed_User` and
//! `X-Embed-User` both become `HTTP_X_EMBED_USER`), so a client's
//! `X_Embed_User` would be joined to the gateway's. Other names holding `_`
//! are dropped too unless `server.underscores_in_headers` (as nginx's
//! `underscores_in_headers` and `ignore_invalid_headers` do by default).

use http::header::{HeaderMap, HeaderName};

const PREFIX: &[u8] = b"x-embed-";

/// Names (after `_` is read as `-`) that the gateway sets or trusts, and
/// prefixes of such names: a client's field spelled with `_` that reads as
/// one of them is always removed.
const CLAIMED: &[&[u8]] = &[b"forwarded", b"x-real-ip", b"x-request-id"];
const CLAIMED_PREFIXES: &[&[u8]] = &[PREFIX, b"x-forwarded-"];

/// Removes every `X-Embed-*` field (header names are lowercase in `http`),
/// every field that reads as a name the gateway sets or trusts when `_` is
/// read as `-`, and, unless `underscores_allowed`, every other field whose
/// name holds `_`.
pub(crate) fn strip_client_claims(headers: &mut HeaderMap, underscores_allowed: bool) {
    // One pass over the names: most requests have none of these.
    let mut spoofed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let bytes = name.as_str().as_bytes();
        let drop = if bytes.starts_with(PREFIX) {
            true
        } else if memchr::memchr(b'_', bytes).is_some() {
            !underscores_allowed || reads_as_claimed(bytes)
        } else {
            false
        };
        if drop {
            spoofed.push(name.clone());
        }
    }
    for name in spoofed {
        headers.remove(name);
    }
}

/// Whether `name` (lowercase), with each `_` read as `-`, is a name the
/// gateway sets or trusts.
fn reads_as_claimed(name: &[u8]) -> bool {
    let folded: Vec<u8> = name.iter().map(|&b| if b == b'_' { b'-' } else { b }).collect();
    CLAIMED.contains(&folded.as_slice()) || CLAIMED_PREFIXES.iter().any(|p| folded.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(names: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for name in names {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap_or(HeaderName::from_static("x-bad")),
                HeaderValue::from_static("evil"),
            );
        }
        h
    }

    #[test]
    fn removes_every_x_embed_field_whatever_its_case() {
        let mut h = map(&[
            "X-Embed-User",
            "x-embed-groups",
            "X-EMBED-ASSERTION",
            "x-embed-anything",
        ]);
        h.insert("x-embedded", HeaderValue::from_static("kept"));
        strip_client_claims(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-embedded"], "kept");
    }

    #[test]
    fn names_that_read_as_the_gateways_with_underscores_are_always_removed() {
        let spoofs = [
            "X_Embed_User",
            "x_embed_groups",
            "X-Embed_Attr_Department",
            "x_embed-app",
            "X_Forwarded_For",
            "x_forwarded_host",
            "X_Forwarded-Prefix",
            "X_Real_IP",
            "x_request_id",
            "X_Request-Id",
        ];
        for allowed in [false, true] {
            let mut h = map(&spoofs);
            h.insert("accept", HeaderValue::from_static("kept"));
            strip_client_claims(&mut h, allowed);
            assert_eq!(
                h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
                ["accept"],
                "underscores allowed: {allowed}"
            );
        }
    }

    #[test]
    fn other_underscore_names_go_unless_allowed() {
        let mut h = map(&["my_header", "x_custom", "x-plain"]);
        strip_client_claims(&mut h, false);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-plain"]);
        let mut h = map(&["my_header", "x_custom", "x-plain", "x_embedded", "forwarded_by"]);
        strip_client_claims(&mut h, true);
        let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["forwarded_by", "my_header", "x-plain", "x_custom", "x_embedded"]);
    }
}
