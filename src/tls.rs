//! Certificates from PEM files: the public listener's TLS (a chain and key
//! from `[tls]`, more picked by SNI from `[[tls.certificates]]`, TLS 1.2
//! and 1.3 only, ALPN `h2` then `http/1.1`, RFC 7301)
//! and the extra CA roots an operator trusts for `https://` upstreams
//! (`server.upstream_ca`).

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsAcceptor;

use crate::config::{CertFiles, Tls};

/// A problem with a file `[tls]` names: the key, its line, and why (never
/// the key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsError {
    /// `tls.cert`, `tls.certificates[1].key`, …
    pub(crate) key: String,
    pub(crate) line: Option<usize>,
    pub(crate) why: String,
}

/// Builds the acceptor from the files `[tls]` names: the main certificate
/// alone, or, with `[[tls.certificates]]`, a resolver that picks by SNI.
pub(crate) fn acceptor(tls: &Tls) -> Result<TlsAcceptor, TlsError> {
    let provider = crate::crypto::tls_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError {
            key: "tls".into(),
            line: None,
            why: e.to_string(),
        })?
        .with_no_client_auth();
    let mut config = if tls.certificates.is_empty() {
        let (chain, key) = load_pair(&tls.main)?;
        builder
            .with_single_cert(chain, key)
            .map_err(|e| mismatch(&tls.main, &e))?
    } else {
        let main = certified_key(&tls.main, &provider)?;
        let by_sni = tls
            .certificates
            .iter()
            .map(|files| certified_key(files, &provider))
            .collect::<Result<_, _>>()?;
        builder.with_cert_resolver(Arc::new(BySni { main, by_sni }))
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Our order of cipher suites (AES-128-GCM first, see `provider`), not
    // the client's: most clients list AES-256-GCM-SHA384 first, whose
    // SHA-384 key schedule costs more than SHA-256's with SHA-NI.
    config.ignore_client_order = true;
    // One resumption ticket per full handshake (rustls sends two by
    // default): a browser resumes with one, and each costs a key
    // derivation and a cache entry.
    config.send_tls13_tickets = 1;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A certificate chain and its key, read from their files.
fn load_pair(files: &CertFiles) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let error = |what: usize, why: String| TlsError {
        key: format!("{}.{}", files.place, ["cert", "key"][what]),
        line: files.lines[what],
        why,
    };
    let chain = load_certificates(&files.cert).map_err(|why| error(0, why))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        error(
            1,
            format!(
                "{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {}",
                files.key.display(),
                describe(&e)
            ),
        )
    })?;
    Ok((chain, key))
}

fn mismatch(files: &CertFiles, e: &dyn std::fmt::Display) -> TlsError {
    TlsError {
        key: format!("{}.key", files.place),
        line: files.lines[1],
        why: format!("does not match {}.cert or is unsupported: {e}", files.place),
    }
}

/// A chain and its loaded signing key, checked to belong together.
fn certified_key(files: &CertFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let (chain, key) = load_pair(files)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| mismatch(files, &e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| mismatch(files, &e))?;
    Ok(Arc::new(certified))
}

/// Picks the first `[[tls.certificates]]` entry whose leaf is valid for
/// the client's SNI name (wildcards as RFC 6125 §6.4.3 allows), else the
/// main certificate — also for a client that sent no name.
#[derive(Debug)]
struct BySni {
    main: Arc<CertifiedKey>,
    by_sni: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let picked = hello
            .server_name()
            .and_then(|name| self.by_sni.iter().find(|key| leaf_covers(&key.cert, name)));
        Some(picked.unwrap_or(&self.main).clone())
    }
}

/// Whether the first certificate of `chain` is valid for the DNS name
/// `name`.
fn leaf_covers(chain: &[CertificateDer<'_>], name: &str) -> bool {
    let Some(leaf) = chain.first() else { return false };
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf).is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// Whether some certificate of `[tls]` is valid for the host `name`
/// (for `embedgate check`'s warnings; unreadable files count as covering
/// nothing, their errors are reported elsewhere).
pub(crate) fn covers(tls: &Tls, name: &str) -> bool {
    std::iter::once(&tls.main)
        .chain(&tls.certificates)
        .any(|files| load_certificates(&files.cert).is_ok_and(|chain| leaf_covers(&chain, name)))
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
    use std::path::PathBuf;
    use std::process::Command;

    fn tls_of(cert: PathBuf, key: PathBuf) -> Tls {
        Tls {
            main: CertFiles {
                cert,
                key,
                place: "tls".into(),
                lines: [None, None],
            },
            certificates: Vec::new(),
        }
    }

    /// Makes a key in the given `openssl` form and a self-signed cert for it;
    /// `None` (with the reason printed) when `openssl` is not installed.
    fn openssl_pair(dir: &Path, name: &str, genkey: &[&str]) -> Option<Tls> {
        let tls = tls_of(dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        // Options first: `genrsa` wants its bit count last.
        let key = Command::new("openssl")
            .arg(genkey[0])
            .arg("-out")
            .arg(&tls.main.key)
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
            .arg(&tls.main.key)
            .arg("-out")
            .arg(&tls.main.cert)
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
            let text = std::fs::read_to_string(&tls.main.key).unwrap_or_default();
            assert!(text.starts_with(header), "{name}: {text:.40}");
            let acceptor = acceptor(&tls);
            let acceptor = acceptor.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(
                acceptor.config().alpn_protocols,
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            );
        }
    }

    /// The server picks AES-128-GCM-SHA256 even from a client that lists
    /// AES-256-GCM-SHA384 first (rustls' and OpenSSL's default order), and
    /// is set to send one resumption ticket.
    #[test]
    fn server_order_picks_aes_128_gcm_and_one_ticket_is_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(tls) = openssl_pair(
            dir.path(),
            "p256",
            &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ) else {
            return;
        };
        let server_config = acceptor(&tls).expect("acceptor").config().clone();
        assert!(server_config.ignore_client_order);
        assert_eq!(server_config.send_tls13_tickets, 1);

        let client_provider = rustls::crypto::aws_lc_rs::default_provider();
        assert_eq!(
            client_provider.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            "the client under test must prefer AES-256"
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(load_certificates(&tls.main.cert).unwrap().remove(0)).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), ServerName::try_from("localhost").unwrap()).unwrap();
        let mut server = rustls::ServerConnection::new(server_config).unwrap();
        // The server chooses on the ClientHello: hand it over in memory.
        let mut hello = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut hello).unwrap();
        }
        server.read_tls(&mut hello.as_slice()).unwrap();
        server.process_new_packets().expect("server");
        assert_eq!(
            server.negotiated_cipher_suite().map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
    }

    #[test]
    fn missing_files_name_the_key_and_path() {
        let tls = tls_of("/nonexistent/c.pem".into(), "/nonexistent/k.pem".into());
        let err = acceptor(&tls).err();
        assert_eq!(err.as_ref().map(|e| e.key.as_str()), Some("tls.cert"));
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
        let mixed = tls_of(a.main.cert, b.main.key);
        assert_eq!(acceptor(&mixed).err().map(|e| e.key), Some("tls.key".to_string()));
    }

    #[test]
    fn a_leaf_covers_its_names_and_wildcards_one_label_deep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("a key");
        let params = rcgen::CertificateParams::new(vec!["gw.example".into(), "*.apps.example".into()]).expect("params");
        let cert = params.self_signed(&key).expect("a certificate");
        let chain = vec![cert.der().clone()];
        for covered in ["gw.example", "shop.apps.example", "SHOP.apps.example"] {
            assert!(leaf_covers(&chain, covered), "{covered}");
        }
        for not in ["apps.example", "a.b.apps.example", "other.example", "", "not a name"] {
            assert!(!leaf_covers(&chain, not), "{not}");
        }
        assert!(!leaf_covers(&[], "gw.example"));

        std::fs::write(dir.path().join("c.pem"), cert.pem()).expect("write");
        let tls = tls_of(dir.path().join("c.pem"), dir.path().join("k.pem"));
        assert!(covers(&tls, "shop.apps.example"));
        assert!(!covers(&tls, "shop.other.example"));
        let unreadable = tls_of(dir.path().join("missing.pem"), dir.path().join("k.pem"));
        assert!(!covers(&unreadable, "gw.example"));
    }
}
