//! Development certificates and keys, made at first start when `[demo]` is on
//! (SPEC §1).
//!
//! The TLS certificate is a leaf for `localhost`, `app.localhost` (the
//! demo's app on its own host), `*.localhost`, `127.0.0.1` and `::1`
//! signed by a throw-away dev CA. Only the CA's certificate is written
//! (`dev-ca.pem`, next to the leaf) so a developer can trust it in a browser;
//! its private key lives in memory for the few milliseconds it takes to sign
//! the leaf and is then dropped, so nothing can ever sign another certificate
//! under that trust anchor.
//!
//! Private keys are written with mode 0600 (unix) and never over an existing
//! file: `certs/*.pem` is git-ignored, and a key is never committed.
//!
//! Built with the `demo` feature only, as the demo is.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

/// File name of the dev CA's certificate, written beside the leaf certificate.
pub(crate) const DEV_CA_FILE: &str = "dev-ca.pem";

/// How long the dev certificates are valid: browsers refuse leaves valid for
/// more than 398 days, so stay under it.
const VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Backdating of `notBefore`, so a client whose clock runs a little behind
/// still accepts a certificate made a moment ago.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// Why a dev certificate or key could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    /// One of the certificate/key pair exists and the other does not; we
    /// refuse to guess and never overwrite the one that is there.
    #[error("{present} exists but {missing} is missing; delete {present} to regenerate both")]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// Generating a key or signing a certificate failed.
    #[error("generating the dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Reading the filesystem or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Makes the dev TLS certificate chain at `cert` and its private key at
/// `key` when neither exists, plus the dev CA's certificate at
/// `dev-ca.pem` in `cert`'s directory.
///
/// Returns `Ok(true)` when the files were created, `Ok(false)` when both
/// `cert` and `key` already exist (they are not read or checked), and an
/// error naming the missing file when only one of them exists.
pub(crate) fn ensure_dev_cert(cert: &Path, key: &Path) -> Result<bool, CertError> {
    match (exists(cert)?, exists(key)?) {
        (true, true) => return Ok(false),
        (true, false) => return Err(incomplete(cert, key)),
        (false, true) => return Err(incomplete(key, cert)),
        (false, false) => {}
    }

    let generated = generate_dev_chain()?;
    let ca_path = cert.parent().unwrap_or_else(|| Path::new("")).join(DEV_CA_FILE);

    create_parent(cert)?;
    create_parent(key)?;
    // The key first: if a later write fails we remove what we wrote, so the
    // next start does not find half a pair.
    write_new(key, generated.key_pem.as_bytes(), true)?;
    if let Err(e) = write_new(cert, generated.chain_pem.as_bytes(), false) {
        let _ = fs::remove_file(key);
        return Err(e);
    }
    // A fresh CA replaces any stale dev-ca.pem: the old one no longer
    // vouches for anything we serve.
    if let Err(source) = fs::write(&ca_path, generated.ca_pem.as_bytes()) {
        let _ = fs::remove_file(key);
        let _ = fs::remove_file(cert);
        return Err(CertError::Io { path: ca_path, source });
    }
    Ok(true)
}

/// Makes a PKCS#8 PEM Ed25519 private key at `path` (mode 0600) when none
/// exists, for signing `X-Embed-Assertion` (SPEC §2 `[assertion]`, §5).
///
/// Returns `Ok(true)` when created, `Ok(false)` when the file already exists
/// (it is not read or checked).
pub(crate) fn ensure_signing_key(path: &Path) -> Result<bool, CertError> {
    if exists(path)? {
        return Ok(false);
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    create_parent(path)?;
    write_new(path, key.serialize_pem().as_bytes(), true)?;
    Ok(true)
}

/// The PEM texts of a freshly generated dev chain.
struct DevChain {
    /// Leaf then CA.
    chain_pem: String,
    /// The leaf's PKCS#8 private key.
    key_pem: String,
    /// The CA's certificate alone.
    ca_pem: String,
}

fn generate_dev_chain() -> Result<DevChain, CertError> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    let not_before = now - BACKDATE;
    let not_after = now + VALIDITY;

    // The CA's name carries its creation time so that a regenerated CA is
    // told apart from an old one still sitting in a browser's trust store.
    let mut ca_name = DistinguishedName::new();
    ca_name.push(
        DnType::CommonName,
        format!("embedgate dev CA {}", since_epoch.as_secs()),
    );
    ca_name.push(DnType::OrganizationName, "embedgate (development only)");
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = ca_name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let mut leaf_name = DistinguishedName::new();
    leaf_name.push(DnType::CommonName, "localhost");
    leaf_name.push(DnType::OrganizationName, "embedgate (development only)");
    let mut leaf_params = CertificateParams::default();
    leaf_params.distinguished_name = leaf_name;
    leaf_params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into()?),
        // The demo's app on its own host. `*.localhost` too, for browsers,
        // though TLS verifiers such as webpki refuse a wildcard over a
        // single-label name, so the demo's host is also named outright.
        SanType::DnsName("app.localhost".try_into()?),
        SanType::DnsName("*.localhost".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.not_before = not_before;
    leaf_params.not_after = not_after;
    let leaf_key = KeyPair::generate()?;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key)?;

    let ca_pem = ca_cert.pem();
    Ok(DevChain {
        chain_pem: format!("{}{}", leaf_cert.pem(), ca_pem),
        key_pem: leaf_key.serialize_pem(),
        ca_pem,
    })
}

fn incomplete(present: &Path, missing: &Path) -> CertError {
    CertError::Incomplete {
        present: present.to_path_buf(),
        missing: missing.to_path_buf(),
    }
}

fn exists(path: &Path) -> Result<bool, CertError> {
    path.try_exists().map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn create_parent(path: &Path) -> Result<(), CertError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => fs::create_dir_all(dir).map_err(|source| CertError::Io {
            path: dir.to_path_buf(),
            source,
        }),
        _ => Ok(()),
    }
}

/// Writes `contents` to a file that must not exist yet; `private` makes it
/// readable by its owner only (unix), from the moment it is created.
fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = options.open(path).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    result.map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn pem_count(text: &str, label: &str) -> usize {
        text.matches(&format!("-----BEGIN {label}-----")).count()
    }

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
        ca: PathBuf,
    }

    fn files(sub: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join(sub);
        Files {
            cert: base.join("localhost.pem"),
            key: base.join("localhost-key.pem"),
            ca: base.join(DEV_CA_FILE),
            _dir: dir,
        }
    }

    #[test]
    fn dev_cert_is_created_once() {
        let f = files("certs");

        assert!(ensure_dev_cert(&f.cert, &f.key).unwrap());
        let chain = fs::read_to_string(&f.cert).unwrap();
        let key = fs::read_to_string(&f.key).unwrap();
        let ca = fs::read_to_string(&f.ca).unwrap();

        assert_eq!(pem_count(&chain, "CERTIFICATE"), 2);
        assert_eq!(CertificateDer::pem_slice_iter(chain.as_bytes()).count(), 2);
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(matches!(
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));
        assert_eq!(pem_count(&ca, "CERTIFICATE"), 1);
        assert!(!ca.contains("PRIVATE KEY"));
        assert!(chain.ends_with(&ca), "chain is leaf then CA");

        assert!(!ensure_dev_cert(&f.cert, &f.key).unwrap());
        assert_eq!(fs::read_to_string(&f.cert).unwrap(), chain);
        assert_eq!(fs::read_to_string(&f.key).unwrap(), key);
        assert_eq!(fs::read_to_string(&f.ca).unwrap(), ca);
    }

    /// The proof that matters: a TLS client trusting only `dev-ca.pem`
    /// accepts the chain and key for every name the leaf is for.
    #[tokio::test]
    async fn dev_cert_is_trusted_through_dev_ca_for_localhost_names_and_app_hosts() {
        let f = files("certs");
        ensure_dev_cert(&f.cert, &f.key).unwrap();

        let provider = crate::crypto::tls_provider();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&f.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&f.key).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&f.ca).unwrap()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));

        for name in ["localhost", "app.localhost", "127.0.0.1", "::1"] {
            let (c, s) = tokio::io::duplex(16 * 1024);
            let acceptor = acceptor.clone();
            let server = tokio::spawn(async move {
                let mut tls = acceptor.accept(s).await?;
                tls.write_all(b"ok").await?;
                tls.shutdown().await
            });
            let server_name = ServerName::try_from(name).unwrap();
            let mut tls = connector
                .connect(server_name, c)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"ok");
            server.await.unwrap().unwrap();
        }

        // And not for another name.
        let (c, s) = tokio::io::duplex(16 * 1024);
        tokio::spawn(async move { acceptor.accept(s).await });
        let other = ServerName::try_from("example.com").unwrap();
        assert!(connector.connect(other, c).await.is_err());
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let f = files("certs");
        let signing = f.cert.with_file_name("assertion-key.pem");
        ensure_dev_cert(&f.cert, &f.key).unwrap();
        ensure_signing_key(&signing).unwrap();
        for path in [&f.key, &signing] {
            let mode = fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
    }

    #[test]
    fn only_key_present_is_an_error_naming_the_cert() {
        let f = files("");
        fs::write(&f.key, "keep me").unwrap();

        let err = ensure_dev_cert(&f.cert, &f.key).unwrap_err();
        assert!(matches!(&err, CertError::Incomplete { missing, .. } if missing == &f.cert));
        assert!(err.to_string().contains("localhost.pem is missing"));
        assert_eq!(fs::read_to_string(&f.key).unwrap(), "keep me");
        assert!(!f.cert.exists());
        assert!(!f.ca.exists());
    }

    #[test]
    fn only_cert_present_is_an_error_naming_the_key() {
        let f = files("");
        fs::write(&f.cert, "keep me").unwrap();

        let err = ensure_dev_cert(&f.cert, &f.key).unwrap_err();
        assert!(matches!(&err, CertError::Incomplete { missing, .. } if missing == &f.key));
        assert!(err.to_string().contains("localhost-key.pem is missing"));
        assert_eq!(fs::read_to_string(&f.cert).unwrap(), "keep me");
        assert!(!f.key.exists());
    }

    #[test]
    fn signing_key_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/assertion-key.pem");

        assert!(ensure_signing_key(&path).unwrap());
        let pem = fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = KeyPair::from_pem(&pem).unwrap();
        assert!(key.is_compatible(&rcgen::PKCS_ED25519));

        assert!(!ensure_signing_key(&path).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), pem);
    }
}
