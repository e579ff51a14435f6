//! The one response body type the gateway hands to hyper: either an
//! upstream's streamed body or a small body the gateway wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

/// A response body: streamed from upstream, or complete in memory.
///
/// Both arms forward `is_end_stream` and `size_hint`, so hyper keeps an
/// upstream's `Content-Length` (including `0`) and never adds chunking that
/// was not there.
#[derive(Debug)]
pub(crate) enum Body {
    /// Streamed through unchanged, frame by frame.
    Upstream(Incoming),
    /// Written by the gateway; `None` once sent.
    Full(Option<Bytes>),
}

impl Body {
    /// A body with no bytes.
    pub(crate) fn empty() -> Self {
        Body::Full(None)
    }

    /// A complete in-memory body.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::Full(None)
        } else {
            Body::Full(Some(bytes))
        }
    }
}

impl From<Incoming> for Body {
    fn from(body: Incoming) -> Self {
        Body::Upstream(body)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Upstream(body) => Pin::new(body).poll_frame(cx),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Upstream(body) => body.is_end_stream(),
            Body::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Upstream(body) => body.size_hint(),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// How much of a refused request body the gateway reads and throws away
/// before answering; past this the connection is simply closed.
const DISCARD_BYTES: u64 = 1024 * 1024;

/// The length a request body declares (`Content-Length`, as hyper parsed
/// and checked it), or the least it can be for a chunked body: the one
/// place the gateway reads a body's declared size.
pub(crate) fn declared_length(body: &Incoming) -> u64 {
    http_body::Body::size_hint(body).lower()
}

/// Reads and drops what is left of a request body the gateway refuses
/// (`already` bytes of it read), up to [`DISCARD_BYTES`] and `limit` in time.
/// Like nginx's lingering close: a client still sending gets the answer
/// instead of a reset, and a small body leaves the connection reusable.
///
/// Nothing is read when the body is declared larger than that, nor when a
/// client that sent `Expect: 100-continue` has not been told to go on
/// (`already == 0`): it is waiting for the answer, and reading would make
/// hyper invite the body.
pub(crate) async fn discard(headers: &http::HeaderMap, mut body: Incoming, already: u64, limit: std::time::Duration) {
    use http_body_util::BodyExt;
    let expects_continue = headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if (expects_continue && already == 0) || declared_length(&body) > DISCARD_BYTES {
        return;
    }
    let mut seen = already;
    let drain = async {
        while seen <= DISCARD_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len() as u64),
                Some(Err(_)) | None => return,
            }
        }
    };
    let _ = tokio::time::timeout(limit, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_body_reports_exact_size_and_ends() {
        let body = Body::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let bytes = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(bytes.ok().as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn empty_body_is_end_of_stream_with_zero_length() {
        let body = Body::empty();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(Body::full("").is_end_stream());
    }
}
