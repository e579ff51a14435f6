//! The PAT exchange (SPEC §4): a valid PAT becomes a session and a
//! `Partitioned` cookie scoped to the app's mount; the answer is a 303 to the
//! app's root, built from `public_url`, never from `Host`.

use cookie::{Cookie, SameSite};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Mounted;
use crate::body::Body;
use crate::config::App;
use crate::error::GatewayError;
use crate::metrics::{self, Exchange};
use crate::proxy::Downstream;
use crate::query;
use crate::session::{self, SessionRecord};
use crate::state::State;
use crate::token;

/// Swaps the request's PAT for a session. Every failure that is the
/// client's counts against its address's `bad_pat_per_minute`.
pub(super) async fn exchange(
    app: &App,
    mounted: Mounted,
    req: Request<Incoming>,
    state: &State,
    downstream: &Downstream,
) -> Result<Response<Body>, GatewayError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(GatewayError::MethodNotAllowed("GET"));
    }
    let query = req.uri().query().unwrap_or("");
    let metrics = metrics::global();
    match redeem(app, query, state).await {
        Ok(token) => {
            metrics.exchange(Exchange::Ok);
            let kept: Vec<&str> = query::pairs(query).filter(|p| !p.is_pat()).map(|p| p.raw).collect();
            let path = match mounted {
                Mounted::Prefix => format!("/embed-apps/{}", app.id),
                Mounted::Host => "/".to_owned(),
            };
            let cookie = session_cookie(&state.config.session.cookie_name, &token, path);
            Ok(see_other(
                &state.config.server.public_url,
                app,
                mounted,
                &kept.join("&"),
                Some(cookie),
            ))
        }
        // A fault of the gateway's own, or of its store, is not the
        // client's failed try.
        Err(error @ (GatewayError::Internal(_) | GatewayError::StoreUnavailable(_))) => {
            metrics.exchange(Exchange::StoreError);
            Err(error)
        }
        Err(error) => {
            let client = downstream
                .peer(&state.config.server.trusted_proxies)
                .client_ip(req.headers());
            state.limits.failed_exchange(client).map_err(|retry| {
                metrics.exchange(Exchange::RateLimited);
                GatewayError::TooManyRequests(retry)
            })?;
            metrics.exchange(match error {
                GatewayError::NotFound(_) => Exchange::UserGone,
                GatewayError::Forbidden(_) => Exchange::AccessGone,
                _ => Exchange::Invalid,
            });
            tracing::info!(app = %app.id, client = %client, status = error.status().as_u16(), "PAT exchange refused");
            Err(error)
        }
    }
}

/// Checks the PAT and creates the session; returns the session's token.
async fn redeem(app: &App, query: &str, state: &State) -> Result<String, GatewayError> {
    let now = session::now_ms();
    let pat = query::pairs(query)
        .find(|p| p.is_pat())
        .map(|p| p.value)
        .unwrap_or_default();
    if !token::looks_like_pat(&pat) {
        return Err(GatewayError::InvalidPat);
    }
    let pat_hash = token::hash(&pat);
    let single_use = state.config.pat.single_use;
    let minted = state
        .store
        .take_pat(&pat_hash, &app.id, single_use, now)
        .await?
        .ok_or(GatewayError::InvalidPat)?;
    // The directory (or the portal's word), as it is now, decides who the
    // user is and may be.
    let groups = state
        .identify(&minted.email, &minted.groups)
        .ok_or_else(|| GatewayError::NotFound("user no longer exists".into()))?;
    if !app.admits(&minted.email, &groups) {
        return Err(GatewayError::Forbidden("this user may no longer open this app"));
    }
    let token = token::new_session_token().map_err(|e| GatewayError::Internal(Box::new(e)))?;
    let session = SessionRecord::start(&minted, groups, state.config.session.max_lifetime, now);
    // Refused when a revocation removed the PAT since it was taken.
    let started = state
        .store
        .start_session(token::hash(&token), session, &pat_hash, single_use)
        .await?;
    if !started {
        return Err(GatewayError::InvalidPat);
    }
    tracing::info!(user = %minted.email, app = %app.id, "session started");
    Ok(token)
}

/// The session cookie of SPEC §4: scoped to the app's mount (`path`: its
/// prefix, or `/` on its own host, host-only either way), never sent to
/// scripts or over plain HTTP, sent cross-site, in the framing site's
/// partition (CHIPS).
fn session_cookie(name: &str, token: &str, path: String) -> Cookie<'static> {
    Cookie::build((name.to_owned(), token.to_owned()))
        .path(path)
        .secure(true)
        .http_only(true)
        .same_site(SameSite::None)
        .partitioned(true)
        .build()
}

/// 303 to the app's root — under the mount, or of its own host — as a URL
/// from `public_url` (the gateway's or the app's), never from `Host`, with
/// `query` kept, and the cookie when one was made.
pub(super) fn see_other(
    public_url: &str,
    app: &App,
    mounted: Mounted,
    query: &str,
    cookie: Option<Cookie<'_>>,
) -> Response<Body> {
    let mut location = match mounted {
        Mounted::Prefix => format!("{public_url}/embed-apps/{}/", app.id),
        Mounted::Host => format!("{}/", app.public_base(public_url)),
    };
    if !query.is_empty() {
        location.push('?');
        location.push_str(query);
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c.to_string()).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";

    #[test]
    fn session_cookie_is_partitioned_and_path_scoped() {
        let text = session_cookie("embedgate_session", "abc", format!("/embed-apps/{APP}")).to_string();
        let (pair, attributes) = text.split_once("; ").expect("attributes");
        assert_eq!(pair, "embedgate_session=abc");
        let mut attributes: Vec<&str> = attributes.split("; ").collect();
        attributes.sort_unstable();
        let path = format!("Path=/embed-apps/{APP}");
        let mut expected = vec![path.as_str(), "Secure", "HttpOnly", "SameSite=None", "Partitioned"];
        expected.sort_unstable();
        assert_eq!(attributes, expected);
    }

    #[test]
    fn an_app_hosts_cookie_is_host_only_at_the_root() {
        let text = session_cookie("embedgate_session", "abc", "/".into()).to_string();
        let mut attributes: Vec<&str> = text.split("; ").skip(1).collect();
        attributes.sort_unstable();
        assert_eq!(
            attributes,
            ["HttpOnly", "Partitioned", "Path=/", "SameSite=None", "Secure"]
        );
    }
}
