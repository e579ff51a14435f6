//! Certificates from PEM files: the public listener's TLS (a chain and key
//! from `[tls]`, TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`, RFC 7301)
//! and the extra CA roots an operator trusts for `https://` upstreams
//! (`server.upstream_ca`).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;

/// A problem with a file `[tls]` names: the key, and why (never the key
/// material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsError {
    pub(crate) key: &'static str,
    pub(crate) why: String,
}

/// Builds the acceptor from the files `[tls]` names.
pub(crate) fn acceptor(tls: &Tls) -> Result<TlsAcceptor, TlsError> {
    let error = |key: &'static str, why: String| TlsError { key, why };
    let chain = load_certificates(&tls.cert).map_err(|why| error("tls.cert", why))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        error(
            "tls.key",
            format!(
                "{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {}",
                tls.key.display(),
                describe(&e)
            ),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| error("tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| error("tls.key", format!("does not match tls.cert or is unsupported: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every certificate of a PEM file: the `[tls]` chain, or an operator's
/// upstream CA bundle (`server.upstream_ca`).
pub(crate) fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {}", path.display(), describe(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {}", path.display(), describe(&e)))?;
    if chain.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(chain)
}

/// The PEM error without anything read from the file.
fn describe(error: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match error {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM section found".into(),
        _ => "malformed PEM".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Makes a key in the given `openssl` form and a self-signed cert for it;
    /// `None` (with the reason printed) when `openssl` is not installed.
    fn openssl_pair(dir: &Path, name: &str, genkey: &[&str]) -> Option<Tls> {
        let tls = Tls {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        // Options first: `genrsa` wants its bit count last.
        let key = Command::new("openssl")
            .arg(genkey[0])
            .arg("-out")
            .arg(&tls.key)
            .args(&genkey[1..])
            .output();
        let Ok(key) = key else {
            assert!(
                std::env::var_os("EMBEDGATE_CI_STRICT").is_none(),
                "openssl is required under EMBEDGATE_CI_STRICT"
            );
            eprintln!("skipping {name}: openssl is not installed");
            return None;
        };
        assert!(
            key.status.success(),
            "openssl {genkey:?}: {}",
            String::from_utf8_lossy(&key.stderr)
        );
        let cert = Command::new("openssl")
            .args(["req", "-x509", "-subj", "/CN=localhost", "-days", "1", "-key"])
            .arg(&tls.key)
            .arg("-out")
            .arg(&tls.cert)
            .output()
            .ok()?;
        assert!(
            cert.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&cert.stderr)
        );
        Some(tls)
    }

    #[test]
    fn pkcs8_pkcs1_and_sec1_keys_load_with_alpn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let forms: [(&str, &[&str], &str); 3] = [
            (
                "pkcs8",
                &["genpkey", "-algorithm", "ed25519"],
                "-----BEGIN PRIVATE KEY-----",
            ),
            (
                "pkcs1",
                &["genrsa", "-traditional", "2048"],
                "-----BEGIN RSA PRIVATE KEY-----",
            ),
            (
                "sec1",
                &["ecparam", "-genkey", "-name", "prime256v1", "-noout"],
                "-----BEGIN EC PRIVATE KEY-----",
            ),
        ];
        for (name, genkey, header) in forms {
            let Some(tls) = openssl_pair(dir.path(), name, genkey) else {
                return;
            };
            let text = std::fs::read_to_string(&tls.key).unwrap_or_default();
            assert!(text.starts_with(header), "{name}: {text:.40}");
            let acceptor = acceptor(&tls);
            let acceptor = acceptor.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(
                acceptor.config().alpn_protocols,
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            );
        }
    }

    #[test]
    fn missing_files_name_the_key_and_path() {
        let tls = Tls {
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        };
        let err = acceptor(&tls).err();
        assert_eq!(err.as_ref().map(|e| e.key), Some("tls.cert"));
        assert!(err.is_some_and(|e| e.why.starts_with("/nonexistent/c.pem:")));
    }

    #[test]
    fn key_not_matching_cert_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(a) = openssl_pair(dir.path(), "a", &["genpkey", "-algorithm", "ed25519"]) else {
            return;
        };
        let Some(b) = openssl_pair(dir.path(), "b", &["genpkey", "-algorithm", "ed25519"]) else {
            return;
        };
        let mixed = Tls {
            cert: a.cert,
            key: b.key,
        };
        assert_eq!(acceptor(&mixed).err().map(|e| e.key), Some("tls.key"));
    }
}
