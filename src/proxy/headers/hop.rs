//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so a
//! proxy removes them — the fixed set below and every field that the
//! `Connection` header names — before forwarding, in both directions.
//!
//! `Connection` may not take away what the gateway itself sets or vouches
//! for: a `Connection: Host` or `Connection: X-Request-Id` would otherwise
//! strip the upstream's `Host` or the request's id ([`PROTECTED`]).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Connection-specific fields of RFC 9110 §7.6.1 and RFC 9112, plus the
/// legacy `Proxy-Connection` that some clients still send.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Fields that `Connection` cannot name away: `Host`, which the gateway
/// sets to the upstream's authority, and the fields it sets or vouches for
/// (the request id, the forwarding headers, the identity); prefixes end
/// with `-`.
static PROTECTED: [&str; 4] = ["host", "x-request-id", "x-forwarded-", "x-embed-"];

/// Whether a name that `Connection` lists is one it may not remove.
fn is_protected(token: &str) -> bool {
    PROTECTED.iter().any(|p| {
        if p.ends_with('-') {
            token.len() > p.len() && token.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        } else {
            token.eq_ignore_ascii_case(p)
        }
    })
}

/// Removes every hop-by-hop field, including those named by `Connection`
/// and `Upgrade`. The protocol `Upgrade` asked for, if any, is returned so a
/// caller that tunnels it can put the two fields back.
pub(crate) fn strip(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // Most requests carry none of them: one look at the names present
    // rather than a lookup of each hop-by-hop name.
    if !headers.keys().any(is_hop) {
        return None;
    }
    // What `Connection` names beyond the fixed set (rare: most say
    // `keep-alive` or `upgrade`); nothing is allocated for those.
    let mut upgrade_named = false;
    let mut named: Vec<HeaderName> = Vec::new();
    for token in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        if token.eq_ignore_ascii_case("upgrade") {
            upgrade_named = true;
        } else if !HOP_BY_HOP.iter().any(|hop| token.eq_ignore_ascii_case(hop.as_str())) && !is_protected(token) {
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    let upgrade = upgrade_named.then(|| headers.get(header::UPGRADE).cloned()).flatten();
    for name in &named {
        headers.remove(name);
    }
    // Only the fixed names that are there are looked up to be removed.
    while let Some(name) = headers.keys().find(|name| is_hop(name)).cloned() {
        headers.remove(&name);
    }
    upgrade
}

/// Whether `name` is one of the fixed hop-by-hop fields or `Upgrade`.
fn is_hop(name: &HeaderName) -> bool {
    name == header::UPGRADE || HOP_BY_HOP.contains(name)
}

/// Puts back `Connection: upgrade` and `Upgrade: <protocol>` for a tunnelled
/// upgrade (RFC 9110 §7.8).
pub(crate) fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn removes_fixed_set_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("x-other", "1"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-end-to-end", "kept"),
        ]);
        assert_eq!(strip(&mut h), None);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-end-to-end"], "kept");
    }

    #[test]
    fn connection_never_names_away_what_the_gateway_sets() {
        let mut h = map(&[
            ("connection", "close, Host, X-Request-Id"),
            ("connection", "x-forwarded-for, X-EMBED-USER, x-other"),
            ("host", "upstream:3000"),
            ("x-request-id", "0123"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-embed-user", "ann@example.com"),
            ("x-other", "1"),
        ]);
        assert_eq!(strip(&mut h), None);
        let mut kept: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["host", "x-embed-user", "x-forwarded-for", "x-request-id"]);
        assert!(!is_protected("x-forwarded-"), "a prefix alone names nothing");
        assert!(is_protected("X-Forwarded-Prefix"));
    }

    #[test]
    fn upgrade_is_reported_only_when_connection_names_it() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(strip(&mut h), Some(HeaderValue::from_static("websocket")));
        assert!(h.is_empty());

        let mut h = map(&[("upgrade", "websocket")]);
        assert_eq!(strip(&mut h), None);
        assert!(h.is_empty(), "a stray Upgrade is hop-by-hop too");
    }
}
