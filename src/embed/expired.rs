//! The answer to an embed request without a valid session (SPEC §5): a
//! browser page gets a tiny page that tells the host page, both in
//! embedgate's words and in ToolJet's, so portals written for either react;
//! anything else gets the JSON error.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::rewrite;
use crate::body::Body;
use crate::config::App;
use crate::error::GatewayError;

const MESSAGE: &str = "Your session has ended. Reload the page to sign in again.";

/// The page, with `{{message}}`, `{{ours}}` and `{{tooljet}}` to fill.
const PAGE: &str = include_str!("expired.html");

/// 401 for a request to `app` without a valid session.
pub(super) fn respond(request_headers: &HeaderMap, app: &App) -> Response<Body> {
    if !accepts_html(request_headers) {
        let mut response = GatewayError::NoSession.into_response();
        rewrite::set_frame_ancestors(response.headers_mut(), &app.frame_ancestors_directive);
        return response;
    }
    // The app id is a validated UUID and the message a constant: nothing
    // here needs HTML escaping, and the messages are JSON-encoded for the
    // script.
    let ours = serde_json::json!({"type": "embedgate:session-expired", "appId": app.id});
    let tooljet = serde_json::json!({"type": "TJ_EMBED_APP_LOGOUT", "error": 401, "message": MESSAGE});
    let page = PAGE
        .replace("{{message}}", MESSAGE)
        .replace("{{ours}}", &ours.to_string())
        .replace("{{tooljet}}", &tooljet.to_string());
    let mut response = Response::new(Body::full(page));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    rewrite::set_frame_ancestors(headers, &app.frame_ancestors_directive);
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

    #[tokio::test]
    async fn the_page_posts_both_messages_to_the_parent() {
        use http_body_util::BodyExt;
        let app = App::new(
            "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc".into(),
            crate::config::Upstream::new(http::Uri::from_static("http://127.0.0.1:1")),
            vec![],
            vec![],
            vec!["https://portal.example.com".into()],
        );
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        let response = respond(&h, &app);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors https://portal.example.com"
        );
        let page = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let page = String::from_utf8_lossy(&page);
        assert!(!page.contains("{{"), "{page}");
        assert!(page.contains(&format!("<p>{MESSAGE}</p>")), "{page}");
        assert!(
            page.contains(r#"window.parent.postMessage({"appId":"8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc","type":"embedgate:session-expired"}, "*");"#),
            "{page}"
        );
        assert!(page.contains(r#""type":"TJ_EMBED_APP_LOGOUT""#), "{page}");
    }
}
