//! `/embed-apps/<appId>…` (SPEC §4, §5): the PAT exchange, and the guard in
//! front of every proxied embed request — a valid session for this very app,
//! its identity added, its responses kept framable only where allowed.
//!
//! Files, in the order a request meets them: [`exchange`] swaps a PAT for a
//! session; [`phases`] runs a request through a session as named steps;
//! [`cookies`] reads the session cookie; [`local`] keeps what this process
//! holds beside the store (identity headers, open tunnels); [`rewrite`] and
//! [`expired`] shape the responses.

mod cookies;
mod exchange;
mod expired;
mod local;
mod phases;
mod rewrite;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::body::Body;
use crate::error::GatewayError;
use crate::proxy::Downstream;
use crate::query;
use crate::state::State;

pub(crate) use local::Local;

/// Serves `/embed-apps/<rest>`.
pub(crate) async fn handle(
    rest: &str,
    req: Request<Incoming>,
    state: &State,
    local: &std::sync::Arc<Local>,
    downstream: &Downstream,
) -> Result<Response<Body>, GatewayError> {
    let (app_segment, below) = match rest.split_once('/') {
        Some((app, below)) => (app, Some(below)),
        None => (rest, None),
    };
    let app = state
        .app(&app_segment.to_ascii_lowercase())
        .ok_or(GatewayError::PathNotFound("no such embedded app"))?;
    match below {
        Some(below) => phases::proxy(app, below, req, state, local, downstream).await,
        None if req.uri().query().is_some_and(|q| query::pairs(q).any(|p| p.is_pat())) => {
            exchange::exchange(app, req, state, downstream).await
        }
        // `/embed-apps/<appId>` without a PAT: the app's root.
        None => Ok(exchange::see_other(
            &state.config.server.public_url,
            app,
            req.uri().query().unwrap_or(""),
            None,
        )),
    }
}
