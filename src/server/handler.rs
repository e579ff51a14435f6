//! One request's way through: route it, run the route, and keep what its
//! access line will say.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tracing::{debug, debug_span, error, field, info_span, Instrument};

use crate::api;
use crate::body::{Body, Direction, RequestBody, Tallied, Tally};
use crate::embed::{self, rewrite};
use crate::error::GatewayError;
use crate::metrics::{RouteKind, Tag};
use crate::proxy::{self, Downstream, Forward};
use crate::query;
use crate::request_id::{self, X_REQUEST_ID};
use crate::router::{route, Route};
use crate::state::State;
use crate::telemetry::access::{Access, Answered};

/// Serves one request; every failure becomes its JSON error response. The
/// request's access record, when the access log is on, goes with both
/// bodies and writes its line when the last of them is done.
pub(super) async fn handle(
    req: Request<Incoming>,
    state: &State,
    local: &Arc<embed::Local>,
    (downstream, memo): (&Downstream, &embed::ConnectionMemo),
) -> Response<Tallied<Body>> {
    let peer = downstream.peer(&state.config.server.trusted_proxies);
    let request_id = request_id::of(req.headers(), peer.is_trusted());
    // Every line a request causes carries its id: through this span, or
    // as a field of the line. The API and the exchanges log at `info`, so
    // their span is an `info` one; a proxied request's only `info` line is
    // its access line, which names the id itself, so its span is a `debug`
    // one: at `info`, the hot path pays for no span at all. `app` and `user`
    // are recorded by the embed route's access-log phase.
    let span = if logs_at_info(&req) {
        info_span!(
            "request",
            request_id = %request_id.to_str().unwrap_or(""),
            app = field::Empty,
            user = field::Empty
        )
    } else {
        debug_span!(
            "request",
            request_id = %request_id.to_str().unwrap_or(""),
            app = field::Empty,
            user = field::Empty
        )
    };
    let started = Instant::now();
    let access = Access::begin(
        state.config.log.access,
        started,
        &request_id,
        || peer.client_ip(req.headers()),
        req.method(),
        req.uri(),
        req.version(),
    );
    let mut req = req.map(|body| Tallied::new(body, tally(&access), Direction::Received));
    // Room for what the proxy adds (the request id, the forwarding and the
    // identity headers) at once, rather than growing the map twice.
    req.headers_mut().reserve(EXTRA_HEADERS);
    // The upstream gets it (the proxy forwards it like any end-to-end field).
    req.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
    async move {
        let mut tag = Tag::new(RouteKind::Other);
        let mut refused_in = None;
        let mut response = dispatch(req, state, local, (downstream, memo), &mut tag, &mut refused_in)
            .await
            .unwrap_or_else(|error| {
                observe(&error, &request_id);
                let mut response = error.into_response();
                // An error on an app's tree is framed as the app is.
                if let Some(policy) = refused_in.or_else(|| embed::framing(tag.route, tag.app, state)) {
                    rewrite::set_frame_ancestors(response.headers_mut(), policy);
                }
                response
            });
        response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        let status = response.status().as_u16();
        state.request_metrics.record(tag, status, started.elapsed());
        let upstream = response.body().upstream_seen();
        if let Some(access) = &access {
            access.answered(Answered {
                route: tag.route,
                app: tag.app.and_then(|i| state.config.apps.get(i)).map(|app| app.id.clone()),
                status,
                upstream,
            });
        }
        response.map(|body| Tallied::new(body, tally(&access), Direction::Sent))
    }
    .instrument(span)
    .await
}

/// Logs and counts an error that ends a request (its response is made
/// apart, without side effects).
fn observe(error: &GatewayError, request_id: &HeaderValue) {
    match error {
        // Named here: a proxied request may have no span.
        GatewayError::Internal(cause) => {
            let id = request_id.to_str().unwrap_or("");
            error!(request_id = id, origin = ?error.origin(), error = %cause, "internal error");
        }
        // The store logs each outage once; a line per request would flood
        // the log while it lasts.
        GatewayError::StoreUnavailable(cause) => debug!(error = %cause, "session store unavailable"),
        _ => {}
    }
    if let Some(kind) = error.upstream_failure() {
        crate::metrics::global().upstream_error(kind);
    }
}

/// How many fields a proxied request may gain on its way up: its id,
/// three forwarding headers, four identity headers and the prefix.
const EXTRA_HEADERS: usize = 9;

/// Whether a request is of a route that logs at `info` besides its access
/// line: the API, and PAT exchanges (a query with a PAT parameter).
fn logs_at_info(req: &Request<Incoming>) -> bool {
    req.uri().path().starts_with("/api/") || req.uri().query().is_some_and(|q| query::pairs(q).any(|p| p.is_pat()))
}

fn tally(access: &Option<Arc<Access>>) -> Option<Arc<dyn Tally>> {
    access.clone().map(|a| a as Arc<dyn Tally>)
}

/// Runs the request's route; says in `tag` what the request was, for the
/// metrics. A request refused by the request rules (`router::check`) on
/// an app's tree says in `refused_in` which framing policy its answer
/// carries (the route has not run, so `tag` cannot tell).
async fn dispatch<'s>(
    req: Request<RequestBody>,
    state: &'s State,
    local: &Arc<embed::Local>,
    (downstream, memo): (&Downstream, &embed::ConnectionMemo),
    tag: &mut Tag,
    refused_in: &mut Option<&'s HeaderValue>,
) -> Result<Response<Body>, GatewayError> {
    let config = &state.config;
    // An app on its own host owns every path of that host, the gateway's
    // own trees included, and its paths get the rules of those trees.
    let host_app = state.app_at_host(|| request_host(&req));
    if let Err(error) = crate::router::check(&req, config.server.max_header_bytes, host_app.is_some()) {
        *refused_in = match (host_app, route(req.uri().path(), true)) {
            (Some(app), _) => Some(&app.frame_ancestors_directive),
            (None, Route::Embed(rest)) => Some(embed::framing_at(rest, state)),
            (None, _) => None,
        };
        return Err(error);
    }
    if let Some(app) = host_app {
        return embed::handle_host(app, req, state, local, downstream, memo, tag).await;
    }
    match route(req.uri().path(), config.passthrough.is_some()) {
        Route::Api(rest) => {
            tag.route = RouteKind::Api;
            let rest = rest.to_owned();
            let client = downstream.peer(&config.server.trusted_proxies).client_ip(req.headers());
            api::handle(&rest, req, state, client).await
        }
        Route::Embed(rest) => {
            tag.route = RouteKind::Embed;
            // Where `rest` starts, rather than a copy of it: the request
            // goes on by value.
            let rest_at = req.uri().path().len() - rest.len();
            embed::handle(rest_at, req, state, local, downstream, memo, tag).await
        }
        Route::WellKnown("jwks.json") => {
            tag.route = RouteKind::Jwks;
            Ok(jwks(state))
        }
        Route::Helper { module } => {
            tag.route = RouteKind::Helper;
            crate::helper::serve(req.method(), req.headers(), module)
        }
        Route::WellKnown(_) | Route::NotFound => Err(GatewayError::PathNotFound("not found")),
        Route::Passthrough => {
            tag.route = RouteKind::Passthrough;
            let Some(passthrough) = &config.passthrough else {
                return Err(GatewayError::PathNotFound("not found"));
            };
            let forward = Forward::new(&passthrough.upstream, origin_form(&req)?, downstream, &config.server);
            proxy::forward(&state.client, req, forward).await
        }
    }
}

/// The host a request is for: HTTP/2's `:authority` (or an HTTP/1
/// absolute-form target's, RFC 9112 §3.2.2), else the `Host` field.
fn request_host(req: &Request<RequestBody>) -> Option<&str> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req.headers().get(http::header::HOST)?.to_str().ok(),
    }
}

/// The request target as `/path?query` (RFC 9112 §3.2.1 origin-form),
/// shared with the request (not copied); the gateway is no forward proxy,
/// so other forms are refused.
fn origin_form(req: &Request<RequestBody>) -> Result<http::uri::PathAndQuery, GatewayError> {
    match req.uri().path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => Ok(pq.clone()),
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
