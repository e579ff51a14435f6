//! Response rules on embed paths (SPEC §5): the app is framed only by its
//! `frame_ancestors`, and the upstream's own redirects and cookies stay
//! under `/embed-apps/<appId>` so they never reach the app's normal
//! (non-embedded) origin or mix with its own logins. An app on its own host
//! owns that host's paths: its redirects and cookie paths pass as written.

use http::header::{self, HeaderMap, HeaderValue};

/// What the rewrite needs to know about the app and the gateway.
pub(crate) struct Mount<'a> {
    /// `/embed-apps/<appId>`; `None` for an app at the root of its own
    /// host, whose `Location` and `Set-Cookie` paths are left alone.
    pub(crate) prefix: Option<&'a str>,
    /// `public_url`, without a trailing slash.
    pub(crate) public_url: &'a str,
    /// The upstream's authority, to recognise its absolute redirects.
    pub(crate) upstream_authority: &'a str,
    /// The upstream's own base path (`""` for none).
    pub(crate) upstream_base: &'a str,
    /// The app's `frame-ancestors` directive (built once, from its
    /// `frame_ancestors`).
    pub(crate) frame_ancestors: &'a HeaderValue,
    /// The gateway's session cookie name: an upstream may not set it.
    pub(crate) cookie_name: &'a str,
}

/// Applies every rule to an upstream response's headers.
pub(crate) fn apply(headers: &mut HeaderMap, mount: &Mount<'_>) {
    let present = Present::of(headers);
    if present.frame_options {
        headers.remove(header::X_FRAME_OPTIONS);
    }
    put_frame_ancestors(headers, mount.frame_ancestors, present.csp);
    if present.location {
        if let Some(prefix) = mount.prefix {
            if let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
                if let Some(rewritten) = rewrite_location(location, prefix, mount) {
                    if let Ok(value) = HeaderValue::from_str(&rewritten) {
                        headers.insert(header::LOCATION, value);
                    }
                }
            }
        }
    }
    if present.set_cookie {
        let cookies: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| rewrite_set_cookie(v.to_str().ok()?, mount))
            .filter_map(|v| HeaderValue::from_str(&v).ok())
            .collect();
        headers.remove(header::SET_COOKIE);
        for cookie in cookies {
            headers.append(header::SET_COOKIE, cookie);
        }
    }
}

/// Which of the fields the rules read a response has, from one pass over
/// its names (compared, not hashed): most responses have none of them but
/// the CSP the gateway adds, and a lookup per absent field is what the
/// rules would otherwise cost.
#[derive(Debug, Default)]
struct Present {
    frame_options: bool,
    csp: bool,
    location: bool,
    set_cookie: bool,
}

impl Present {
    fn of(headers: &HeaderMap) -> Self {
        let mut present = Present::default();
        for name in headers.keys() {
            if name == header::X_FRAME_OPTIONS {
                present.frame_options = true;
            } else if name == header::CONTENT_SECURITY_POLICY {
                present.csp = true;
            } else if name == header::LOCATION {
                present.location = true;
            } else if name == header::SET_COOKIE {
                present.set_cookie = true;
            }
        }
        present
    }
}

/// Whether a cookie name (as a browser reads it from `Set-Cookie`: up to
/// the first `=`, trimmed) would pass for the gateway's session cookie: no
/// name at all (a browser sends a nameless cookie as its value alone, so
/// `=embedgate_session=x` comes back as `embedgate_session=x`), or the
/// gateway's name in any case, bare or behind a `__Host-` or `__Secure-`
/// prefix (browsers match those prefixes ignoring case).
fn impersonates(name: &str, cookie_name: &str) -> bool {
    let name = name.trim_ascii();
    if name.is_empty() {
        return true;
    }
    let bare = ["__host-", "__secure-"]
        .iter()
        .find_map(|prefix| {
            let head = name.get(..prefix.len())?;
            head.eq_ignore_ascii_case(prefix).then(|| &name[prefix.len()..])
        })
        .unwrap_or(name);
    bare.eq_ignore_ascii_case(cookie_name)
}

/// Takes `frame-ancestors` out of every policy of every CSP field and adds
/// the app's own list (`'none'` when empty) as a policy of its own, a field
/// of its own; the rest of the upstream's policies pass as they are.
///
/// A browser splits a CSP field at `,` into separate policies (CSP3
/// §2.2.1), as it does two fields, and obeys each: an upstream's
/// `default-src 'self', frame-ancestors *` carries a policy that allows
/// every framer beside any other. So a directive is looked for in every
/// policy, never only in the last, and the app's list is never appended
/// to a policy of the upstream's (whose `frame-ancestors` it would
/// otherwise follow, and a browser obeys the first).
pub(crate) fn set_frame_ancestors(headers: &mut HeaderMap, directive: &HeaderValue) {
    let has_csp = headers.contains_key(header::CONTENT_SECURITY_POLICY);
    put_frame_ancestors(headers, directive, has_csp);
}

/// [`set_frame_ancestors`], told whether the response has a CSP field.
fn put_frame_ancestors(headers: &mut HeaderMap, directive: &HeaderValue, has_csp: bool) {
    // Most upstreams send no CSP: the directive alone, as built.
    if !has_csp {
        headers.insert(header::CONTENT_SECURITY_POLICY, directive.clone());
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::CONTENT_SECURITY_POLICY)
        .iter()
        .filter_map(without_frame_ancestors)
        .collect();
    headers.remove(header::CONTENT_SECURITY_POLICY);
    for policy in kept {
        headers.append(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.append(header::CONTENT_SECURITY_POLICY, directive.clone());
}

/// A CSP field without any `frame-ancestors` directive in any of its
/// policies; `None` when no directive is left.
fn without_frame_ancestors(field: &HeaderValue) -> Option<HeaderValue> {
    const NAME: &[u8] = b"frame-ancestors";
    let bytes = field.as_bytes();
    // Not named at all, in any case: passed as it came.
    if !bytes.windows(NAME.len()).any(|w| w.eq_ignore_ascii_case(NAME)) {
        return Some(field.clone());
    }
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    for policy in bytes.split(|&b| b == b',') {
        let mut directives = policy
            .split(|&b| b == b';')
            .map(<[u8]>::trim_ascii)
            .filter(|d| !d.is_empty() && !is_frame_ancestors(d))
            .peekable();
        if directives.peek().is_none() {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        for (i, d) in directives.enumerate() {
            if i > 0 {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(d);
        }
    }
    if out.is_empty() {
        return None;
    }
    HeaderValue::from_bytes(&out).ok()
}

/// Whether a directive (trimmed) is `frame-ancestors`: its name is what
/// comes before the first ASCII whitespace, matched ignoring case.
fn is_frame_ancestors(directive: &[u8]) -> bool {
    let name_end = directive
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(directive.len());
    directive[..name_end].eq_ignore_ascii_case(b"frame-ancestors")
}

/// The path below the upstream's base path, or `None` if it is outside it.
fn below_base<'p>(path: &'p str, base: &str) -> Option<&'p str> {
    if base.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(base)?;
    (rest.is_empty() || rest.starts_with(['/', '?', '#'])).then_some(rest)
}

/// `Location` under the mount: a path-absolute target, or an absolute URL
/// on the upstream's own authority. Relative targets already resolve under
/// the mount; other sites' URLs are left alone.
pub(crate) fn rewrite_location(location: &str, prefix: &str, mount: &Mount<'_>) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        let rest = below_base(location, mount.upstream_base)?;
        return Some(format!("{prefix}{}", slash(rest)));
    }
    let (scheme, after) = location.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let split = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, path) = after.split_at(split);
    if !authority.eq_ignore_ascii_case(mount.upstream_authority) {
        return None;
    }
    let rest = below_base(path, mount.upstream_base)?;
    Some(format!("{}{prefix}{}", mount.public_url, slash(rest)))
}

/// `""` and `?q` become `/` and `/?q`, so the result stays inside the mount.
fn slash(rest: &str) -> std::borrow::Cow<'_, str> {
    if rest.starts_with('/') {
        rest.into()
    } else {
        format!("/{rest}").into()
    }
}

/// An upstream's `Set-Cookie`, kept to the app: `Domain` dropped (under a
/// prefix the cookie belongs to the gateway's host alone; on an app's own
/// host to that host, never its siblings), and under a prefix `Path` moved
/// below it. A cookie that would pass for the gateway's session cookie
/// ([`impersonates`]) is dropped entirely.
///
/// Rewritten by hand, the one place the gateway splits a cookie itself:
/// the `cookie` crate parses only the attributes it knows and writes them
/// back in its own order, so it would silently drop an upstream's
/// `Priority=High` or any attribute newer than the crate. Here every
/// attribute but `Path` and `Domain` passes through as the upstream wrote it.
pub(crate) fn rewrite_set_cookie(value: &str, mount: &Mount<'_>) -> Option<String> {
    let mut parts = value.split(';');
    let pair = parts.next()?.trim();
    // No `=`: a browser reads the whole pair as the value of a nameless
    // cookie.
    let name = pair.split_once('=').map_or("", |(name, _)| name);
    if impersonates(name, mount.cookie_name) {
        return None;
    }
    let mut out = vec![pair.to_string()];
    for attribute in parts.map(str::trim).filter(|a| !a.is_empty()) {
        let key = attribute.split('=').next().unwrap_or("").trim();
        if key.eq_ignore_ascii_case("domain") {
            continue;
        }
        if let (Some(prefix), true) = (mount.prefix, key.eq_ignore_ascii_case("path")) {
            let path = attribute.split_once('=').map_or("", |(_, p)| p.trim());
            let rest = below_base(path, mount.upstream_base).unwrap_or("/");
            out.push(format!("Path={prefix}{}", slash(rest)));
            continue;
        }
        out.push(attribute.to_string());
    }
    Some(out.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANCESTORS: &[&str] = &["https://portal.example.com"];
    const P: &str = "/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";

    fn mount<'a>(ancestors: &'a HeaderValue, base: &'a str) -> Mount<'a> {
        Mount {
            prefix: Some(P),
            public_url: "https://gw.example.com",
            upstream_authority: "127.0.0.1:3000",
            upstream_base: base,
            frame_ancestors: ancestors,
            cookie_name: "embedgate_session",
        }
    }

    fn ancestors() -> HeaderValue {
        let sources: Vec<String> = ANCESTORS.iter().map(|s| s.to_string()).collect();
        crate::config::frame_ancestors_directive(&sources)
    }

    #[test]
    fn frame_ancestors_replaces_upstreams_and_keeps_the_rest() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; frame-ancestors *; img-src data:"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        let a = ancestors();
        apply(&mut h, &mount(&a, ""));
        assert!(!h.contains_key(header::X_FRAME_OPTIONS));
        let policies: Vec<_> = h.get_all(header::CONTENT_SECURITY_POLICY).iter().collect();
        assert_eq!(
            policies,
            [
                "default-src 'self'; img-src data:",
                "frame-ancestors https://portal.example.com"
            ]
        );
    }

    /// The upstream's policies as a browser reads them: every field split
    /// at commas.
    fn policies(h: &HeaderMap) -> Vec<String> {
        h.get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|p| p.trim().to_string())
            .collect()
    }

    #[test]
    fn frame_ancestors_leave_every_policy_of_every_field() {
        let a = ancestors();
        let ours = "frame-ancestors https://portal.example.com";
        for (upstream, kept) in [
            (
                &["default-src 'self', frame-ancestors *"][..],
                &["default-src 'self'"][..],
            ),
            (&["frame-ancestors *, default-src 'self'"], &["default-src 'self'"]),
            (&["default-src 'self'", "frame-ancestors *"], &["default-src 'self'"]),
            (&["FRAME-ANCESTORS *; img-src x"], &["img-src x"]),
            (&["frame-ancestors\t*;script-src 'self'"], &["script-src 'self'"]),
            (
                &["frame-ancestors 'self'; frame-ancestors *; a b, c d; frame-ancestors x"],
                &["a b", "c d"],
            ),
            (&[" , frame-ancestors *,,"], &[]),
            (
                &["default-src x, frame-ancestorsx y"],
                &["default-src x", "frame-ancestorsx y"],
            ),
            (&["upgrade-insecure-requests"], &["upgrade-insecure-requests"]),
        ] {
            let mut h = HeaderMap::new();
            for field in upstream {
                h.append(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(field));
            }
            apply(&mut h, &mount(&a, ""));
            let mut want: Vec<String> = kept.iter().map(|p| p.to_string()).collect();
            want.push(ours.to_string());
            assert_eq!(policies(&h), want, "{upstream:?}");
            let last = h.get_all(header::CONTENT_SECURITY_POLICY).iter().next_back().cloned();
            assert_eq!(last, Some(HeaderValue::from_static(ours)), "a field of its own");
        }
    }

    #[test]
    fn missing_csp_gets_one_and_empty_list_is_none() {
        let mut h = HeaderMap::new();
        set_frame_ancestors(&mut h, &crate::config::frame_ancestors_directive(&[]));
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "frame-ancestors 'none'");
    }

    #[test]
    fn locations_move_under_the_mount() {
        let a = ancestors();
        let m = mount(&a, "");
        let p = P;
        assert_eq!(
            rewrite_location("/login?next=/x", P, &m),
            Some(format!("{p}/login?next=/x"))
        );
        assert_eq!(
            rewrite_location("http://127.0.0.1:3000/a", P, &m),
            Some(format!("https://gw.example.com{p}/a"))
        );
        assert_eq!(
            rewrite_location("http://127.0.0.1:3000", P, &m),
            Some(format!("https://gw.example.com{p}/"))
        );
        assert_eq!(rewrite_location("https://elsewhere.example/a", P, &m), None);
        assert_eq!(rewrite_location("//elsewhere.example/a", P, &m), None);
        assert_eq!(rewrite_location("next", P, &m), None);
        let based = mount(&a, "/base");
        assert_eq!(rewrite_location("/base/x", P, &based), Some(format!("{p}/x")));
        assert_eq!(rewrite_location("/other", P, &based), None);
    }

    #[test]
    fn set_cookie_paths_move_under_the_mount_and_domains_go() {
        let a = ancestors();
        let m = mount(&a, "");
        let p = P;
        assert_eq!(
            rewrite_set_cookie("sid=1; Path=/; Domain=app.internal; HttpOnly", &m),
            Some(format!("sid=1; Path={p}/; HttpOnly"))
        );
        assert_eq!(
            rewrite_set_cookie("a=b; path=/api", &m),
            Some(format!("a=b; Path={p}/api"))
        );
        assert_eq!(rewrite_set_cookie("a=b", &m), Some("a=b".to_string()));
        assert_eq!(rewrite_set_cookie("embedgate_session=forged; Path=/", &m), None);
    }

    #[test]
    fn cookies_that_would_pass_for_the_gateways_are_dropped_on_every_mount() {
        let a = ancestors();
        for m in [
            mount(&a, ""),
            Mount {
                prefix: None,
                ..mount(&a, "")
            },
        ] {
            for forged in [
                "=embedgate_session=evil",
                "=evil; Path=/",
                " =x",
                "embedgate_session",
                "embedgate_session; Path=/",
                "EMBEDGATE_SESSION=x",
                "Embedgate_Session=x",
                " embedgate_session =x",
                "__Host-embedgate_session=x; Secure; Path=/",
                "__Secure-embedgate_session=x",
                "__HOST-Embedgate_Session=x",
                "__secure-EMBEDGATE_SESSION=x",
                "",
            ] {
                assert_eq!(rewrite_set_cookie(forged, &m), None, "{forged:?}");
            }
            for kept in [
                "embedgate_sessionx=1",
                "x_embedgate_session=1",
                "__Host-other=1",
                "a=embedgate_session=x",
            ] {
                assert!(rewrite_set_cookie(kept, &m).is_some(), "{kept:?}");
            }
        }
    }

    #[test]
    fn apply_rewrites_every_set_cookie() {
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("embedgate_session=x"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2; Path=/x"));
        h.insert(header::LOCATION, HeaderValue::from_static("/next"));
        let a = ancestors();
        apply(&mut h, &mount(&a, ""));
        let cookies: Vec<&str> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let p = P;
        assert_eq!(cookies, vec![format!("a=1; Path={p}/"), format!("b=2; Path={p}/x")]);
        assert_eq!(h[header::LOCATION], format!("{p}/next").as_str());
    }

    #[test]
    fn an_app_on_its_own_host_keeps_its_paths_but_never_the_session_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("a=1; Path=/x; Domain=shop.example"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("embedgate_session=forged; Path=/"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        h.insert(header::LOCATION, HeaderValue::from_static("/next"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        let a = ancestors();
        let m = Mount {
            prefix: None,
            ..mount(&a, "")
        };
        apply(&mut h, &m);
        let cookies: Vec<&str> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(
            cookies,
            ["a=1; Path=/x", "b=2"],
            "Domain goes: the cookie stays on the app's host"
        );
        assert_eq!(h[header::LOCATION], "/next");
        assert!(!h.contains_key(header::X_FRAME_OPTIONS));
        assert_eq!(
            h[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors https://portal.example.com"
        );
    }
}
