//! TLS by server name (SNI, RFC 6066 §3): one throw-away CA that signs a
//! leaf per host, written as PEM files for `[tls]` and `[[tls.certificates]]`,
//! and clients that send a chosen name (or none, for an IP address) and
//! report which certificate they were given.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::client::{read_reply, Reply};
use super::{Body, T};

/// A throw-away CA that signs one leaf per host.
pub struct SniCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    roots: rustls::RootCertStore,
}

impl Default for SniCa {
    fn default() -> Self {
        SniCa::new()
    }
}

impl SniCa {
    pub fn new() -> SniCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "embedgate SNI test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("CA into roots");
        SniCa { cert, key, roots }
    }

    /// A leaf for `names` (DNS names, or IP addresses as IP SANs), written
    /// to `dir/<stem>.pem` and `dir/<stem>-key.pem` (PKCS#8); returns its DER.
    pub fn leaf(&self, dir: &Path, stem: &str, names: &[&str]) -> CertificateDer<'static> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType};
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::default();
        for name in names {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().expect("a DNS name")),
            };
            params.subject_alt_names.push(san);
        }
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("sign leaf");
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write leaf");
        std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem()).expect("write leaf key");
        cert.der().clone()
    }

    /// A client config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut cfg =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// TLS to `addr`, verifying the certificate for `server_name`: a DNS
    /// name is sent as SNI; an IP address sends no SNI at all.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
        alpn: &[&[u8]],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(self.client_config(alpn));
        let name = ServerName::try_from(server_name.to_string()).expect("a server name");
        tokio::time::timeout(T, connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

/// The end-entity certificate the server presented on `tls`.
pub fn peer_leaf(tls: &TlsStream<TcpStream>) -> Option<CertificateDer<'static>> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.clone().into_owned())
}

/// The ALPN protocol the server picked on `tls`.
pub fn alpn_of(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(|p| p.to_vec())
}

/// One HTTP/2 client connection over any stream (the request URI's
/// authority is sent as `:authority`).
pub struct H2Over {
    sender: hyper::client::conn::http2::SendRequest<Body>,
}

impl H2Over {
    pub async fn handshake<S>(io: S) -> H2Over
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H2Over { sender }
    }

    pub async fn send(&mut self, req: Request<Body>) -> Response<hyper::body::Incoming> {
        let fut = async {
            self.sender.ready().await?;
            self.sender.send_request(req).await
        };
        tokio::time::timeout(T, fut)
            .await
            .expect("h2 response head timed out")
            .expect("h2 request failed")
    }

    pub async fn request(&mut self, req: Request<Body>) -> Reply {
        let resp = self.send(req).await;
        read_reply(resp).await
    }
}
