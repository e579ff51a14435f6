//! The host-page helper (`js/`), served from the gateway's own paths so a
//! portal loads it from where its frames come from: `GET /embedgate.js`,
//! the classic script that defines `window.EmbedGate`, and
//! `GET /embedgate.mjs`, the ES module. Both are built into the binary.
//!
//! Cacheable for an hour, revalidated by `ETag`; public code, so any origin
//! may load the module (`import` across origins needs CORS).

use std::sync::LazyLock;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::Body;
use crate::error::GatewayError;

/// The classic script, made from the module by `js/build.mjs`.
pub(crate) const CLASSIC: &str = include_str!("../js/embedgate.js");
/// The ES module.
pub(crate) const MODULE: &str = include_str!("../js/embedgate.mjs");

/// A strong validator per file: the start of its SHA-256.
static ETAGS: LazyLock<[HeaderValue; 2]> = LazyLock::new(|| [etag(CLASSIC), etag(MODULE)]);

fn etag(text: &str) -> HeaderValue {
    let digest = crate::crypto::sha256(text.as_bytes());
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Answers a request for the helper (`module`: the `.mjs`).
pub(crate) fn serve(method: &Method, headers: &HeaderMap, module: bool) -> Result<Response<Body>, GatewayError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(GatewayError::MethodNotAllowed("GET, HEAD"));
    }
    let (text, etag) = if module {
        (MODULE, &ETAGS[1])
    } else {
        (CLASSIC, &ETAGS[0])
    };
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || tag.trim().trim_start_matches("W/") == etag.to_str().unwrap_or(""));
    let mut response = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if method == Method::HEAD {
        let mut r = Response::new(Body::empty());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        r
    } else {
        Response::new(Body::full(text))
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(header::ETAG, etag.clone());
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `js/build.mjs` makes of the module; the committed classic
    /// script must be exactly that (run `node js/build.mjs` after an edit).
    fn classic_from(module: &str) -> String {
        let body = module
            .replacen("export function mount(", "function mount(", 1)
            .replacen("export default { mount };\n", "", 1);
        format!(
            "// Generated from embedgate.mjs by build.mjs; edit that file, then run `node build.mjs`.\n\
             (function () {{\n'use strict';\n{body}window.EmbedGate = {{ mount: mount }};\n}})();\n"
        )
    }

    #[test]
    fn the_classic_script_is_built_from_the_module() {
        assert_eq!(CLASSIC, classic_from(MODULE), "run `node js/build.mjs`");
        assert!(MODULE.contains("export function mount("));
        assert!(!CLASSIC.contains("export "));
    }

    #[test]
    fn the_helper_is_cacheable_javascript_revalidated_by_etag() {
        let Ok(r) = serve(&Method::GET, &HeaderMap::new(), false) else {
            panic!("served");
        };
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "public, max-age=3600");
        // Public code that any page may import as a module (CORS), never
        // sniffed as something else.
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let etag = h[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        let r = serve(&Method::GET, &again, false).map(|r| r.status().as_u16()).ok();
        assert_eq!(r, Some(304));
        // The module's tag is another.
        let r = serve(&Method::GET, &again, true).map(|r| r.status().as_u16()).ok();
        assert_eq!(r, Some(200));
        let r = serve(&Method::POST, &HeaderMap::new(), true).map(|r| r.status().as_u16());
        assert!(r.is_err());
    }
}
