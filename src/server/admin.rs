//! The admin listener (`server.admin_listen`, never the public port):
//! `/healthz` answers 200 while the process serves; `/readyz` answers 200
//! until draining begins, then 503 so load balancers stop sending traffic.

use std::convert::Infallible;

use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::body::Body;
use crate::drain::Watch;
use crate::error::json_error;

const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the admin endpoints until draining begins.
pub(crate) async fn serve(listener: TcpListener, mut watch: Watch) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = watch.signaled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut conn_watch = watch.clone();
        tokio::spawn(async move {
            let ready = conn_watch.clone();
            let service = service_fn(move |req| {
                let draining = ready.is_draining();
                async move { Ok::<_, Infallible>(respond(&req, draining)) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = conn_watch.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn respond<B>(req: &Request<B>, draining: bool) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let (status, text) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n"),
        "/readyz" if draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" => (StatusCode::OK, "ready\n"),
        _ => return json_error(StatusCode::NOT_FOUND, "not found"),
    };
    let mut response = Response::new(Body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, draining: bool) -> StatusCode {
        let req = Request::get(path).body(()).unwrap_or_default();
        respond(&req, draining).status()
    }

    #[test]
    fn healthz_is_ok_while_readyz_turns_503_on_drain() {
        assert_eq!(get("/healthz", false), StatusCode::OK);
        assert_eq!(get("/healthz", true), StatusCode::OK);
        assert_eq!(get("/readyz", false), StatusCode::OK);
        assert_eq!(get("/readyz", true), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/metrics", false), StatusCode::NOT_FOUND);
        let post = Request::post("/healthz").body(()).unwrap_or_default();
        assert_eq!(respond(&post, false).status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
