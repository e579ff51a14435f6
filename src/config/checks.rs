//! Value checks: pure functions, each returning why a value is refused, so
//! the section readers can record the reason at the value's key and line.

use std::net::IpAddr;

use ipnet::IpNet;

/// An absolute `http://` or `https://` URL with a host and no userinfo,
/// query or fragment (the `http` crate silently drops a fragment, so the
/// text is checked first).
pub(crate) fn check_http_url(s: &str) -> Result<http::Uri, String> {
    let refuse = || format!("expected an http:// or https:// URL with a host, found {s:?}");
    if s.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(refuse());
    }
    if s.contains('?') || s.contains('#') {
        return Err(format!("must not have a query or fragment, found {s:?}"));
    }
    let uri: http::Uri = s.parse().map_err(|_| refuse())?;
    let scheme_ok =
        matches!(uri.scheme_str(), Some(x) if x.eq_ignore_ascii_case("http") || x.eq_ignore_ascii_case("https"));
    let authority = uri.authority().ok_or_else(refuse)?;
    if authority.as_str().contains('@') {
        return Err(format!("must not carry user:password@, found {s:?}"));
    }
    // `http` accepts any digits as a port (and then reports none), so check
    // it is a real one; a bracketed IPv6 host's colons are not a port.
    let port_ok = match authority.as_str().rsplit_once(':') {
        Some((_, port)) if !port.ends_with(']') => port.parse::<u16>().is_ok(),
        _ => true,
    };
    if !scheme_ok || !port_ok || authority.host().is_empty() {
        return Err(refuse());
    }
    Ok(uri)
}

/// Two listeners collide on a port when they bind the same address or one
/// binds every address.
pub(crate) fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// A CIDR, or a bare IP as a single-host network (/32 or /128).
pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .ok_or_else(|| format!("expected a CIDR (e.g. 10.0.0.0/8) or an IP address, found {s:?}"))
}

/// A SHA-256 digest as 64 lowercase hex characters.
pub(crate) fn decode_sha256_hex(s: &str) -> Result<[u8; 32], String> {
    // The value is only a hash, but a token pasted here by mistake must not
    // end up in a log: never echo it.
    let refuse = || "expected 64 lowercase hex characters (a SHA-256 digest)".to_string();
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(refuse());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| refuse())?;
    Ok(out)
}

/// A cookie-name token (RFC 6265 §4.1.1, RFC 9110 §5.6.2).
pub(crate) fn check_cookie_name(s: &str) -> Result<(), String> {
    const SEPARATORS: &str = "()<>@,;:\\\"/[]?={}";
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_graphic() && !SEPARATORS.contains(c)) {
        return Err(format!(
            "expected a cookie name (visible ASCII, none of ()<>@,;:\\\"/[]?={{}} or space), found {s:?}"
        ));
    }
    // Browsers refuse a __Host- cookie unless Path=/, and the embed cookie is
    // scoped to /embed-apps/<appId> (RFC 6265bis §4.1.3.2).
    if s.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("__Host-")) {
        return Err("a __Host- cookie needs Path=/, but the embed cookie is scoped to /embed-apps/<appId>".into());
    }
    Ok(())
}

/// `local@domain`: one `@`, both sides non-empty, visible ASCII only (it
/// travels in the `X-Embed-User` header).
pub(crate) fn check_email(s: &str) -> Result<(), String> {
    let mut parts = s.split('@');
    let ok = match (parts.next(), parts.next(), parts.next()) {
        (Some(local), Some(domain), None) => {
            !local.is_empty() && !domain.is_empty() && s.chars().all(|c| c.is_ascii_graphic())
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected an email address (one @, no spaces, visible ASCII), found {s:?}"
        ))
    }
}

/// `*`, `*@domain`, or an email; lowercased.
pub(crate) fn check_user_pattern(s: &str) -> Result<String, String> {
    let ok = if s == "*" {
        true
    } else if let Some(domain) = s.strip_prefix("*@") {
        !domain.is_empty() && !domain.contains('@') && domain.chars().all(|c| c.is_ascii_graphic())
    } else {
        check_email(s).is_ok()
    };
    if ok {
        return Ok(s.to_ascii_lowercase());
    }
    Err(format!("expected \"*\", \"*@domain\" or an email address, found {s:?}"))
}

/// A group name: non-empty, and safe inside the comma-separated
/// `X-Embed-Groups` header.
pub(crate) fn check_group(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    // Groups are sent comma-separated in X-Embed-Groups: a comma or a
    // control character would forge or break that header.
    if s.contains(',') || s.chars().any(|c| !c.is_ascii_graphic() && c != ' ') || s.trim() != s {
        return Err(format!(
            "expected visible ASCII without commas or surrounding spaces, found {s:?}"
        ));
    }
    Ok(s.to_string())
}

/// An `[[api.tokens]]` name: 1–64 of `[A-Za-z0-9._-]`, so that it is safe
/// in a log line or a metric label.
pub(crate) fn check_token_name(s: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("expected 1 to 64 of A-Z a-z 0-9 . _ -, found {s:?}"))
    }
}

/// A vouched attribute's key: 1–64 of `[A-Za-z0-9_-]` (it may become part
/// of an `X-Embed-Attr-<key>` header name). Shared with the mint body.
pub(crate) fn check_attribute_key(s: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("expected 1 to 64 of A-Z a-z 0-9 _ -, found {s:?}"))
    }
}

/// A CSP source expression for `frame-ancestors` (CSP3 §2.3.1). Anything
/// that could end the directive or start another is refused.
pub(crate) fn check_csp_source(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if !s.chars().all(|c| c.is_ascii_graphic()) || s.contains([';', ',']) {
        return Err(format!(
            "expected one CSP source such as https://portal.example.com or 'self' (no spaces, ';' or ','), found {s:?}"
        ));
    }
    Ok(s.to_string())
}

/// `8-4-4-4-12` hex digits, either case.
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_url_accepts_http_and_https_with_a_host() {
        for good in [
            "http://a",
            "HTTPS://gw.example.com",
            "https://app.internal/base/",
            "http://127.0.0.1:3000",
            "http://[::1]",
            "https://[::1]:8443/",
        ] {
            assert!(check_http_url(good).is_ok(), "{good}");
        }
        let uri = check_http_url("https://app.internal:8443/base").unwrap();
        assert_eq!(uri.authority().map(|a| a.as_str()), Some("app.internal:8443"));
        assert_eq!(uri.path(), "/base");
    }

    #[test]
    fn http_url_refuses_other_schemes_relative_urls_and_bad_ports() {
        for bad in [
            "ftp://gw.example.com",
            "ws://a",
            "gw.example.com",
            "/relative",
            "https://gw:99999",
            "https://gw:",
            "http://a b",
            "http://a\n",
            "",
        ] {
            let why = check_http_url(bad).unwrap_err();
            assert!(why.starts_with("expected an http:// or https:// URL"), "{bad}: {why}");
        }
    }

    #[test]
    fn http_url_refuses_query_fragment_and_userinfo() {
        for bad in [
            "http://a/?q",
            "https://gw.example.com/?a=1",
            "https://gw.example.com/#x",
        ] {
            let why = check_http_url(bad).unwrap_err();
            assert!(why.contains("query or fragment"), "{bad}: {why}");
        }
        assert!(check_http_url("https://user:pw@gw.example.com").is_err());
    }

    #[test]
    fn same_host_when_equal_or_either_is_unspecified() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(same_host(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(same_host(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(same_host(ip("127.0.0.1"), ip("0.0.0.0")));
        assert!(same_host(ip("::"), ip("192.0.2.7")));
        assert!(!same_host(ip("127.0.0.1"), ip("127.0.0.2")));
        assert!(!same_host(ip("::1"), ip("127.0.0.1")));
    }

    #[test]
    fn cidr_or_bare_ip_as_a_single_host() {
        let net = |s: &str| parse_cidr(s).map(|n| n.to_string());
        assert_eq!(net("10.0.0.0/8").as_deref(), Ok("10.0.0.0/8"));
        assert_eq!(net("192.0.2.7").as_deref(), Ok("192.0.2.7/32"));
        assert_eq!(net("::1").as_deref(), Ok("::1/128"));
        assert_eq!(net("fd00::/8").as_deref(), Ok("fd00::/8"));
        for bad in ["10.0.0.0/33", "300.1.2.3/8", "10.0.0.0/", "localhost", ""] {
            let why = parse_cidr(bad).unwrap_err();
            assert!(why.contains("CIDR"), "{bad}: {why}");
        }
    }

    #[test]
    fn sha256_hex_is_64_lowercase_digits_and_never_echoed() {
        assert_eq!(decode_sha256_hex(&"ab".repeat(32)), Ok([0xab; 32]));
        let mut want = [0u8; 32];
        want[31] = 0x0f;
        assert_eq!(decode_sha256_hex(&format!("{}0f", "0".repeat(62))), Ok(want));
        for bad in [
            "AB".repeat(32),
            "ab".repeat(31),
            "ab".repeat(33),
            format!("{}zz", "ab".repeat(31)),
            String::new(),
        ] {
            let why = decode_sha256_hex(&bad).unwrap_err();
            assert!(why.contains("64 lowercase hex"), "{bad}: {why}");
            assert!(
                bad.is_empty() || !why.contains(&bad),
                "the value is never echoed: {why}"
            );
        }
    }

    #[test]
    fn cookie_name_is_a_token_and_not_host_prefixed() {
        for good in ["embedgate_session", "__Secure-eg", "a.b!#$%&'*+-^`|~"] {
            assert_eq!(check_cookie_name(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "a;b", "a=b", "a,b", "a\"b", "é", "a\tb"] {
            let why = check_cookie_name(bad).unwrap_err();
            assert!(why.starts_with("expected a cookie name"), "{bad:?}: {why}");
        }
        for host in ["__Host-s", "__host-s", "__HOST-"] {
            let why = check_cookie_name(host).unwrap_err();
            assert!(why.contains("Path=/"), "{host}: {why}");
        }
    }

    #[test]
    fn email_has_one_at_with_both_sides_in_visible_ascii() {
        for good in ["ann@example.com", "Ann@Example.COM", "a+tag@b"] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        for bad in [
            "ann",
            "@example.com",
            "ann@",
            "a@b@c",
            "ann @example.com",
            "ann@exa\tmple.com",
            "é@b",
            "",
        ] {
            let why = check_email(bad).unwrap_err();
            assert!(why.starts_with("expected an email address"), "{bad:?}: {why}");
        }
    }

    #[test]
    fn user_pattern_is_star_star_at_domain_or_email_lowercased() {
        assert_eq!(check_user_pattern("*").as_deref(), Ok("*"));
        assert_eq!(check_user_pattern("*@Example.com").as_deref(), Ok("*@example.com"));
        assert_eq!(check_user_pattern("Ann@Example.com").as_deref(), Ok("ann@example.com"));
        for bad in ["*@", "*@a@b", "*@exa mple.com", "*x", "**", "ann", ""] {
            let why = check_user_pattern(bad).unwrap_err();
            assert!(why.starts_with("expected \"*\""), "{bad:?}: {why}");
        }
    }

    #[test]
    fn group_cannot_forge_or_break_the_groups_header() {
        assert_eq!(check_group("sales").as_deref(), Ok("sales"));
        assert_eq!(check_group("Sales Team").as_deref(), Ok("Sales Team"));
        assert_eq!(check_group("").unwrap_err(), "must not be empty");
        for bad in ["a,b", " sales", "sales ", "sa\nles", "sa\rles", "é"] {
            let why = check_group(bad).unwrap_err();
            assert!(why.starts_with("expected visible ASCII"), "{bad:?}: {why}");
        }
    }

    #[test]
    fn csp_source_cannot_end_the_directive() {
        for good in [
            "'self'",
            "https://*.example.com",
            "https://portal.example.com:8443",
            "*",
        ] {
            assert_eq!(check_csp_source(good).as_deref(), Ok(good));
        }
        assert_eq!(check_csp_source("").unwrap_err(), "must not be empty");
        for bad in ["https://a; script-src *", "a,b", "a b", "https://a\n", "é"] {
            let why = check_csp_source(bad).unwrap_err();
            assert!(why.starts_with("expected one CSP source"), "{bad:?}: {why}");
        }
    }

    #[test]
    fn uuid_is_8_4_4_4_12_hex_in_either_case() {
        assert!(is_uuid("8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc"));
        assert!(is_uuid("8BA8BF0E-6B8F-4E07-ABB9-6FD2D816FABC"));
        for bad in [
            "8ba8bf0e6b8f4e07abb96fd2d816fabc",
            "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fab",
            "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabcd",
            "8ba8bf0e6-b8f-4e07-abb9-6fd2d816fabc",
            "8ba8bf0g-6b8f-4e07-abb9-6fd2d816fabc",
            "{8ba8bf0e-6b8f-4e07-abb9-6fd2d816fab}",
            "8ba8bf0e-6b8f-4e07-abb9-6fd2d816faé",
            "",
        ] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }
}
