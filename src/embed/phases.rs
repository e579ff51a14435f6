//! A request through an embed session to the app's upstream (SPEC §5), as
//! named phases in the order they run — the shape of pingora's `ProxyHttp`:
//!
//! 1. `session_check`: the request filter; finds the session or answers 401;
//! 2. `identity_headers`: what the gateway vouches for to the upstream;
//! 3. `upstream_request`: the forward itself;
//! 4. `response_rewrite`: the response filter;
//! 5. `access_log`: what the request's log lines say of it.
//!
//! Each phase's doc says what it may change; none changes anything else.

use std::sync::Arc;

use http::header::HeaderMap;
use http::uri::PathAndQuery;
use http::{Request, Response};

use super::{cookies, expired, rewrite, ConnectionMemo, Local, Mounted};
use crate::body::{self, Body, RequestBody};
use crate::config::App;
use crate::error::GatewayError;
use crate::proxy::headers::forwarded::X_FORWARDED_PREFIX;
use crate::proxy::{self, upgrade, Downstream, Forward, Vouched};
use crate::request_id::X_REQUEST_ID;
use crate::session::{self, SessionRecord};
use crate::state::State;
use crate::telemetry::audit;
use crate::token::TokenHash;

/// The most session cookies one request has looked up.
const MAX_SESSION_COOKIES: usize = 8;

/// A session found for this request.
struct Session {
    hash: TokenHash,
    record: SessionRecord,
}

/// What every phase of one request may read.
struct Embed<'a> {
    app: &'a App,
    mounted: Mounted,
    state: &'a State,
    local: &'a Arc<Local>,
    downstream: &'a Downstream,
    memo: &'a ConnectionMemo,
    /// When the request came (Unix milliseconds): one clock read for the
    /// session's expiry and the assertion's.
    now_ms: u64,
}

/// Runs the phases for `/embed-apps/<app.id>/<below>`, or for `/<below>`
/// on the app's own host; `target` is `/<below>` and the query, what the
/// upstream is asked for.
pub(super) async fn proxy(
    app: &App,
    mounted: Mounted,
    target: PathAndQuery,
    mut req: Request<RequestBody>,
    state: &State,
    local: &Arc<Local>,
    (downstream, memo): (&Downstream, &ConnectionMemo),
) -> Result<Response<Body>, GatewayError> {
    let embed = Embed {
        app,
        mounted,
        state,
        local,
        downstream,
        memo,
        now_ms: session::now_ms(),
    };
    let Some(session) = embed.session_check(&mut req).await? else {
        return Ok(embed.no_session(req).await);
    };
    let vouched = embed.identity_headers(&session)?;
    let mut response = embed.upstream_request(req, target, vouched, &session).await?;
    embed.response_rewrite(response.headers_mut());
    embed.access_log(&session);
    Ok(response)
}

impl Embed<'_> {
    /// Request filter. Finds the session cookie that is a live session of
    /// this very app (SPEC §4.4: checked on every request, never left to
    /// the cookie's path) whose user is still known and still admitted (a
    /// reload may have removed either); using it slides its idle expiry.
    ///
    /// May change: the request's `Cookie` fields, from which the gateway's
    /// own cookie is taken out (the upstream never sees it). Nothing else.
    ///
    /// A request may carry several (a browser sends one per matching path):
    /// it is admitted only when exactly one live session of this app is
    /// among them. Two different ones are refused (audited as
    /// `ambiguous_session`): a cookie that script of another app on the
    /// same origin tossed in with a longer path is sent first, and taking
    /// the first would let it fix the session. At most
    /// [`MAX_SESSION_COOKIES`] different values are looked up; cookies that
    /// name no live session of this app count against the client
    /// address's `bad_pat_per_minute` when none does, so session ids
    /// cannot be guessed at speed (429 past it).
    async fn session_check(&self, req: &mut Request<RequestBody>) -> Result<Option<Session>, GatewayError> {
        let state = self.state;
        let now = self.now_ms;
        // Hashed as they are found: no cookie value is copied. The same
        // value twice is looked up once.
        let mut hashes = [TokenHash::default(); MAX_SESSION_COOKIES];
        let mut found = 0;
        let presented = cookies::take_each(req.headers_mut(), &state.config.session.cookie_name, |value| {
            let hash = self.memo.cookie_hash.hash(value);
            if found < MAX_SESSION_COOKIES && !hashes[..found].contains(&hash) {
                hashes[found] = hash;
                found += 1;
            }
        });
        let mut admitted: Option<Session> = None;
        for &hash in &hashes[..found] {
            let Some(record) = state.store.use_session(&hash, &self.app.id, now).await? else {
                continue;
            };
            if !state.admits(self.app, &record.subject.email, &record.subject.groups) {
                continue;
            }
            if let Some(first) = &admitted {
                let sessions = [
                    (first.record.subject.email.as_str(), &first.hash),
                    (record.subject.email.as_str(), &hash),
                ];
                audit::session_refused(self.caller(req), &self.app.id, &sessions, "ambiguous_session");
                return Ok(None);
            }
            admitted = Some(Session { hash, record });
        }
        if admitted.is_none() && presented > 0 {
            let client = self
                .downstream
                .peer(&state.config.server.trusted_proxies)
                .client_ip(req.headers());
            state
                .limits
                .failed_token(client)
                .map_err(GatewayError::TooManyRequests)?;
        }
        Ok(admitted)
    }

    /// Who sent `req`, for its audit events.
    fn caller<'r>(&self, req: &'r Request<RequestBody>) -> audit::Caller<'r> {
        audit::Caller {
            request_id: req
                .headers()
                .get(&X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            client: self
                .downstream
                .peer(&self.state.config.server.trusted_proxies)
                .client_ip(req.headers()),
        }
    }

    /// No valid session: the 401 of SPEC §5, after reading what is left of
    /// a small request body so that a client still sending it gets the
    /// answer.
    async fn no_session(&self, req: Request<RequestBody>) -> Response<Body> {
        let response = expired::respond(req.headers(), self.app);
        let (parts, body) = req.into_parts();
        body::discard(&parts.headers, body, 0, self.state.config.server.header_read_timeout).await;
        response
    }

    /// The headers the gateway vouches for: `X-Embed-User`, `-Groups`,
    /// `-App`, `-Assertion` (signed, reused while fresh), the app's
    /// `X-Embed-Attr-*`, and `X-Forwarded-Prefix` under a prefix.
    ///
    /// May change: nothing of the request; the proxy sets these after
    /// removing whatever `X-Embed-*` the client sent.
    fn identity_headers(&self, session: &Session) -> Result<Vouched, GatewayError> {
        let state = self.state;
        let mut vouched = self.local.identity_headers(
            &session.hash,
            &session.record,
            &self.app.attribute_headers,
            &state.signer,
            &state.config.server.public_url,
            self.now_ms / 1000,
        )?;
        if self.mounted == Mounted::Prefix {
            vouched.push((X_FORWARDED_PREFIX.clone(), self.app.prefix.clone()));
        }
        Ok(vouched)
    }

    /// The forward: `target` (`/<below>?<query>`) to the app's upstream
    /// with the vouched headers. An upgrade becomes a tunnel that the
    /// session's revocation ends.
    ///
    /// May change: the request, as the proxy engine does (hop-by-hop and
    /// forwarding headers, `Host`, the URI, the version). The response is
    /// the upstream's.
    async fn upstream_request(
        &self,
        req: Request<RequestBody>,
        target: PathAndQuery,
        vouched: Vouched,
        session: &Session,
    ) -> Result<Response<Body>, GatewayError> {
        let server = &self.state.config.server;
        let mut forward = Forward::new(&self.app.upstream, target, self.downstream, server).vouching(vouched);
        if upgrade::asks_websocket(&req) {
            forward = forward.ending_tunnel_on(self.local.watch_tunnel(session.hash));
        }
        proxy::forward(&self.state.client, req, forward).await
    }

    /// Response filter: the app is framed only by its `frame_ancestors`
    /// (CSP set, `X-Frame-Options` removed), and its redirects and cookies
    /// stay under the mount (on its own host, they are left as written).
    ///
    /// May change: `Content-Security-Policy`, `X-Frame-Options`,
    /// `Location`, `Set-Cookie`. Nothing else; the body streams through
    /// untouched.
    fn response_rewrite(&self, headers: &mut HeaderMap) {
        let mount = rewrite::Mount {
            prefix: (self.mounted == Mounted::Prefix).then(|| self.app.prefix()),
            public_url: &self.state.config.server.public_url,
            upstream_authority: self.app.upstream.authority(),
            upstream_base: self.app.upstream.base_path(),
            frame_ancestors: &self.app.frame_ancestors_directive,
            cookie_name: &self.state.config.session.cookie_name,
        };
        rewrite::apply(headers, &mount);
    }

    /// Logging: names the app and the user on the request's span (the
    /// `request` span the server opened), so every line the request logs at
    /// `debug` says whose it is. The access line names the app (it reads
    /// it from the request's metrics tag), not the user: at `info` a proxied
    /// request has no span, and the line costs nothing for it. Never the
    /// cookie or the assertion.
    ///
    /// May change: nothing of the request or the response.
    fn access_log(&self, session: &Session) {
        let span = tracing::Span::current();
        span.record("app", &*self.app.id);
        span.record("user", session.record.subject.email.as_str());
    }
}
