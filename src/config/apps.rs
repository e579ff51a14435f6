//! `[[users]]` and `[[apps]]` as the runtime reads them: who may open which
//! app, where it is served, and its upstream.

/// One `[[users]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct User {
    /// Lowercased.
    pub(crate) email: String,
    /// Sent in `X-Embed-Groups`; matched against `allow_groups`.
    pub(crate) groups: Vec<String>,
}

/// One `[[apps]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct App {
    /// Lowercased canonical UUID text; shared, not copied, by each
    /// request's access record.
    pub(crate) id: std::sync::Arc<str>,
    /// Where its requests go.
    pub(crate) upstream: Upstream,
    /// Lowercased patterns: `*`, `*@domain`, or an exact email.
    pub(crate) allow_users: Vec<String>,
    /// Groups whose members are admitted.
    pub(crate) allow_groups: Vec<String>,
    /// The CSP directive of the `frame_ancestors` sources allowed to frame
    /// the app, built once: `frame-ancestors <list>`, or
    /// `frame-ancestors 'none'` for an empty list.
    pub(crate) frame_ancestors_directive: http::HeaderValue,
    /// Those sources as configured, to tell a framer the browser will
    /// refuse (`embed::framing`).
    pub(crate) frame_ancestors: Vec<String>,
    /// `/embed-apps/<id>`, where the app is mounted: built once as the
    /// `X-Forwarded-Prefix` value it is sent as.
    pub(crate) prefix: http::HeaderValue,
    /// `public_url`: the host the app is served at the root of; `None`:
    /// mounted under [`prefix`](Self::prefix) on the gateway's host.
    pub(crate) host: Option<AppHost>,
    /// `attribute_headers`: vouched attributes also sent as
    /// `X-Embed-Attr-<key>`, with the header name built once.
    pub(crate) attribute_headers: Vec<(String, http::HeaderName)>,
    /// Its place in `[[apps]]`, for per-app metrics.
    pub(crate) index: usize,
}

/// Where a host-mode app lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppHost {
    /// The app's `public_url`, without a trailing slash: the base of the
    /// URLs handed out for it.
    pub(crate) public_url: String,
    /// Its host name, lowercased, without port or trailing dot: what a
    /// request's `Host` is matched against.
    pub(crate) name: String,
    /// Where `public_url` is written, for `embedgate check`'s warnings.
    pub(crate) line: Option<usize>,
}

/// The CSP directive an app's `frame_ancestors` make (`'none'` for none).
/// The config check refuses sources a header could not carry; should one
/// slip through, the app is framed by nobody rather than by anybody.
pub(crate) fn frame_ancestors_directive(sources: &[String]) -> http::HeaderValue {
    const NONE: http::HeaderValue = http::HeaderValue::from_static("frame-ancestors 'none'");
    if sources.is_empty() {
        return NONE;
    }
    http::HeaderValue::try_from(format!("frame-ancestors {}", sources.join(" "))).unwrap_or(NONE)
}

impl App {
    /// A prefix-mode app with its mount prefix made from its id.
    pub(crate) fn new(
        id: String,
        upstream: Upstream,
        allow_users: Vec<String>,
        allow_groups: Vec<String>,
        frame_ancestors: Vec<String>,
    ) -> App {
        // The id is a checked UUID (or empty after a reported error), so
        // the prefix is always a valid header value.
        let prefix = http::HeaderValue::try_from(format!("/embed-apps/{id}"))
            .unwrap_or_else(|_| http::HeaderValue::from_static("/embed-apps"));
        App {
            id: id.into(),
            upstream,
            allow_users,
            allow_groups,
            frame_ancestors_directive: frame_ancestors_directive(&frame_ancestors),
            frame_ancestors,
            prefix,
            host: None,
            attribute_headers: Vec::new(),
            index: 0,
        }
    }

    /// The base of the URLs handed out for the app: its own `public_url`,
    /// or the gateway's.
    pub(crate) fn public_base<'a>(&'a self, gateway_public_url: &'a str) -> &'a str {
        self.host.as_ref().map_or(gateway_public_url, |h| h.public_url.as_str())
    }

    /// `/embed-apps/<id>`.
    pub(crate) fn prefix(&self) -> &str {
        self.prefix.to_str().unwrap_or("/embed-apps")
    }

    /// Whether an `allow_users` pattern (`*`, `*@domain`, exact email) or an
    /// `allow_groups` entry admits this (lowercased) email with these
    /// groups, configured or vouched for by the portal alike.
    pub(crate) fn admits(&self, email: &str, groups: &[String]) -> bool {
        self.allow_users.iter().any(|pattern| pattern_matches(pattern, email))
            || groups.iter().any(|g| self.allow_groups.contains(g))
    }
}

/// Whether an `allow_users`-style pattern (`*`, `*@domain`, exact email,
/// all lowercased) matches a lowercased email.
pub(crate) fn pattern_matches(pattern: &str, email: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(domain) => domain.starts_with('@') && email.ends_with(domain),
        None => pattern == email,
    }
}

/// The host name of a `Host` value or a URL's authority: lowercased,
/// without the port, the brackets of an IPv6 literal kept, and without a
/// trailing dot (`Shop.Example.` and `shop.example:443` are one host).
pub(crate) fn host_name(authority: &str) -> String {
    let host = match authority.rsplit_once(':') {
        // A bracketed IPv6 literal's colons are not a port.
        Some((host, port)) if !port.contains(']') && (!host.contains(':') || host.ends_with(']')) => host,
        _ => authority,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A validated upstream base URL: `http://` or `https://`, an authority, an
/// optional path prefix, no query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// The URL as given.
    pub(crate) uri: http::Uri,
    /// Its authority as the `Host` value every request to it carries,
    /// built once.
    pub(crate) host: http::HeaderValue,
}

impl Upstream {
    /// The upstream at `uri` (checked by the config walk).
    pub(crate) fn new(uri: http::Uri) -> Upstream {
        let host = uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| http::HeaderValue::from_static(""));
        Upstream { uri, host }
    }

    /// The authority (`host[:port]`), used as the upstream `Host`.
    pub(crate) fn authority(&self) -> &str {
        self.uri.authority().map(|a| a.as_str()).unwrap_or("")
    }

    /// The upstream's own path prefix without a trailing slash (`""` for none).
    pub(crate) fn base_path(&self) -> &str {
        self.uri.path().trim_end_matches('/')
    }
}
