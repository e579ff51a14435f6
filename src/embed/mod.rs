//! `/embed-apps/<appId>…` (SPEC §4, §5): the PAT exchange, and the guard in
//! front of every proxied embed request — a valid session for this very app,
//! its identity added, its responses kept framable only where allowed. An
//! app with a `public_url` of its own is served the same way at the root of
//! its host ([`handle_host`]).
//!
//! Files, in the order a request meets them: [`exchange`] swaps a PAT for a
//! session; [`phases`] runs a request through a session as named steps;
//! [`cookies`] reads the session cookie; [`local`] keeps what this process
//! holds beside the store (identity headers, open tunnels); [`rewrite`] and
//! [`expired`] shape the responses.

pub(crate) mod cookies;
mod exchange;
mod expired;
mod framing;
mod local;
mod phases;
pub(crate) mod rewrite;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response};

use crate::body::{Body, RequestBody};
use crate::config::App;
use crate::error::GatewayError;
use crate::metrics::{RouteKind, Tag};
use crate::proxy::Downstream;
use crate::query;
use crate::state::State;
use crate::token::HashMemo;

pub(crate) use local::Local;

/// What the embed route remembers of one client connection, beside what
/// the proxy knows of it ([`Downstream`]): the hash of the session cookie
/// it last sent, since a browser sends the same one on every request. The
/// server keeps one per connection for this route and interprets nothing
/// of it.
#[derive(Debug, Default)]
pub(crate) struct ConnectionMemo {
    cookie_hash: HashMemo,
}

/// Where an app is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mounted {
    /// Under `/embed-apps/<appId>/` on the gateway's host: the prefix is
    /// stripped going up, and put back on redirects and cookie paths
    /// coming down.
    Prefix,
    /// At the root of its own host (`[[apps]] public_url`): paths pass
    /// unchanged both ways.
    Host,
}

/// Serves a request on the host of `app` (an app with `public_url`): its
/// exchange at `/embed-apps/<appId>?personal-access-token=…`, and every
/// other path, unchanged, through a session to its upstream.
pub(crate) async fn handle_host(
    app: &App,
    req: Request<RequestBody>,
    state: &State,
    local: &std::sync::Arc<Local>,
    downstream: &Downstream,
    memo: &ConnectionMemo,
    tag: &mut Tag,
) -> Result<Response<Body>, GatewayError> {
    tag.app = Some(app.index);
    framing::note_unlisted_framer(app, app.public_base(&state.config.server.public_url), req.headers());
    let path = req.uri().path();
    let is_exchange = path
        .strip_prefix("/embed-apps/")
        .is_some_and(|id| id.eq_ignore_ascii_case(&app.id))
        && req.uri().query().is_some_and(|q| query::pairs(q).any(|p| p.is_pat()));
    if is_exchange {
        tag.route = RouteKind::Exchange;
        return exchange::exchange(app, Mounted::Host, req, state, downstream).await;
    }
    tag.route = RouteKind::Embed;
    // On its own host, the app gets the target as it came (shared, not
    // copied).
    let target = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    phases::proxy(app, Mounted::Host, target, req, state, local, (downstream, memo)).await
}

/// Serves `/embed-apps/<rest>`, where `<rest>` starts at byte `rest_at`
/// of the request's path.
pub(crate) async fn handle(
    rest_at: usize,
    req: Request<RequestBody>,
    state: &State,
    local: &std::sync::Arc<Local>,
    downstream: &Downstream,
    memo: &ConnectionMemo,
    tag: &mut Tag,
) -> Result<Response<Body>, GatewayError> {
    let rest = req.uri().path().get(rest_at..).unwrap_or("");
    let (app_segment, below) = match rest.split_once('/') {
        Some((app, below)) => (app, Some(below)),
        None => (rest, None),
    };
    // App ids are lowercase; a request may spell one otherwise.
    let app = if app_segment.bytes().any(|b| b.is_ascii_uppercase()) {
        state.app(&app_segment.to_ascii_lowercase())
    } else {
        state.app(app_segment)
    }
    .ok_or(GatewayError::PathNotFound("no such embedded app"))?;
    if app.host.is_some() {
        return Err(GatewayError::PathNotFound("this app is served at its own host"));
    }
    tag.app = Some(app.index);
    framing::note_unlisted_framer(app, &state.config.server.public_url, req.headers());
    match below {
        Some(below) => {
            let target = below_target(below, req.uri().query())?;
            phases::proxy(app, Mounted::Prefix, target, req, state, local, (downstream, memo)).await
        }
        None if req.uri().query().is_some_and(|q| query::pairs(q).any(|p| p.is_pat())) => {
            tag.route = RouteKind::Exchange;
            exchange::exchange(app, Mounted::Prefix, req, state, downstream).await
        }
        // `/embed-apps/<appId>` without a PAT: the app's root.
        None => Ok(exchange::see_other(
            &state.config.server.public_url,
            app,
            Mounted::Prefix,
            req.uri().query().unwrap_or(""),
            None,
        )),
    }
}

/// The framing policy of a gateway-made answer (an error) in the tree of
/// the app the request was for (`app`, as its [`Tag`] says): that app's
/// `frame-ancestors`, or `'none'` for a request under `/embed-apps/` that
/// named no app served there. `None`: not an app's tree.
pub(crate) fn framing(route: RouteKind, app: Option<usize>, state: &State) -> Option<&HeaderValue> {
    match app.and_then(|i| state.config.apps.get(i)) {
        Some(app) => Some(&app.frame_ancestors_directive),
        None if matches!(route, RouteKind::Embed | RouteKind::Exchange) => Some(&NO_FRAMING),
        None => None,
    }
}

/// [`framing`] for a path `/embed-apps/<rest>` that was refused before it
/// was routed: its app's policy, or `'none'`.
pub(crate) fn framing_at<'s>(rest: &str, state: &'s State) -> &'s HeaderValue {
    let segment = rest.split('/').next().unwrap_or_default();
    match state.app(&segment.to_ascii_lowercase()) {
        Some(app) if app.host.is_none() => &app.frame_ancestors_directive,
        _ => &NO_FRAMING,
    }
}

/// `frame-ancestors 'none'`: no page may frame this answer.
static NO_FRAMING: HeaderValue = HeaderValue::from_static("frame-ancestors 'none'");

/// `/<below>?<query>`: what the upstream is asked for under the prefix.
fn below_target(below: &str, query: Option<&str>) -> Result<PathAndQuery, GatewayError> {
    let mut target = String::with_capacity(2 + below.len() + query.map_or(0, str::len));
    target.push('/');
    target.push_str(below);
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    // From the `String` itself: parsed, not copied again.
    PathAndQuery::try_from(target).map_err(|_| GatewayError::BadRequest("invalid request target"))
}
