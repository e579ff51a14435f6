//! `GET /api/ext/openapi.json`: the OpenAPI 3.1 document of `/api/ext/*`.
//!
//! The document is a file beside this one, served byte for byte as
//! committed; `tests/it/openapi.rs` holds it to what the gateway really
//! answers. It is public: it describes the API and grants nothing, so it
//! needs no API token, and any cache may keep it for a while.

use bytes::Bytes;
use http::{header, HeaderValue, Response};

use crate::body::Body;

/// The document, as committed.
pub(crate) const DOCUMENT: &str = include_str!("openapi.json");

/// The document as a `200`, for `GET` and `HEAD` (hyper leaves out the body
/// of an answer to `HEAD` and keeps its `Content-Length`).
pub(crate) fn response() -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from_static(DOCUMENT.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // As the JWKS: a few minutes, so that an upgraded gateway's document is
    // seen soon.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::Value;

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).unwrap_or(Value::Null)
    }

    /// Every `$ref` string anywhere under `value`, with where it is.
    fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    match (key.as_str(), item) {
                        ("$ref", Value::String(target)) => out.push((at.clone(), target)),
                        _ => refs(item, format!("{at}/{key}"), out),
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    refs(item, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_document_is_json_and_openapi_3_1() {
        let doc = document();
        assert!(doc.is_object(), "src/api/openapi.json is not a JSON object");
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.1."), "openapi: {version:?}");
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        assert_eq!(
            doc["jsonSchemaDialect"], "https://json-schema.org/draft/2020-12/schema",
            "the schemas are plain JSON Schema 2020-12, as the conformance test reads them"
        );
        for path in [
            "/api/ext/users/personal-access-token",
            "/api/ext/users/sessions/revoke",
            "/api/ext/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is not documented");
        }
        assert_eq!(
            doc["paths"]["/api/ext/openapi.json"]["get"]["security"],
            serde_json::json!([]),
            "the document is public"
        );
    }

    #[test]
    fn every_reference_in_the_document_resolves_within_it() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, String::new(), &mut found);
        assert!(found.len() > 10, "too few $refs found: {found:?}");
        for (at, target) in found {
            let pointer = target.strip_prefix('#');
            let resolved = pointer.and_then(|p| doc.pointer(p));
            assert!(
                resolved.is_some(),
                "{at}: $ref {target:?} does not resolve in the document"
            );
        }
    }

    #[tokio::test]
    async fn the_response_is_the_document_as_cacheable_json() {
        let response = response();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "public, max-age=300");
        let body = response.into_body().collect().await.map(|c| c.to_bytes()).ok();
        assert_eq!(body.as_deref(), Some(DOCUMENT.as_bytes()));
    }
}
