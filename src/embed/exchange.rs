//! The PAT exchange (SPEC §4): a valid PAT becomes a session and a
//! `Partitioned` cookie scoped to the app's mount; the answer is a 303 to the
//! app's root, built from `public_url`, never from `Host`.

use cookie::{Cookie, SameSite};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::rewrite;
use super::Mounted;
use crate::body::{Body, RequestBody};
use crate::config::App;
use crate::error::GatewayError;
use crate::metrics::{self, Exchange};
use crate::proxy::Downstream;
use crate::query;
use crate::request_id::X_REQUEST_ID;
use crate::session::{self, SessionRecord};
use crate::state::State;
use crate::telemetry::audit::{self, Refusal};
use crate::token;

/// Swaps the request's PAT for a session. Every failure that is the
/// client's counts against its address's `bad_pat_per_minute`. Each try is
/// one audit event: ok, or refused and why.
pub(super) async fn exchange(
    app: &App,
    mounted: Mounted,
    req: Request<RequestBody>,
    state: &State,
    downstream: &Downstream,
) -> Result<Response<Body>, GatewayError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(GatewayError::MethodNotAllowed("GET"));
    }
    let query = req.uri().query().unwrap_or("");
    let metrics = metrics::global();
    let caller = audit::Caller {
        request_id: req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        client: downstream
            .peer(&state.config.server.trusted_proxies)
            .client_ip(req.headers()),
    };
    match redeem(app, query, state).await {
        Ok(redeemed) => {
            metrics.exchange(Exchange::Ok);
            audit::exchange_ok(caller, &redeemed.email, &app.id, &redeemed.hash);
            let kept: Vec<&str> = query::pairs(query).filter(|p| !p.is_pat()).map(|p| p.raw).collect();
            let path = match mounted {
                Mounted::Prefix => format!("/embed-apps/{}", app.id),
                Mounted::Host => "/".to_owned(),
            };
            let cookie = session_cookie(&state.config.session.cookie_name, &redeemed.token, path);
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
        Err(Refused { error, why: None, user }) => {
            metrics.exchange(Exchange::StoreError);
            audit::exchange_refused(caller, user.as_deref(), &app.id, "error");
            Err(error)
        }
        Err(Refused {
            error,
            why: Some(why),
            user,
        }) => {
            let user = user.as_deref();
            state.limits.failed_token(caller.client).map_err(|retry| {
                metrics.exchange(Exchange::RateLimited);
                audit::exchange_refused(caller, user, &app.id, Refusal::RateLimited.name());
                GatewayError::TooManyRequests(retry)
            })?;
            metrics.exchange(match why {
                Refusal::UserGone => Exchange::UserGone,
                Refusal::AccessGone => Exchange::AccessGone,
                _ => Exchange::Invalid,
            });
            audit::exchange_refused(caller, user, &app.id, why.name());
            tracing::info!(
                app = %app.id,
                client = %caller.client,
                status = error.status().as_u16(),
                "PAT exchange refused"
            );
            Err(error)
        }
    }
}

/// A session just started.
struct Redeemed {
    /// The session's token, for the cookie.
    token: String,
    hash: token::TokenHash,
    email: String,
}

/// An exchange refused: the answer, why (`None`: the gateway's or its
/// store's fault, not the client's), and whose PAT it was, when known.
struct Refused {
    error: GatewayError,
    why: Option<Refusal>,
    user: Option<String>,
}

impl Refused {
    fn invalid(why: Refusal) -> Self {
        Refused {
            error: GatewayError::InvalidPat,
            why: Some(why),
            user: None,
        }
    }

    fn fault(error: impl Into<GatewayError>, user: Option<&str>) -> Self {
        Refused {
            error: error.into(),
            why: None,
            user: user.map(str::to_owned),
        }
    }
}

/// Checks the PAT and creates the session.
async fn redeem(app: &App, query: &str, state: &State) -> Result<Redeemed, Refused> {
    let now = session::now_ms();
    // One PAT parameter, or none counts: which of two a proxy, a log or
    // the portal would read is anyone's guess.
    let mut pats = query::pairs(query).filter(|p| p.is_pat());
    let pat = match (pats.next(), pats.next()) {
        (Some(p), None) => p.value,
        _ => return Err(Refused::invalid(Refusal::Malformed)),
    };
    if !token::looks_like_pat(&pat) {
        return Err(Refused::invalid(Refusal::Malformed));
    }
    let pat_hash = token::hash(&pat);
    let single_use = state.config.pat.single_use;
    let minted = state
        .store
        .take_pat(&pat_hash, &app.id, single_use, now)
        .await
        .map_err(|e| Refused::fault(e, None))?
        .map_err(Refused::invalid)?;
    let refused = |error: GatewayError, why: Refusal| Refused {
        error,
        why: Some(why),
        user: Some(minted.email.clone()),
    };
    // The directory (or the portal's word), as it is now, decides who the
    // user is and may be.
    let Some(groups) = state.identify(&minted.email, &minted.groups) else {
        return Err(refused(
            GatewayError::NotFound("user no longer exists".into()),
            Refusal::UserGone,
        ));
    };
    if !app.admits(&minted.email, &groups) {
        return Err(refused(
            GatewayError::Forbidden("this user may no longer open this app"),
            Refusal::AccessGone,
        ));
    }
    let token = token::new_session_token()
        .map_err(|e| Refused::fault(GatewayError::Internal(Box::new(e)), Some(&minted.email)))?;
    let hash = token::hash(&token);
    let session = SessionRecord::start(&minted, groups, state.config.session.max_lifetime, now);
    // Refused when a revocation removed the PAT since it was taken.
    let started = state
        .store
        .start_session(hash, session, &pat_hash, single_use)
        .await
        .map_err(|e| Refused::fault(e, Some(&minted.email)))?;
    if !started {
        return Err(refused(GatewayError::InvalidPat, Refusal::Unknown));
    }
    tracing::info!(user = %minted.email, app = %app.id, "session started");
    Ok(Redeemed {
        token,
        hash,
        email: minted.email,
    })
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
    // Framed only where the app is (every answer on its tree is).
    rewrite::set_frame_ancestors(headers, &app.frame_ancestors_directive);
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
