//! The pooled upstream client: keep-alive HTTP/1.1 over plain TCP or rustls.
//!
//! A small pool of hyper's own HTTP/1.1 connections (`client::conn::http1`)
//! per upstream (scheme and authority), kept in this module rather than
//! hyper-util's general-purpose client: a request takes an idle connection
//! (or opens one), sends on it, and the connection comes back when the
//! response body has been read to its end — no per-request task, no
//! per-request hashing of the pool key beyond one map lookup each way
//! (hyper-util's legacy client cost a fifth of a proxied request's
//! instructions: `bench/levers.md`).
//!
//! A request that a reused connection could not take (the upstream closed
//! it while idle; hyper hands the request back unsent) is sent once more on
//! a new connection. A connection is never reused after a response body
//! that was not read to its end, after an upgrade, or once idle for
//! [`POOL_IDLE_TIMEOUT`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::{Connection, HttpConnector, HttpInfo};
use rustls_pki_types::CertificateDer;
use tokio::task::AbortHandle;
use tower_service::Service;

use crate::body::{OnEnd, RequestBody};

/// Idle pooled connections are closed after this long; below the common
/// upstream keep-alive defaults (nginx 75 s, Node 5 s is the outlier, and a
/// retry on a closed pooled connection covers it).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const POOL_MAX_IDLE_PER_HOST: usize = 64;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Sender = http1::SendRequest<RequestBody>;

/// Why an upstream request failed: no connection, or the exchange on it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connecting to the upstream: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("upstream request: {0}")]
    Request(#[source] hyper::Error),
    #[error("upstream URI has no authority")]
    NoAuthority,
}

impl UpstreamError {
    /// Whether no connection could be made (refused, unreachable, TLS).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }

    /// Whether the exchange failed on the client's request body — a
    /// malformed chunk, a client gone mid-body — rather than on the
    /// upstream: hyper then reports an error of the body it was sending,
    /// caused by the server side's own error reading it.
    pub(crate) fn is_request_body(&self) -> bool {
        matches!(self, UpstreamError::Request(e)
            if e.is_user() && std::error::Error::source(e).is_some_and(|c| c.is::<hyper::Error>()))
    }
}

/// An upstream's response, and what the access line says of it.
pub(crate) struct UpstreamAnswer {
    pub(crate) response: Response<Incoming>,
    /// The connection's peer address.
    pub(crate) addr: Option<SocketAddr>,
    /// Puts the connection back into the pool: run it once the response
    /// body has been read to its end; drop it (closing the connection)
    /// otherwise. `None` after an upgrade.
    pub(crate) on_end: Option<OnEnd>,
    /// Ends the connection's task, closing it: for a response whose client
    /// stopped taking it, so that it holds the upstream no longer.
    pub(crate) connection: AbortHandle,
}

/// Which pool a request goes to: the upstream's scheme and authority
/// (cloning an `Authority` shares its bytes).
#[derive(Debug, Clone)]
struct PoolKey {
    https: bool,
    authority: Authority,
}

impl PoolKey {
    fn of(uri: &Uri) -> Option<PoolKey> {
        Some(PoolKey {
            https: uri.scheme() == Some(&Scheme::HTTPS),
            authority: uri.authority()?.clone(),
        })
    }
}

/// Idle connections by scheme (plain, TLS), then authority: looked up by
/// the authority's text, hashed in one piece (`Authority`'s own `Hash`
/// feeds the hasher a byte at a time), without building a key.
#[derive(Default)]
struct Idles([HashMap<Box<str>, Vec<Idle>, crate::fast_hash::FastHash>; 2]);

impl Idles {
    fn get_mut(&mut self, key: &PoolKey) -> Option<&mut Vec<Idle>> {
        self.0[usize::from(key.https)].get_mut(key.authority.as_str())
    }

    fn entry(&mut self, key: &PoolKey) -> &mut Vec<Idle> {
        let map = &mut self.0[usize::from(key.https)];
        if !map.contains_key(key.authority.as_str()) {
            map.insert(key.authority.as_str().into(), Vec::new());
        }
        map.get_mut(key.authority.as_str()).expect("inserted just above")
    }
}

/// An idle connection.
struct Idle {
    sender: Sender,
    addr: Option<SocketAddr>,
    since: Instant,
    /// Its task.
    task: AbortHandle,
}

impl Idle {
    /// Still open, and idle for less than [`POOL_IDLE_TIMEOUT`] at `now`.
    fn usable(&self, now: Instant) -> bool {
        !self.sender.is_closed() && now.saturating_duration_since(self.since) < POOL_IDLE_TIMEOUT
    }
}

struct Pool {
    connector: Connector,
    idle: Mutex<Idles>,
}

/// A cheap-to-clone handle on the connection pool.
#[derive(Clone)]
pub(crate) struct UpstreamClient {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// A pool whose TCP connects give up after `connect_timeout`. TLS
    /// upstreams are verified against the Web PKI roots plus `extra_roots`
    /// (an operator's private CA).
    pub(crate) fn new(
        connect_timeout: Duration,
        extra_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));

        let mut roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra_roots {
            roots.add(cert)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::crypto::tls_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pool = Arc::new(Pool {
            connector,
            idle: Mutex::new(Idles::default()),
        });
        // Idle connections to an upstream that gets no more requests are
        // closed after POOL_IDLE_TIMEOUT too; the reaper ends with the pool.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = Arc::downgrade(&pool);
            runtime.spawn(async move {
                let period = POOL_IDLE_TIMEOUT / 2;
                let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(pool) = pool.upgrade() else { return };
                    pool.reap();
                }
            });
        }
        Ok(UpstreamClient { pool })
    }

    /// Sends `req` (its URI in origin form, `Host` already set) as HTTP/1.1
    /// to the upstream at `upstream` (its scheme and authority), at `now`
    /// (a pooled connection must have been idle for less than the pool's
    /// timeout by then).
    pub(crate) async fn request(
        &self,
        mut req: Request<RequestBody>,
        upstream: &Uri,
        now: Instant,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let key = PoolKey::of(upstream).ok_or(UpstreamError::NoAuthority)?;
        loop {
            let (mut sender, addr, task, reused) = match self.pool.checkout(&key, now) {
                Some(idle) => (idle.sender, idle.addr, idle.task, true),
                None => {
                    // Boxed: a TCP and TLS connect's future is kilobytes,
                    // and inline it would be moved with every request's.
                    let (sender, addr, task) = Box::pin(self.pool.connect(upstream)).await?;
                    (sender, addr, task, false)
                }
            };
            // Ready once the connection finished its last exchange; an
            // error means the upstream closed it meanwhile.
            if let Err(error) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Request(error));
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let connection = task.clone();
                    let on_end = (response.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| {
                        let pool = Arc::downgrade(&self.pool);
                        let key = key.clone();
                        OnEnd::new(move || Pool::release(pool, key, sender, addr, task))
                    });
                    return Ok(UpstreamAnswer {
                        response,
                        addr,
                        on_end,
                        connection,
                    });
                }
                Err(mut error) => match error.take_message() {
                    // Never written: safe to send again, once, on a new
                    // connection (a reused one may have been closed by
                    // the upstream while idle).
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(UpstreamError::Request(error.into_error())),
                },
            }
        }
    }
}

impl Pool {
    /// The most recently used idle connection to `key` that is still
    /// open and fresh at `now`; stale ones are dropped on the way.
    fn checkout(&self, key: &PoolKey, now: Instant) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(key)?;
        while let Some(candidate) = list.pop() {
            if candidate.usable(now) {
                return Some(candidate);
            }
        }
        None
    }

    /// After a response's body ended: back into the pool once the
    /// connection is ready for another request. It almost always is by
    /// then (hyper's connection task finished the exchange before the last
    /// frame reached us); when the request body is still being sent (the
    /// upstream answered early), a task waits for it, so that no request
    /// taken from the pool ever waits behind another's upload.
    fn release(
        pool: std::sync::Weak<Pool>,
        key: PoolKey,
        mut sender: Sender,
        addr: Option<SocketAddr>,
        task: AbortHandle,
    ) {
        if sender.is_ready() {
            if let Some(pool) = pool.upgrade() {
                pool.checkin(key, sender, addr, task);
            }
            return;
        }
        if sender.is_closed() {
            return;
        }
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                if let Some(pool) = pool.upgrade() {
                    pool.checkin(key, sender, addr, task);
                }
            }
        });
    }

    /// Back into the pool after a complete exchange, unless the connection
    /// closed or the pool for its upstream is full (of usable connections:
    /// stale ones are dropped then; otherwise the reaper drops them).
    fn checkin(&self, key: PoolKey, sender: Sender, addr: Option<SocketAddr>, task: AbortHandle) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(&key);
        if list.len() >= POOL_MAX_IDLE_PER_HOST {
            list.retain(|i| i.usable(now));
        }
        if list.len() < POOL_MAX_IDLE_PER_HOST {
            list.push(Idle {
                sender,
                addr,
                since: now,
                task,
            });
        }
    }

    /// Drops the connections idle past [`POOL_IDLE_TIMEOUT`] or closed.
    fn reap(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        for map in &mut idle.0 {
            map.retain(|_, list| {
                list.retain(|i| i.usable(now));
                !list.is_empty()
            });
        }
    }

    /// A new connection to `uri`'s upstream, its task spawned.
    async fn connect(&self, uri: &Uri) -> Result<(Sender, Option<SocketAddr>, AbortHandle), UpstreamError> {
        let io = self
            .connector
            .clone()
            .call(uri.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let mut extras = http::Extensions::new();
        io.connected().get_extras(&mut extras);
        let addr = extras.get::<HttpInfo>().map(HttpInfo::remote_addr);
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Request)?;
        // Upgrades (WebSockets) take the connection over from hyper.
        let connection = connection.with_upgrades();
        let task = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok((sender, addr, task.abort_handle()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;

    /// Connections idle past the timeout (or closed) leave the pool by the
    /// reaper even when their upstream gets no more requests; fresh ones
    /// stay, and checkout takes the most recent.
    #[tokio::test]
    async fn reaping_drops_stale_and_closed_connections_and_keeps_fresh_ones() {
        let client = UpstreamClient::new(Duration::from_secs(1), Vec::new()).expect("client");
        let key = PoolKey::of(&Uri::from_static("http://127.0.0.1:1/")).expect("a key");
        let mut peers = Vec::new();
        let mut idle = Vec::new();
        let stale = Instant::now()
            .checked_sub(POOL_IDLE_TIMEOUT + Duration::from_secs(1))
            .expect("an instant in the past");
        for (i, since) in [stale, Instant::now(), Instant::now()].into_iter().enumerate() {
            let (io, peer) = tokio::io::duplex(1024);
            let (sender, connection) = http1::handshake::<_, RequestBody>(TokioIo::new(io))
                .await
                .expect("handshake");
            let task = tokio::spawn(connection).abort_handle();
            // The third connection's upstream goes away.
            if i == 2 {
                drop(peer);
            } else {
                peers.push(peer);
            }
            idle.push(Idle {
                sender,
                addr: None,
                since,
                task,
            });
        }
        *client.pool.idle.lock().unwrap().entry(&key) = idle;
        // Let the closed connection's task notice.
        for _ in 0..100 {
            if client.pool.idle.lock().unwrap().entry(&key)[2].sender.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client.pool.reap();
        let left: Vec<_> = client
            .pool
            .idle
            .lock()
            .unwrap()
            .entry(&key)
            .iter()
            .map(|i| i.since)
            .collect();
        assert_eq!(left.len(), 1, "only the fresh open one stays");
        assert!(left[0] > stale);
        assert!(client.pool.checkout(&key, Instant::now()).is_some());
        assert!(client.pool.checkout(&key, Instant::now()).is_none());
    }
}
