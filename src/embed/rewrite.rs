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
    let Some(prefix) = mount.prefix else {
        // The session cookie is the gateway's, whatever the host.
        if present.set_cookie {
            drop_session_cookie(headers, mount.cookie_name);
        }
        return;
    };
    if present.location {
        if let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
            if let Some(rewritten) = rewrite_location(location, prefix, mount) {
                if let Ok(value) = HeaderValue::from_str(&rewritten) {
                    headers.insert(header::LOCATION, value);
                }
            }
        }
    }
    if present.set_cookie {
        let cookies: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| rewrite_set_cookie(v.to_str().ok()?, prefix, mount))
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

/// Drops an upstream `Set-Cookie` named like the gateway's session cookie,
/// passing every other one as written.
fn drop_session_cookie(headers: &mut HeaderMap, cookie_name: &str) {
    let named_ours = |v: &HeaderValue| cookie_name_of(v.as_bytes()) == cookie_name.as_bytes();
    if !headers.get_all(header::SET_COOKIE).iter().any(named_ours) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !named_ours(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for cookie in kept {
        headers.append(header::SET_COOKIE, cookie);
    }
}

/// The name of a `Set-Cookie` value, trimmed.
fn cookie_name_of(value: &[u8]) -> &[u8] {
    let end = value
        .iter()
        .position(|&b| b == b'=' || b == b';')
        .unwrap_or(value.len());
    value[..end].trim_ascii()
}

/// Replaces any `frame-ancestors` directive of every CSP field with the
/// app's list (`'none'` when empty), keeping the rest of the policy; adds a
/// CSP field when the upstream sent none.
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
    let directive = String::from_utf8_lossy(directive.as_bytes());
    let policies: Vec<String> = headers
        .get_all(header::CONTENT_SECURITY_POLICY)
        .iter()
        .map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes());
            let kept: Vec<&str> = text
                .split(';')
                .map(str::trim)
                .filter(|d| !d.is_empty() && !is_frame_ancestors(d))
                .collect();
            kept.join("; ")
        })
        .collect();
    headers.remove(header::CONTENT_SECURITY_POLICY);
    for policy in policies {
        let value = if policy.is_empty() {
            directive.to_string()
        } else {
            format!("{policy}; {directive}")
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header::CONTENT_SECURITY_POLICY, value);
        }
    }
}

fn is_frame_ancestors(directive: &str) -> bool {
    directive
        .split_ascii_whitespace()
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case("frame-ancestors"))
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

/// A `Set-Cookie` under the mount: `Path` moved below the prefix, `Domain`
/// dropped (the cookie belongs to the gateway's host alone). A cookie
/// named like the gateway's session cookie is dropped entirely.
///
/// Rewritten by hand, the one place the gateway splits a cookie itself:
/// the `cookie` crate parses only the attributes it knows and writes them
/// back in its own order, so it would silently drop an upstream's
/// `Priority=High` or any attribute newer than the crate. Here every
/// attribute but `Path` and `Domain` passes through as the upstream wrote it.
pub(crate) fn rewrite_set_cookie(value: &str, prefix: &str, mount: &Mount<'_>) -> Option<String> {
    let mut parts = value.split(';');
    let pair = parts.next()?.trim();
    let name = pair.split('=').next().unwrap_or("").trim();
    if name == mount.cookie_name {
        return None;
    }
    let mut out = vec![pair.to_string()];
    for attribute in parts.map(str::trim).filter(|a| !a.is_empty()) {
        let key = attribute.split('=').next().unwrap_or("").trim();
        if key.eq_ignore_ascii_case("domain") {
            continue;
        }
        if key.eq_ignore_ascii_case("path") {
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
        assert_eq!(
            h[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'; img-src data:; frame-ancestors https://portal.example.com"
        );
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
            rewrite_set_cookie("sid=1; Path=/; Domain=app.internal; HttpOnly", P, &m),
            Some(format!("sid=1; Path={p}/; HttpOnly"))
        );
        assert_eq!(
            rewrite_set_cookie("a=b; path=/api", P, &m),
            Some(format!("a=b; Path={p}/api"))
        );
        assert_eq!(rewrite_set_cookie("a=b", P, &m), Some("a=b".to_string()));
        assert_eq!(rewrite_set_cookie("embedgate_session=forged; Path=/", P, &m), None);
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
        assert_eq!(cookies, ["a=1; Path=/x; Domain=shop.example", "b=2"]);
        assert_eq!(h[header::LOCATION], "/next");
        assert!(!h.contains_key(header::X_FRAME_OPTIONS));
        assert_eq!(
            h[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors https://portal.example.com"
        );
    }
}
