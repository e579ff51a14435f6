//! The answer to an embed request without a valid session (SPEC §5): a
//! browser page gets a tiny page that tells the host page, both in
//! embedgate's words and in ToolJet's, so portals written for either react;
//! anything else gets the JSON error.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::Body;
use crate::config::App;
use crate::embed::rewrite;
use crate::error::GatewayError;

const MESSAGE: &str = "Your session has ended. Reload the page to sign in again.";

/// 401 for a request to `app` without a valid session.
pub fn respond(request_headers: &HeaderMap, app: &App) -> Response<Body> {
    if !accepts_html(request_headers) {
        return GatewayError::NoSession.into_response();
    }
    // The app id is a validated UUID and the message a constant, so this
    // text needs no escaping; JSON-encode them anyway for the script.
    let ours = serde_json::json!({"type": "embedgate:session-expired", "appId": app.id});
    let tooljet = serde_json::json!({"type": "TJ_EMBED_APP_LOGOUT", "error": 401, "message": MESSAGE});
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Session ended</title></head>\n\
         <body><p>{MESSAGE}</p>\n<script>\n\
         if (window.parent && window.parent !== window) {{\n  \
         window.parent.postMessage({ours}, \"*\");\n  \
         window.parent.postMessage({tooljet}, \"*\");\n}}\n\
         </script></body></html>\n"
    );
    let mut response = Response::new(Body::full(page));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    rewrite::set_frame_ancestors(headers, &app.frame_ancestors);
    response
}

/// Whether the client asked for HTML (a browser navigating the iframe).
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|media| media.split(';').next().is_some_and(|m| m.trim() == "text/html"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_told_by_html_and_only_text_html_counts() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml;q=0.9"),
        );
        assert!(accepts_html(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/plain"));
        assert!(!accepts_html(&h));
        assert!(!accepts_html(&HeaderMap::new()));
    }
}
