//! One error type for everything a request can run into, and its one mapping
//! to a response: the JSON body of SPEC §3,
//! `{"statusCode": 404, "error": "Not Found", "message": "…"}`.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::Body;
use crate::metrics::UpstreamFailure;

/// How long to wait before trying again, for `Retry-After` (RFC 9110
/// §10.2.3): whole seconds, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryAfter(pub(crate) u64);

/// Why a request could not be served. Each variant says where it came from:
/// the client (downstream), the upstream, or the gateway itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    /// Downstream (404): nothing is served at this path.
    #[error("{0}")]
    PathNotFound(&'static str),
    /// Downstream (404): a well-formed request naming something that does
    /// not exist (an email, an app id); the message names the field.
    #[error("{0}")]
    NotFound(String),
    /// Downstream: the request cannot be forwarded or understood as it is.
    #[error("{0}")]
    BadRequest(&'static str),
    /// Downstream: a field is missing, mistyped or out of range; the message
    /// names the field.
    #[error("{0}")]
    Invalid(String),
    /// Downstream: missing or wrong API token.
    #[error("a valid API token is required")]
    Unauthorized,
    /// Downstream: a PAT that does not exist, expired, was used, or belongs
    /// to another app — deliberately indistinguishable (SPEC §4).
    #[error("Invalid or expired PAT")]
    InvalidPat,
    /// Downstream: no valid embed session for this app.
    #[error("no valid session for this app")]
    NoSession,
    /// Downstream: authenticated, but no rule admits this user to this app.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Downstream: the method is not served here; holds the allowed one.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// Downstream: a body over the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Downstream: a request head over `max_header_bytes`.
    #[error("request head too large")]
    HeadTooLarge,
    /// Downstream: a body that is not JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// Downstream: the body did not arrive in time.
    #[error("request body timed out")]
    RequestTimeout,
    /// Downstream: over a rate limit; holds `Retry-After` seconds.
    #[error("rate limit exceeded; retry later")]
    TooManyRequests(RetryAfter),
    /// Upstream: refused, unreachable, reset, or answered garbage.
    #[error("upstream unavailable")]
    BadGateway(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Upstream: no response head within `upstream_timeout_seconds`.
    #[error("upstream timed out")]
    GatewayTimeout,
    /// Gateway: the session and PAT store did not answer (a shared store
    /// that is down or too slow); the cause is logged, not sent. The
    /// in-process store never fails.
    #[error("the session store is unavailable; retry shortly")]
    StoreUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Gateway: a fault of its own (the cause is logged, not sent).
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where an error came from (as pingora's `ErrorSource`): what a log line
/// or a dashboard says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The client: what it sent, or how fast.
    Downstream,
    /// The app's upstream: refused, broken or silent.
    Upstream,
    /// The gateway itself, or the session store it depends on.
    Internal,
}

impl GatewayError {
    /// Where this error came from.
    pub(crate) fn origin(&self) -> Origin {
        match self {
            GatewayError::BadGateway(_) | GatewayError::GatewayTimeout => Origin::Upstream,
            GatewayError::StoreUnavailable(_) | GatewayError::Internal(_) => Origin::Internal,
            GatewayError::PathNotFound(_)
            | GatewayError::NotFound(_)
            | GatewayError::BadRequest(_)
            | GatewayError::Invalid(_)
            | GatewayError::Unauthorized
            | GatewayError::InvalidPat
            | GatewayError::NoSession
            | GatewayError::Forbidden(_)
            | GatewayError::MethodNotAllowed(_)
            | GatewayError::PayloadTooLarge
            | GatewayError::HeadTooLarge
            | GatewayError::UnsupportedMediaType
            | GatewayError::RequestTimeout
            | GatewayError::TooManyRequests(_) => Origin::Downstream,
        }
    }

    /// What kind of upstream failure this is, for the metrics; `None` for
    /// an error that did not come from an upstream.
    pub(crate) fn upstream_failure(&self) -> Option<UpstreamFailure> {
        match self {
            GatewayError::BadGateway(cause) => Some(upstream_failure_kind(cause.as_ref())),
            GatewayError::GatewayTimeout => Some(UpstreamFailure::Timeout),
            _ => None,
        }
    }

    /// The status this error answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            GatewayError::PathNotFound(_) | GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::BadRequest(_) | GatewayError::Invalid(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unauthorized | GatewayError::InvalidPat | GatewayError::NoSession => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            GatewayError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON error response, with the headers its status calls for. The
    /// message is the variant's own text: nothing from an upstream's or the
    /// system's error chain is echoed. Nothing else happens here: the
    /// request's handler logs and counts the error.
    pub(crate) fn into_response(self) -> Response<Body> {
        let mut response = json_error(self.status(), &self.to_string());
        let headers = response.headers_mut();
        match self {
            GatewayError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"embedgate\""),
                );
            }
            GatewayError::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            GatewayError::TooManyRequests(RetryAfter(seconds)) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            // The store is checked every second; so may the client.
            GatewayError::StoreUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

/// What kind of upstream failure `cause` is, from the errors it wraps:
/// refused, timed out, reset (closed mid-exchange), TLS, or other.
fn upstream_failure_kind(cause: &(dyn std::error::Error + 'static)) -> UpstreamFailure {
    let mut next = Some(cause);
    while let Some(error) = next {
        if error.is::<rustls::Error>() {
            return UpstreamFailure::Tls;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionRefused => return UpstreamFailure::Refused,
                ErrorKind::TimedOut => return UpstreamFailure::Timeout,
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof => return UpstreamFailure::Reset,
                _ => {}
            }
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() || hyper.is_closed() {
                return UpstreamFailure::Reset;
            }
        }
        next = error.source();
    }
    UpstreamFailure::Other
}

/// A JSON error response in the shape of SPEC §3.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response<Body> {
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
    fn statuses_carry_their_headers() {
        let r = GatewayError::Unauthorized.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Basic realm=\"embedgate\"");
        let r = GatewayError::TooManyRequests(RetryAfter(7)).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let r = GatewayError::MethodNotAllowed("POST").into_response();
        assert_eq!(r.headers()[header::ALLOW], "POST");
    }

    #[tokio::test]
    async fn store_unavailable_is_503_with_the_json_shape_and_no_cause() {
        let cause = std::io::Error::other("redis://user:secret@host refused");
        let response = GatewayError::StoreUnavailable(Box::new(cause)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let bytes = response.into_body().collect().await.map(|c| c.to_bytes()).ok();
        let value: serde_json::Value = serde_json::from_slice(bytes.as_deref().unwrap_or(b"")).unwrap_or_default();
        assert_eq!(value["statusCode"], 503);
        assert_eq!(value["error"], "Service Unavailable");
        assert!(!value.to_string().contains("secret"), "{value}");
    }

    #[test]
    fn each_error_says_where_it_came_from_and_what_upstream_failure_it_is() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = [
            (
                GatewayError::BadGateway(Box::new(refused)),
                Origin::Upstream,
                Some(UpstreamFailure::Refused),
            ),
            (
                GatewayError::GatewayTimeout,
                Origin::Upstream,
                Some(UpstreamFailure::Timeout),
            ),
            (GatewayError::NoSession, Origin::Downstream, None),
            (GatewayError::TooManyRequests(RetryAfter(1)), Origin::Downstream, None),
            (
                GatewayError::StoreUnavailable(Box::new(std::io::Error::other("down"))),
                Origin::Internal,
                None,
            ),
            (GatewayError::Internal("bug".into()), Origin::Internal, None),
        ];
        for (error, origin, failure) in cases {
            assert_eq!(error.origin(), origin, "{error:?}");
            assert_eq!(error.upstream_failure(), failure, "{error:?}");
        }
    }

    #[test]
    fn bad_gateway_never_echoes_the_cause() {
        let cause = std::io::Error::other("secret detail from upstream");
        let err = GatewayError::BadGateway(Box::new(cause));
        assert_eq!(err.to_string(), "upstream unavailable");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }
}
