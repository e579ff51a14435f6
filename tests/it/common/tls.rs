//! TLS for the tests: a throw-away CA and a leaf for `localhost` and
//! `127.0.0.1`, made with rcgen, with the rustls configs that present it
//! (test upstreams) or trust it (clients).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::T;

/// A throw-away CA and a leaf for `localhost` and `127.0.0.1`, written to
/// `cert.pem` / `key.pem` (PKCS#8) / `ca.pem` in a directory.
pub struct TestTls {
    roots: rustls::RootCertStore,
    leaf: rustls_pki_types::CertificateDer<'static>,
    leaf_key: rustls_pki_types::PrivatePkcs8KeyDer<'static>,
}

impl TestTls {
    pub fn generate(dir: &Path) -> TestTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
            SanType,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "embedgate test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        leaf.distinguished_name.push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();

        std::fs::write(dir.join("cert.pem"), leaf_cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        TestTls {
            roots,
            leaf: leaf_cert.der().clone(),
            leaf_key: rustls_pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        }
    }

    /// A TLS server (HTTP/1.1 only) presenting the leaf, for test upstreams.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let mut cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![self.leaf.clone()], self.leaf_key.clone_key().into())
                .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }

    /// A client config trusting only the test CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut cfg =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// The first flight of a TLS client offering `alpn` (its ClientHello),
    /// as bytes to send by hand: whole, cut short, or not at all.
    pub fn client_hello(&self, alpn: &[&[u8]]) -> Vec<u8> {
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(self.client_config(alpn), name).unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        hello
    }

    /// Like [`TestTls::connect`], but a failed handshake is an error, not a
    /// panic.
    pub async fn try_connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(self.client_config(alpn));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(T, connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }

    /// TLS to `addr` as `localhost`; returns the stream and the ALPN protocol
    /// the server chose.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> (tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>) {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let connector = tokio_rustls::TlsConnector::from(self.client_config(alpn));
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio::time::timeout(T, connector.connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake");
        let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        (tls, alpn)
    }
}
