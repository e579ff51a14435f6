//! The proxy engine: one request in, one request to an upstream, its response
//! back. It knows upstreams, headers and the client connection, nothing of
//! PATs or sessions; the routes that use it add the identity they vouch for
//! through [`Forward::vouched`].

pub(crate) mod client;
pub(crate) mod headers;
pub(crate) mod upgrade;
mod upstream_head;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tracing::debug;

use crate::body::{Body, RequestBody, UpstreamHold, UpstreamSeen};
use crate::config::{self, Upstream};
use crate::drain::Watch;
use crate::error::GatewayError;
use crate::query;
pub(crate) use client::UpstreamClient;
use headers::forwarded::{self, Peer, Scheme};
use headers::{hop, identity};
use ipnet::IpNet;
pub(crate) use upstream_head::{UpstreamHeadClock, UpstreamHeadWatch};

/// The client connection a request came on, as the proxy needs it.
#[derive(Debug, Clone)]
pub(crate) struct Downstream {
    /// The TCP peer.
    addr: SocketAddr,
    /// Its address as `X-Forwarded-For` says it, made once a connection.
    addr_value: HeaderValue,
    /// Whether the client spoke TLS to the gateway.
    scheme: Scheme,
    /// Held by every tunnel opened on this connection, so a drain waits
    /// for them.
    watch: Watch,
    /// The tunnels open on this connection: while one is, the connection
    /// is not idle (an HTTP/2 keep-alive must never end a WebSocket).
    tunnels: Tunnels,
    /// Where an HTTP/1.1 connection's driver keeps the upstream timeout of
    /// its request in flight; `None` (HTTP/2): a timer per request.
    upstream_head: Option<Arc<UpstreamHeadWatch>>,
    /// An HTTP/2 connection's slots for requests waiting on upstreams
    /// (`server.max_upstream_per_connection`); an HTTP/1.1 connection has
    /// one request at a time, and no slots.
    upstream_slots: Option<Arc<Semaphore>>,
}

/// Counts a connection's open tunnels.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tunnels(Arc<AtomicUsize>);

impl Tunnels {
    /// How many are open now.
    pub(crate) fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one in until the guard is dropped.
    fn hold(&self) -> TunnelOpen {
        self.0.fetch_add(1, Ordering::Relaxed);
        TunnelOpen(self.0.clone())
    }
}

/// One open tunnel, counted in its connection's [`Tunnels`].
pub(crate) struct TunnelOpen(Arc<AtomicUsize>);

impl Drop for TunnelOpen {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Downstream {
    /// The facts the forwarding headers report, with `trusted_proxies`
    /// (`server.trusted_proxies`) deciding whose headers are believed.
    pub(crate) fn peer<'a>(&'a self, trusted_proxies: &'a [IpNet]) -> Peer<'a> {
        Peer {
            ip: self.addr.ip(),
            ip_value: Some(&self.addr_value),
            scheme: self.scheme,
            trusted_proxies,
        }
    }

    /// The connection from `addr`, over `scheme`, its tunnels counted in
    /// `tunnels`, its upstream waits watched by `upstream_head` if its driver
    /// keeps them, with `upstream_slots` if it may have many at once.
    pub(crate) fn new(
        addr: SocketAddr,
        scheme: Scheme,
        watch: Watch,
        tunnels: Tunnels,
        upstream_head: Option<Arc<UpstreamHeadWatch>>,
        upstream_slots: Option<Arc<Semaphore>>,
    ) -> Self {
        Downstream {
            addr,
            addr_value: forwarded::ip_value(addr.ip()),
            scheme,
            watch,
            tunnels,
            upstream_head,
            upstream_slots,
        }
    }
}

/// Everything one forward needs beyond the request itself.
pub(crate) struct Forward<'a> {
    upstream: &'a Upstream,
    /// Path and query to ask the upstream for, below its own base path;
    /// starts with `/`. Owned, so that the passthrough can hand on the
    /// request's own (shared, not copied).
    path_and_query: PathAndQuery,
    peer: Peer<'a>,
    /// Longest wait for the upstream's response head, and between two
    /// pieces of its body.
    timeout: Duration,
    /// Largest response head taken from the upstream (`max_header_bytes`).
    max_head: usize,
    /// Headers the calling route vouches for — the embed route's identity
    /// and mount prefix — set after the client's own `X-Embed-*` and
    /// forwarding headers are dealt with, so they always win.
    vouched: Vouched,
    /// Held by a tunnel, if the request upgrades.
    watch: &'a Watch,
    /// Where a tunnel is counted while it is open.
    tunnels: &'a Tunnels,
    /// Keeps the wait for the response head, when the connection's driver
    /// does ([`Downstream::upstream_head`]).
    upstream_head: Option<&'a UpstreamHeadWatch>,
    /// Ends the tunnel early when it resolves (a revoked session).
    tunnel_cancel: Option<Cancel>,
    /// `server.underscores_in_headers`: whether a client's header names
    /// holding `_` pass (those that read as the gateway's never do).
    underscores_in_headers: bool,
    /// The client connection's slots for upstream requests, if it has
    /// ([`Downstream::upstream_slots`]): one is taken before the request
    /// goes up, and held by the response until its body is done.
    upstream_slots: Option<&'a Arc<Semaphore>>,
}

impl<'a> Forward<'a> {
    /// A plain forward of a request that came on `downstream`, with the
    /// limits of `server`: nothing vouched for, no early end to a tunnel.
    pub(crate) fn new(
        upstream: &'a Upstream,
        path_and_query: PathAndQuery,
        downstream: &'a Downstream,
        server: &'a config::Server,
    ) -> Self {
        Forward {
            upstream,
            path_and_query,
            peer: downstream.peer(&server.trusted_proxies),
            timeout: server.upstream_timeout,
            max_head: server.max_header_bytes,
            vouched: Vouched::new(),
            watch: &downstream.watch,
            tunnels: &downstream.tunnels,
            upstream_head: downstream.upstream_head.as_deref(),
            tunnel_cancel: None,
            underscores_in_headers: server.underscores_in_headers,
            upstream_slots: downstream.upstream_slots.as_ref(),
        }
    }

    /// With the headers the calling route vouches for (set after the
    /// client's own are removed, so they always win).
    pub(crate) fn vouching(mut self, vouched: Vouched) -> Self {
        self.vouched = vouched;
        self
    }

    /// With a tunnel, if the request opens one, that ends when `cancel`
    /// resolves.
    pub(crate) fn ending_tunnel_on(mut self, cancel: Cancel) -> Self {
        self.tunnel_cancel = Some(cancel);
        self
    }
}

/// Headers a route vouches for, each name once: a list, since they only
/// go into the request's own map.
pub(crate) type Vouched = Vec<(HeaderName, HeaderValue)>;

/// A future that ends a tunnel.
pub(crate) type Cancel = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Forwards `req` as `fwd` says and returns the upstream's response with its
/// hop-by-hop headers removed. Errors are the upstream's (502, 504) or the
/// request's (400).
pub(crate) async fn forward(
    client: &UpstreamClient,
    mut req: Request<RequestBody>,
    fwd: Forward<'_>,
) -> Result<Response<Body>, GatewayError> {
    let client_version = req.version();
    // The upstream's `Host` in, the client's out: one lookup for both.
    let client_host = req
        .headers_mut()
        .insert(header::HOST, fwd.upstream.host.clone())
        .or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });

    // WebSockets only: HTTP/1.1 asks by `Upgrade` with a key of its own;
    // HTTP/2 by an extended CONNECT (RFC 8441), which the upstream, spoken
    // to in HTTP/1.1, gets as an opening handshake with a key the gateway
    // makes (RFC 6455 §4.1). Any other `Upgrade` goes with the hop-by-hop
    // fields, and the request goes on as a plain one.
    let extended_connect = upgrade::is_extended_connect(&req);
    let asked = hop::strip(req.headers_mut());
    let websocket_key = if extended_connect {
        Some(upgrade::connect_to_get(&mut req)?)
    } else {
        asked.and_then(|protocol| upgrade::websocket_key(&req, &protocol))
    };
    let client_upgrade = websocket_key.as_ref().map(|_| hyper::upgrade::on(&mut req));

    let headers = req.headers_mut();
    identity::strip_client_claims(headers, fwd.underscores_in_headers);
    forwarded::apply(headers, &fwd.peer, client_host);
    join_cookies(headers);
    // The gateway answered any `Expect: 100-continue` itself when it began
    // reading the body; the upstream gets the body straight away. (Names
    // are compared, not hashed, to learn that a request has none.)
    if headers.keys().any(|name| name == header::EXPECT) {
        headers.remove(header::EXPECT);
    }
    for (name, value) in fwd.vouched {
        headers.insert(name, value);
    }
    if websocket_key.is_some() {
        hop::set_upgrade(headers, HeaderValue::from_static("websocket"));
    }

    *req.uri_mut() = origin_form(fwd.upstream, fwd.path_and_query)?;
    // The pool speaks HTTP/1.1 to upstreams whatever the client spoke.
    *req.version_mut() = Version::HTTP_11;

    let sent = std::time::Instant::now();
    let upstream = &fwd.upstream.uri;
    let mut slot = None;
    let answer = match fwd.upstream_head {
        // The connection's driver keeps the timeout.
        Some(watch) => watch.wait(client.request(req, upstream, sent)).await.map_err(|_| ()),
        // One clock read for the deadline, the pool and the metrics. The
        // wait for a slot counts against the same deadline.
        None => {
            let deadline = tokio::time::Instant::from_std(sent + fwd.timeout);
            if let Some(slots) = fwd.upstream_slots {
                match tokio::time::timeout_at(deadline, take_slot(slots)).await {
                    Ok(taken) => slot = taken,
                    Err(_) => return Err(GatewayError::GatewayTimeout),
                }
            }
            tokio::time::timeout_at(deadline, client.request(req, upstream, sent))
                .await
                .map_err(|_| ())
        }
    };
    let answer = match answer {
        Err(()) => return Err(GatewayError::GatewayTimeout),
        // The client's fault, not the upstream's: 400. The upstream saw
        // the body end early (hyper never sends a chunked body's last
        // chunk after an error, and closes that connection), never a
        // complete request.
        Ok(Err(error)) if error.is_request_body() => {
            debug!(error = %error, "request body failed");
            return Err(GatewayError::BadRequest(
                "the request body is malformed or was cut short",
            ));
        }
        Ok(Err(error)) => {
            debug!(error = %error, connect = error.is_connect(), "upstream request failed");
            return Err(GatewayError::BadGateway(Box::new(error)));
        }
        Ok(Ok(answer)) => answer,
    };
    crate::metrics::global().upstream_head.observe(sent.elapsed());

    let (mut parts, body) = answer.response.into_parts();
    // As nginx's "upstream sent too big header": hyper's own bound is its
    // read buffer, which is larger and one read can overshoot.
    let head: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if head > fwd.max_head {
        return Err(GatewayError::BadGateway(
            "the upstream's response head is over max_header_bytes".into(),
        ));
    }
    // For the access line: where the pooled connection goes, and what
    // came back before the gateway touched it.
    let seen = UpstreamSeen {
        addr: answer.addr,
        status: parts.status.as_u16(),
    };
    let upstream_protocol = hop::strip(&mut parts.headers);
    // A body may not stall past the upstream timeout: on HTTP/2 each
    // stream has its own timer; on HTTP/1.1 the connection's driver
    // watches its one response (no timer per request). A tunnel's (101)
    // body is empty and ends at once.
    let stall = (client_version == Version::HTTP_2).then_some(fwd.timeout);
    let hold = slot.map(|slot| Box::new(UpstreamHold::new(answer.connection, slot)));
    let body = Body::upstream(body, answer.on_end, stall, seen, hold);
    let mut response = Response::from_parts(parts, body);
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // Dropping the response drops the upstream's connection with it.
        let (Some(client_upgrade), Some(key)) = (client_upgrade, &websocket_key) else {
            return Err(GatewayError::BadGateway("upstream switched protocols unasked".into()));
        };
        if !upgrade::is_handshake(response.headers(), upstream_protocol.as_ref(), key) {
            return Err(GatewayError::BadGateway(
                "the upstream's 101 does not complete the WebSocket handshake".into(),
            ));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        if extended_connect {
            upgrade::get_to_connect_response(&mut response);
        } else {
            hop::set_upgrade(response.headers_mut(), HeaderValue::from_static("websocket"));
        }
        let cancel = fwd.tunnel_cancel.unwrap_or_else(|| Box::pin(std::future::pending()));
        upgrade::spawn_tunnel(
            client_upgrade,
            upstream_upgrade,
            (fwd.watch.clone(), fwd.tunnels.hold()),
            cancel,
        );
    }
    Ok(response)
}

/// One of a client connection's slots for upstream requests, waited for
/// when all are taken; `None` only if the slots were closed (they never
/// are).
async fn take_slot(slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    match slots.clone().try_acquire_owned() {
        Ok(slot) => Some(slot),
        Err(TryAcquireError::NoPermits) => slots.clone().acquire_owned().await.ok(),
        Err(TryAcquireError::Closed) => None,
    }
}

/// The request target for `path_and_query` in origin form (RFC 9112
/// §3.2.1), joined under the upstream's own base path (as nginx's
/// `proxy_pass` with a URI part does), without any PAT parameter (only
/// the exchange reads one, and it is never forwarded); the parsed path is
/// used as is when the upstream has none and there is no PAT. The
/// upstream's scheme and authority are not copied in: the pool takes them
/// from the upstream itself.
fn origin_form(upstream: &Upstream, path_and_query: PathAndQuery) -> Result<Uri, GatewayError> {
    let invalid = || GatewayError::BadRequest("invalid request target");
    let path_and_query = match path_and_query.query().and_then(query::without_pat) {
        None => path_and_query,
        Some(query) => {
            let path = path_and_query.path();
            let target = if query.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{query}")
            };
            PathAndQuery::try_from(target).map_err(|_| invalid())?
        }
    };
    let base = upstream.base_path();
    let path_and_query = if base.is_empty() {
        path_and_query
    } else {
        PathAndQuery::try_from(format!("{base}{path_and_query}")).map_err(|_| invalid())?
    };
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).map_err(|_| invalid())
}

/// HTTP/2 clients may split `Cookie` into several fields (RFC 9113 §8.2.3);
/// an HTTP/1.1 upstream must get exactly one, joined with `; `.
fn join_cookies(headers: &mut HeaderMap) {
    // No name with two fields: nothing to join, and no lookup.
    if headers.len() == headers.keys_len() {
        return;
    }
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        Upstream::new(url.parse().unwrap_or_default())
    }

    #[test]
    fn origin_form_joins_under_base_path_and_keeps_query() {
        let u = upstream("http://127.0.0.1:3000/base/");
        let joined = origin_form(&u, PathAndQuery::from_static("/x/y?q=1&r=%20"))
            .map(|u| u.to_string())
            .ok();
        assert_eq!(joined.as_deref(), Some("/base/x/y?q=1&r=%20"));
        let root = upstream("https://app.internal");
        let joined = origin_form(&root, PathAndQuery::from_static("/"))
            .map(|u| u.to_string())
            .ok();
        assert_eq!(joined.as_deref(), Some("/"));
    }

    #[test]
    fn origin_form_never_carries_a_pat() {
        let u = upstream("http://127.0.0.1:3000/base");
        for (target, want) in [
            ("/x?personal-access-token=pat_1&a=1", "/base/x?a=1"),
            ("/x?a=1&Personal%2DAccess%2DToken=pat_1", "/base/x?a=1"),
            ("/?personal-access-token=pat_1", "/base/"),
            ("/x?a=1", "/base/x?a=1"),
        ] {
            let got = origin_form(&u, PathAndQuery::from_static(target))
                .map(|u| u.to_string())
                .ok();
            assert_eq!(got.as_deref(), Some(want), "{target}");
        }
    }

    #[test]
    fn split_cookie_fields_are_joined_into_one() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
    }
}
