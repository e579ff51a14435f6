//! `/embed-apps/<appId>…` (SPEC §4, §5): the PAT exchange, and the guard in
//! front of every proxied embed request — a valid session for this very app,
//! its identity added, its responses kept framable only where allowed.

pub mod expired;
pub mod rewrite;

use std::time::{Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::assertion::{self, Claims};
use crate::body::Body;
use crate::config::App;
use crate::error::GatewayError;
use crate::proxy::headers::forwarded::{Peer, X_FORWARDED_PREFIX};
use crate::proxy::{self, Forward};
use crate::query;
use crate::server::handler::ConnContext;
use crate::session::{Identity, Session, SessionView};
use crate::state::State;
use crate::token::{self, TokenHash};

static X_EMBED_USER: HeaderName = HeaderName::from_static("x-embed-user");
static X_EMBED_GROUPS: HeaderName = HeaderName::from_static("x-embed-groups");
static X_EMBED_APP: HeaderName = HeaderName::from_static("x-embed-app");
static X_EMBED_ASSERTION: HeaderName = HeaderName::from_static("x-embed-assertion");

/// Serves `/embed-apps/<rest>`.
pub async fn handle(
    rest: &str,
    req: Request<Incoming>,
    state: &State,
    conn: &ConnContext,
) -> Result<Response<Body>, GatewayError> {
    let (app_segment, below) = match rest.split_once('/') {
        Some((app, below)) => (app, Some(below)),
        None => (rest, None),
    };
    let app = state
        .app(&app_segment.to_ascii_lowercase())
        .ok_or(GatewayError::NotFound("no such embedded app"))?;
    match below {
        Some(below) => proxy(app, below, req, state, conn).await,
        None if req.uri().query().is_some_and(|q| query::pairs(q).any(|p| p.is_pat())) => {
            exchange(app, req, state, conn)
        }
        // `/embed-apps/<appId>` without a PAT: the app's root.
        None => Ok(see_other(
            &state.config.server.public_url,
            app,
            req.uri().query().unwrap_or(""),
            None,
        )),
    }
}

/// SPEC §4: swaps a PAT for a session. Every failure counts against the
/// client address's `bad_pat_per_minute`.
fn exchange(
    app: &App,
    req: Request<Incoming>,
    state: &State,
    conn: &ConnContext,
) -> Result<Response<Body>, GatewayError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(GatewayError::MethodNotAllowed("GET"));
    }
    let query = req.uri().query().unwrap_or("");
    match redeem(app, query, state) {
        Ok(token) => {
            let kept: Vec<&str> = query::pairs(query).filter(|p| !p.is_pat()).map(|p| p.raw).collect();
            let cookie = session_cookie(&state.config.session.cookie_name, &token, &app.id);
            Ok(see_other(
                &state.config.server.public_url,
                app,
                &kept.join("&"),
                Some(cookie),
            ))
        }
        // A fault of the gateway's own is not the client's failed try.
        Err(error @ GatewayError::Internal(_)) => Err(error),
        Err(error) => {
            let peer = peer(state, conn);
            let client = peer.client_ip(req.headers());
            state
                .limits
                .failed_exchange(client)
                .map_err(GatewayError::TooManyRequests)?;
            tracing::info!(app = %app.id, client = %client, status = error.status().as_u16(), "PAT exchange refused");
            Err(error)
        }
    }
}

/// Checks the PAT and creates the session; returns its token.
fn redeem(app: &App, query: &str, state: &State) -> Result<String, GatewayError> {
    let now = Instant::now();
    let pat = query::pairs(query)
        .find(|p| p.is_pat())
        .map(|p| p.value)
        .unwrap_or_default();
    if !token::looks_like_pat(&pat) {
        return Err(GatewayError::InvalidPat);
    }
    let record = state
        .store
        .take_pat(&token::hash(&pat), &app.id, state.config.pat.single_use, now)
        .ok_or(GatewayError::InvalidPat)?;
    let user = state
        .user(&record.email)
        .ok_or_else(|| GatewayError::Unknown("user no longer exists".into()))?;
    if !app.admits(user) {
        return Err(GatewayError::Forbidden("this user may no longer open this app"));
    }
    let token = token::new_session_token().map_err(|e| GatewayError::Internal(Box::new(e)))?;
    let hash = token::hash(&token);
    let identity = Identity {
        email: user.email.clone(),
        groups: user.groups.clone(),
        app_id: app.id.clone(),
    };
    let session = Session::new(identity, record.session_idle, state.config.session.max_lifetime, now);
    state.store.insert_session(hash, session);
    tracing::info!(user = %user.email, app = %app.id, "session started");
    Ok(token)
}

/// The session cookie exactly as SPEC §4 spells it.
fn session_cookie(name: &str, token: &str, app_id: &str) -> String {
    format!("{name}={token}; Path=/embed-apps/{app_id}; Secure; HttpOnly; SameSite=None; Partitioned")
}

/// 303 to the app's root under the mount (a URL from `public_url`, never
/// from `Host`), with `query` kept, and the cookie when one was made.
fn see_other(public_url: &str, app: &App, query: &str, cookie: Option<String>) -> Response<Body> {
    let mut location = format!("{public_url}/embed-apps/{}/", app.id);
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
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// SPEC §5: a request through a session, to the app's upstream.
async fn proxy(
    app: &App,
    below: &str,
    mut req: Request<Incoming>,
    state: &State,
    conn: &ConnContext,
) -> Result<Response<Body>, GatewayError> {
    if has_dot_segment(below) {
        return Err(GatewayError::BadRequest("dot segments are not allowed in embed paths"));
    }
    let cookie_name = &state.config.session.cookie_name;
    let session = find_session(req.headers(), cookie_name, app, state);
    let Some((hash, view)) = session else {
        let response = expired::respond(req.headers(), app);
        let (parts, body) = req.into_parts();
        crate::body::discard(&parts.headers, body, 0, state.config.server.header_read_timeout).await;
        return Ok(response);
    };
    remove_cookie(req.headers_mut(), cookie_name);

    let prefix = format!("/embed-apps/{}", app.id);
    let mut extra = identity_headers(&view, state)?;
    if let Ok(prefix) = HeaderValue::from_str(&prefix) {
        extra.insert(X_FORWARDED_PREFIX.clone(), prefix);
    }
    let path_and_query = match req.uri().query() {
        Some(q) => format!("/{below}?{q}"),
        None => format!("/{below}"),
    };
    // Only an upgrade becomes a tunnel that revocation must be able to end.
    let tunnel_cancel = if proxy::upgrade::is_upgrade(&req) {
        state.store.revoked(&hash).map(|f| Box::pin(f) as proxy::Cancel)
    } else {
        None
    };
    let forward = Forward {
        upstream: &app.upstream,
        path_and_query: &path_and_query,
        peer: peer(state, conn),
        timeout: state.config.server.upstream_timeout,
        extra,
        watch: &conn.watch,
        tunnel_cancel,
    };
    let mut response = proxy::forward(&state.client, req, forward).await?;
    let mount = rewrite::Mount {
        prefix: &prefix,
        public_url: &state.config.server.public_url,
        upstream_authority: app.upstream.authority(),
        upstream_base: app.upstream.base_path(),
        frame_ancestors: &app.frame_ancestors,
        cookie_name,
    };
    rewrite::apply(response.headers_mut(), &mount);
    Ok(response)
}

/// The first cookie named `cookie_name` that is a live session of `app`
/// whose user is still configured and still admitted (a reload may have
/// removed either).
fn find_session(headers: &HeaderMap, cookie_name: &str, app: &App, state: &State) -> Option<(TokenHash, SessionView)> {
    let now = Instant::now();
    cookie_values(headers, cookie_name).find_map(|value| {
        let hash = token::hash(value);
        let view = state.store.use_session(&hash, &app.id, now)?;
        let user = state.user(&view.identity.email)?;
        app.admits(user).then_some((hash, view))
    })
}

/// Every value of the cookie `name` across all `Cookie` fields.
fn cookie_values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n.trim() == name).then(|| v.trim())
        })
}

/// Removes the gateway's cookie from `Cookie`, keeping the others (joined
/// into one field, as an HTTP/1.1 upstream expects).
fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split('=').next().map(str::trim) != Some(name))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// `X-Embed-User`, `-Groups`, `-App` and `-Assertion` for this session.
fn identity_headers(view: &SessionView, state: &State) -> Result<HeaderMap, GatewayError> {
    let identity = &view.identity;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = Claims {
        iss: &state.config.server.public_url,
        aud: &identity.app_id,
        sub: &identity.email,
        groups: &identity.groups,
        iat: now,
        exp: now + assertion::LIFETIME_SECONDS,
    };
    let jwt = {
        let mut cache = view.assertion.lock().unwrap_or_else(|p| p.into_inner());
        assertion::reuse_or_sign(&mut cache, &state.signer, &claims, now)
    }
    .map_err(|e| GatewayError::Internal(Box::new(e)))?;
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| GatewayError::Internal(Box::new(e)));
    let mut headers = HeaderMap::with_capacity(5);
    headers.insert(X_EMBED_USER.clone(), value(&identity.email)?);
    headers.insert(X_EMBED_GROUPS.clone(), value(&identity.groups.join(","))?);
    headers.insert(X_EMBED_APP.clone(), value(&identity.app_id)?);
    headers.insert(X_EMBED_ASSERTION.clone(), value(&jwt)?);
    Ok(headers)
}

fn peer<'a>(state: &'a State, conn: &ConnContext) -> Peer<'a> {
    Peer {
        ip: conn.peer.ip(),
        proto: conn.proto,
        trusted_proxies: &state.config.server.trusted_proxies,
    }
}

/// Whether `path` has a `.` or `..` segment, plain or percent-encoded.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = query::decode(segment);
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookie_is_partitioned_and_path_scoped() {
        assert_eq!(
            session_cookie("embedgate_session", "abc", "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc"),
            "embedgate_session=abc; Path=/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc; Secure; HttpOnly; \
             SameSite=None; Partitioned"
        );
    }

    #[test]
    fn gateway_cookie_is_removed_and_others_joined() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; embedgate_session=secret"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(
            cookie_values(&h, "embedgate_session").collect::<Vec<_>>(),
            vec!["secret"]
        );
        remove_cookie(&mut h, "embedgate_session");
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");

        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("embedgate_session=secret"));
        remove_cookie(&mut only, "embedgate_session");
        assert!(!only.contains_key(header::COOKIE));
    }

    #[test]
    fn dot_segments_are_detected_even_encoded() {
        assert!(has_dot_segment("../x"));
        assert!(has_dot_segment("a/%2e%2E/b"));
        assert!(has_dot_segment("a/./b"));
        assert!(!has_dot_segment("a/..b/c.d"));
        assert!(!has_dot_segment(""));
    }
}
