//! One error type for everything a request can run into, and its one mapping
//! to a response: the JSON body of SPEC §3,
//! `{"statusCode": 404, "error": "Not Found", "message": "…"}`.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::Body;

/// Why a request could not be served. Each variant says where it came from:
/// the client (downstream), the upstream, or the gateway itself.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Downstream: nothing is served at this path.
    #[error("{0}")]
    NotFound(&'static str),
    /// Upstream: refused, unreachable, reset, or answered garbage.
    #[error("upstream unavailable")]
    BadGateway(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Upstream: no response head within `upstream_timeout_seconds`.
    #[error("upstream timed out")]
    GatewayTimeout,
    /// Downstream: the request cannot be forwarded as it is.
    #[error("{0}")]
    BadRequest(&'static str),
    /// Gateway: the gateway is shutting down or otherwise not serving.
    #[error("{0}")]
    Unavailable(&'static str),
}

impl GatewayError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            GatewayError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON error response. The message is the variant's fixed text:
    /// nothing from the request or the upstream's error chain is echoed.
    pub fn into_response(self) -> Response<Body> {
        json_error(self.status(), &self.to_string())
    }
}

/// A JSON error response in the shape of SPEC §3.
pub fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "statusCode": status.as_u16(),
        "error": status.canonical_reason().unwrap_or("Error"),
        "message": message,
    });
    let mut response = Response::new(Body::full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn json_error_has_status_reason_and_message() {
        let response = GatewayError::GatewayTimeout.into_response();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = response.into_body().collect().await.map(|c| c.to_bytes()).ok();
        let value: serde_json::Value = serde_json::from_slice(bytes.as_deref().unwrap_or(b"")).unwrap_or_default();
        assert_eq!(
            value,
            serde_json::json!({"statusCode": 504, "error": "Gateway Timeout", "message": "upstream timed out"})
        );
    }

    #[test]
    fn bad_gateway_never_echoes_the_cause() {
        let cause = std::io::Error::other("secret detail from upstream");
        let err = GatewayError::BadGateway(Box::new(cause));
        assert_eq!(err.to_string(), "upstream unavailable");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }
}
