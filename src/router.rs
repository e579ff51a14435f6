//! The one place that maps a request path to a route.
//!
//! The gateway owns three path trees — `/api/ext`, `/embed-apps` and
//! `/.well-known/embedgate` — matched segment by segment, so `/api/extra` is
//! not the API, and two paths: the host-page helper, `/embedgate.js` and
//! `/embedgate.mjs`. Everything else is `[passthrough]` traffic when
//! configured.

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

#[cfg(test)]
mod tests {
    use super::*;

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
