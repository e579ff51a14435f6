//! One request's way through: route it, run the route, log one access line.

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use tracing::{field, info, info_span, Instrument};

use crate::body::Body;
use crate::error::GatewayError;
use crate::metrics::{RouteKind, Tag};
use crate::proxy::{self, Downstream, Forward};
use crate::request_id::{self, X_REQUEST_ID};
use crate::router::{route, Route};
use crate::state::State;
use crate::telemetry;
use crate::{api, embed};

/// Serves one request; every failure becomes its JSON error response.
pub(super) async fn handle(
    req: Request<Incoming>,
    state: &State,
    local: &Arc<embed::Local>,
    downstream: &Downstream,
) -> Response<Body> {
    let trusted = downstream.peer(&state.config.server.trusted_proxies).is_trusted();
    let request_id = request_id::of(req.headers(), trusted);
    // `app` and `user` are recorded by the embed route's access-log phase.
    let span = info_span!(
        "request",
        request_id = %request_id.to_str().unwrap_or(""),
        app = field::Empty,
        user = field::Empty
    );
    let mut req = req;
    // The upstream gets it (the proxy forwards it like any end-to-end field).
    req.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
    async move {
        let started = Instant::now();
        // What the access line needs of the request, taken before it moves
        // on (and only when the line is written).
        let access = state.config.log.access.then(|| {
            let client = downstream
                .peer(&state.config.server.trusted_proxies)
                .client_ip(req.headers());
            (
                req.method().clone(),
                telemetry::redacted_target(req.uri()).into_owned(),
                req.version(),
                client,
            )
        });
        let mut tag = Tag::new(RouteKind::Other);
        let mut response = dispatch(req, state, local, downstream, &mut tag)
            .await
            .unwrap_or_else(GatewayError::into_response);
        response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        state
            .request_metrics
            .record(tag, response.status().as_u16(), started.elapsed());
        if let Some((method, path, version, client)) = access {
            // `path`, not `target`: a JSON line already has tracing's own
            // `target` key, and a reader would lose one of the two.
            info!(
                target: "embedgate::access",
                method = %method,
                path = %path,
                version = ?version,
                route = tag.route.name(),
                client = %client,
                status = response.status().as_u16(),
                elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "request"
            );
        }
        response
    }
    .instrument(span)
    .await
}

/// Runs the request's route; says in `tag` what the request was, for the
/// metrics.
async fn dispatch(
    req: Request<Incoming>,
    state: &State,
    local: &Arc<embed::Local>,
    downstream: &Downstream,
    tag: &mut Tag,
) -> Result<Response<Body>, GatewayError> {
    let config = &state.config;
    // An app on its own host owns every path of that host, the gateway's
    // own trees included.
    if let Some(app) = state.app_at_host(|| request_host(&req)) {
        return embed::handle_host(app, req, state, local, downstream, tag).await;
    }
    match route(req.uri().path(), config.passthrough.is_some()) {
        Route::Api(rest) => {
            tag.route = RouteKind::Api;
            let rest = rest.to_owned();
            api::handle(&rest, req, state).await
        }
        Route::Embed(rest) => {
            tag.route = RouteKind::Embed;
            let rest = rest.to_owned();
            embed::handle(&rest, req, state, local, downstream, tag).await
        }
        Route::WellKnown("jwks.json") => {
            tag.route = RouteKind::Jwks;
            Ok(jwks(state))
        }
        Route::WellKnown(_) | Route::NotFound => Err(GatewayError::PathNotFound("not found")),
        Route::Passthrough => {
            tag.route = RouteKind::Passthrough;
            let Some(passthrough) = &config.passthrough else {
                return Err(GatewayError::PathNotFound("not found"));
            };
            let path_and_query = origin_form(&req)?;
            let forward = Forward::new(
                &passthrough.upstream,
                &path_and_query,
                downstream,
                &config.server.trusted_proxies,
                config.server.upstream_timeout,
            );
            proxy::forward(&state.client, req, forward).await
        }
    }
}

/// The host a request is for: HTTP/2's `:authority` (or an HTTP/1
/// absolute-form target's, RFC 9112 §3.2.2), else the `Host` field.
fn request_host(req: &Request<Incoming>) -> Option<&str> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req.headers().get(http::header::HOST)?.to_str().ok(),
    }
}

/// The request target as `/path?query` (RFC 9112 §3.2.1 origin-form); the
/// gateway is no forward proxy, so other forms are refused.
fn origin_form(req: &Request<Incoming>) -> Result<String, GatewayError> {
    match req.uri().path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => Ok(pq.as_str().to_owned()),
        _ => Err(GatewayError::BadRequest("request target must be a path")),
    }
}

/// `GET /.well-known/embedgate/jwks.json`: the keys that verify
/// `X-Embed-Assertion` (RFC 7517). Cacheable briefly: a key rotates only
/// with a restart or reload.
fn jwks(state: &State) -> Response<Body> {
    let mut response = Response::new(Body::full(state.signer.jwks_json().to_owned()));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=300"),
    );
    response
}
