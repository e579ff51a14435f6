//! The pooled upstream client: keep-alive HTTP/1.1 over plain TCP or rustls.

use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;

use crate::body::RequestBody;

/// Idle pooled connections are closed after this long; below the common
/// upstream keep-alive defaults (nginx 75 s, Node 5 s is the outlier, and a
/// retry on a closed pooled connection covers it).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const POOL_MAX_IDLE_PER_HOST: usize = 64;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A cheap-to-clone handle on the connection pool.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamClient {
    inner: Client<Connector, RequestBody>,
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
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);

        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .set_host(false)
            .build(connector);
        Ok(UpstreamClient { inner })
    }

    /// The underlying hyper client.
    pub(crate) fn hyper(&self) -> &Client<Connector, RequestBody> {
        &self.inner
    }
}
