//! A frame the browser will refuse, said where an operator sees it.
//!
//! When a page outside an app's `frame_ancestors` frames it, the browser
//! refuses to show the app and says so only in that page's console; the
//! portal shows a broken frame, and nothing on the gateway's side says
//! why. So when an app's page is asked for by a cross-site frame
//! (`Sec-Fetch-Dest: iframe`, `Sec-Fetch-Site: cross-site`) whose
//! `Referer` names an origin the list does not allow, the gateway logs it
//! at `info`. The list is matched as a browser matches CSP source
//! expressions (CSP3 §6.7.2), leaning to silence where a source cannot be
//! read: the line is a hint, never a refusal.

use http::header::{self, HeaderMap, HeaderName};
use tracing::info;

use crate::config::App;

/// Logs when this request for `app` (whose own origin is `own_origin`,
/// what `'self'` means) comes from a cross-site frame that the app's
/// `frame_ancestors` do not allow.
pub(super) fn note_unlisted_framer(app: &App, own_origin: &str, headers: &HeaderMap) {
    static SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");
    static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
    let is = |name: &HeaderName, value: &[u8]| {
        headers
            .get(name)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value))
    };
    if !is(&SEC_FETCH_DEST, b"iframe") || !is(&SEC_FETCH_SITE, b"cross-site") {
        return;
    }
    let Some(framer) = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(Origin::of_url)
    else {
        return;
    };
    let own = Origin::of_url(own_origin);
    if app
        .frame_ancestors
        .iter()
        .any(|source| allows(source, &framer, own.as_ref()))
    {
        return;
    }
    info!(
        app = %app.id,
        framer = %framer,
        "a frame on {framer} asked for the app, but its frame_ancestors do not list that origin: \
         the browser will refuse to show it"
    );
}

/// A URL's origin: scheme, host and port (the scheme's own when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn of_url(url: &str) -> Option<Origin> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.split(['/', '?', '#']).next()?;
        let (host, port) = split_port(authority)?;
        let port = port.or_else(|| default_port(&scheme))?;
        (!host.is_empty()).then(|| Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if default_port(&self.scheme) != Some(self.port) {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// `host[:port]` (a bracketed IPv6 host kept whole); the port `None` when
/// absent, `Some(0)` for `*`.
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let colon = if authority.starts_with('[') {
        authority
            .find(']')
            .map(|end| end + 1)
            .filter(|&at| at < authority.len())
    } else {
        authority.rfind(':')
    };
    match colon {
        None => Some((authority, None)),
        Some(at) => {
            let port = &authority[at + 1..];
            let port = if port == "*" { 0 } else { port.parse().ok()? };
            Some((&authority[..at], Some(port)))
        }
    }
}

/// Whether the CSP source expression `source` allows a frame of `framer`.
/// A source that cannot be read allows (no false alarm).
fn allows(source: &str, framer: &Origin, own: Option<&Origin>) -> bool {
    let scheme_allows = |wanted: &str| wanted == framer.scheme || (wanted == "http" && framer.scheme == "https");
    match source {
        "*" => matches!(framer.scheme.as_str(), "http" | "https"),
        "'none'" => false,
        "'self'" => own.is_none_or(|own| own == framer),
        s if s.starts_with('\'') => false,
        s if s.ends_with(':') && !s.contains('/') => scheme_allows(&s[..s.len() - 1].to_ascii_lowercase()),
        s => {
            let (scheme, rest) = match s.split_once("://") {
                Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
                None => (None, s),
            };
            if let Some(scheme) = &scheme {
                if !scheme_allows(scheme) {
                    return false;
                }
            }
            let authority = rest.split('/').next().unwrap_or(rest);
            let Some((host, port)) = split_port(authority) else {
                return true;
            };
            let host = host.to_ascii_lowercase();
            let host_ok = match host.strip_prefix("*.") {
                Some(suffix) => framer.host.ends_with(&format!(".{suffix}")),
                None => host == framer.host,
            };
            let port_ok = match port {
                Some(0) => true,
                Some(port) => port == framer.port,
                // No port: the scheme's own (the source's, else the framer's).
                None => {
                    default_port(scheme.as_deref().unwrap_or(&framer.scheme)) == Some(framer.port)
                        || (scheme.as_deref() == Some("http") && framer.scheme == "https" && framer.port == 443)
                }
            };
            host_ok && port_ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::of_url(url).expect("an origin")
    }

    #[test]
    fn sources_match_as_a_browser_matches_them() {
        let own = origin("https://gw.example.com");
        let cases = [
            ("https://portal.example.com", "https://portal.example.com/page?x", true),
            ("https://portal.example.com", "https://portal.example.com:8443/", false),
            (
                "https://portal.example.com:8443",
                "https://portal.example.com:8443/",
                true,
            ),
            ("https://portal.example.com:*", "https://portal.example.com:9/", true),
            ("https://portal.example.com", "http://portal.example.com/", false),
            ("http://portal.example.com", "https://portal.example.com/", true),
            ("portal.example.com", "https://portal.example.com/", true),
            ("https://*.example.com", "https://a.b.example.com/", true),
            ("https://*.example.com", "https://example.com/", false),
            ("https:", "https://anything.example/", true),
            ("https:", "http://anything.example/", false),
            ("*", "https://evil.example/", true),
            ("'none'", "https://portal.example.com/", false),
            ("'self'", "https://gw.example.com/x", true),
            ("'self'", "https://portal.example.com/", false),
            ("https://PORTAL.example.com/path/", "https://portal.example.com/", true),
            ("http://127.0.0.1:3001", "http://127.0.0.1:3001/", true),
            ("http://[::1]:3001", "http://[::1]:3001/", true),
        ];
        for (source, framer, want) in cases {
            assert_eq!(
                allows(source, &origin(framer), Some(&own)),
                want,
                "{source} for {framer}"
            );
        }
    }

    #[test]
    fn origins_read_and_print_as_browsers_write_them() {
        assert_eq!(
            origin("https://Portal.Example.com:443/x").to_string(),
            "https://portal.example.com"
        );
        assert_eq!(origin("http://127.0.0.1:3001/").to_string(), "http://127.0.0.1:3001");
        assert!(Origin::of_url("not a url").is_none());
        assert!(Origin::of_url("ftp://x/").is_none(), "no default port, none given");
    }
}
