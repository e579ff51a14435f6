//! Where the signing key comes from: made in memory, or loaded from a
//! PKCS#8 PEM file (Ed25519 or P-256) that replicas share.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::PrivateKeyDer;

use super::{AssertionError, Signer, SigningKey};

/// A key file larger than this is not a PEM private key.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

impl Signer {
    /// A fresh Ed25519 key held only in memory: what a single replica without
    /// `[assertion]` uses (SPEC §2). Upstreams must refetch the JWKS after a
    /// restart.
    pub(crate) fn generate() -> Result<Signer, AssertionError> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| AssertionError::Generate)?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| AssertionError::Generate)?;
        Ok(Signer::new(SigningKey::Ed25519(key), rng))
    }

    /// Loads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`,
    /// RFC 5958 / RFC 7468 §10): Ed25519 (v1 or v2 PKCS#8, as openssl and
    /// rcgen write) or ECDSA P-256. Replicas sharing the file share the `kid`.
    pub(crate) fn from_pem_file(path: &Path) -> Result<Signer, AssertionError> {
        let pem = read_bounded(path)?;
        let parse_err = |reason: &str| AssertionError::KeyParse {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let der = match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => der,
            Ok(PrivateKeyDer::Sec1(_)) => {
                return Err(parse_err(
                    "a SEC1 \"EC PRIVATE KEY\"; convert it with `openssl pkcs8 -topk8 -nocrypt`",
                ))
            }
            Ok(PrivateKeyDer::Pkcs1(_)) => return Err(parse_err("an RSA key; use Ed25519 or P-256")),
            Ok(_) => return Err(parse_err("not a PKCS#8 private key")),
            // The parser's own messages can quote lines of the file: say why
            // in our words instead.
            Err(pem::Error::NoItemsFound) => {
                return Err(parse_err(
                    "no unencrypted \"PRIVATE KEY\" PEM block (encrypted keys are not supported)",
                ))
            }
            Err(pem::Error::Base64Decode(_)) => return Err(parse_err("invalid base64 inside the PEM block")),
            Err(pem::Error::MissingSectionEnd { .. }) => return Err(parse_err("a PEM block has no END line")),
            Err(pem::Error::IllegalSectionStart { .. }) => return Err(parse_err("a malformed PEM BEGIN line")),
            Err(_) => return Err(parse_err("not a PEM document")),
        };
        let rng = SystemRandom::new();
        let key = match Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()) {
            Ok(key) => SigningKey::Ed25519(key),
            Err(ed) => {
                match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der()) {
                    Ok(key) => SigningKey::P256(key),
                    // ring's reasons are fixed words ("WrongAlgorithm", …), never key bytes.
                    Err(ec) => {
                        return Err(AssertionError::UnsupportedKey {
                            path: path.to_owned(),
                            ed25519: ed.to_string(),
                            p256: ec.to_string(),
                        })
                    }
                }
            }
        };
        Ok(Signer::new(key, rng))
    }
}

/// Reads at most [`MAX_KEY_FILE_BYTES`] (a mistaken path to a huge file or a
/// device must not hang the start).
pub(super) fn read_bounded(path: &Path) -> Result<Vec<u8>, AssertionError> {
    let read_err = |source| AssertionError::KeyRead {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(AssertionError::KeyParse {
            path: path.to_owned(),
            reason: format!("larger than {MAX_KEY_FILE_BYTES} bytes, not a private key"),
        });
    }
    Ok(bytes)
}
