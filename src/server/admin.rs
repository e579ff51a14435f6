//! The admin listener (`server.admin_listen`, never the public port):
//! `/healthz` answers 200 while the process serves; `/readyz` answers 200
//! until draining begins, then 503 so load balancers stop sending traffic —
//! and 503 too while a shared session store is unreachable. It answers
//! until the process exits, through the drain.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use super::Shared;
use crate::body::Body;
use crate::drain::Watch;
use crate::error::json_error;
use crate::metrics;
use crate::telemetry;

const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the admin endpoints for as long as the process lives: through a
/// drain too, so that a balancer's health check is answered — `/readyz`
/// 503 — rather than refused while in-flight work finishes. It holds no
/// [`Watch`], so it never keeps a drain waiting.
/// The session store is the one of the state in force (`shared`): whether
/// it answers decides `/readyz`, and an in-process store is counted for
/// `/metrics` at each scrape.
pub(crate) async fn serve(listener: TcpListener, mut watch: Watch, shared: Arc<Shared>) {
    let draining = Arc::new(AtomicBool::new(false));
    {
        let draining = draining.clone();
        tokio::spawn(async move {
            watch.signaled().await;
            draining.store(true, Ordering::Relaxed);
        });
    }
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let draining = draining.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let store = shared.load().store.clone();
                if req.uri().path() == "/metrics" {
                    if let Some(live) = store.count_now(crate::session::now_ms()) {
                        metrics::global().set_live(live.sessions, live.pats);
                    }
                }
                let readiness = if draining.load(Ordering::Relaxed) {
                    Readiness::Draining
                } else if !store.is_ready() {
                    Readiness::StoreUnreachable
                } else {
                    Readiness::Ready
                };
                async move { Ok::<_, Infallible>(respond(&req, readiness)) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            if let Err(error) = builder.serve_connection(TokioIo::new(stream), service).await {
                debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

/// What `/readyz` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Ready,
    Draining,
    /// A shared session store does not answer: requests that need it
    /// would get 503, so a balancer should send them elsewhere.
    StoreUnreachable,
}

fn respond<B>(req: &Request<B>, readiness: Readiness) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let (status, text) = match (req.uri().path(), readiness) {
        ("/healthz", _) => (StatusCode::OK, "ok\n"),
        ("/readyz", Readiness::Draining) => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        ("/readyz", Readiness::StoreUnreachable) => (StatusCode::SERVICE_UNAVAILABLE, "session store unreachable\n"),
        ("/readyz", Readiness::Ready) => (StatusCode::OK, "ready\n"),
        ("/metrics", _) => {
            let metrics = metrics::global();
            metrics.log_lines_dropped_total(telemetry::dropped_lines());
            let mut response = Response::new(Body::full(metrics.encode()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                // What `prometheus-client` writes: OpenMetrics 1.0 text.
                http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            return response;
        }
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

    fn get(path: &str, readiness: Readiness) -> StatusCode {
        let req = Request::get(path).body(()).unwrap_or_default();
        respond(&req, readiness).status()
    }

    #[test]
    fn healthz_is_ok_while_readyz_turns_503_on_drain_or_an_unreachable_store() {
        for readiness in [Readiness::Ready, Readiness::Draining, Readiness::StoreUnreachable] {
            assert_eq!(get("/healthz", readiness), StatusCode::OK);
        }
        assert_eq!(get("/readyz", Readiness::Ready), StatusCode::OK);
        assert_eq!(get("/readyz", Readiness::Draining), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            get("/readyz", Readiness::StoreUnreachable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get("/metrics", Readiness::Ready), StatusCode::OK);
        assert_eq!(get("/nothing", Readiness::Ready), StatusCode::NOT_FOUND);
        let post = Request::post("/healthz").body(()).unwrap_or_default();
        assert_eq!(
            respond(&post, Readiness::Ready).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
