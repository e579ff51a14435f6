//! The keys that verify assertions, as a JWK Set (RFC 7517) served at
//! `/.well-known/embedgate/jwks.json`: the signing key's public half, and
//! keys published beside it for rotation.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use rustls_pki_types::pem::PemObject;

use super::key::read_bounded;
use super::{AssertionError, Signer, SigningKey};

/// Bytes of the SHA-256 of the public key that make up the `kid`.
const KID_HASH_BYTES: usize = 16;

/// The kid and public JWK of a key: the `kid` is base64url of the first 16
/// bytes of SHA-256 of the public key bytes.
fn jwk_of(alg: Alg, public: &[u8]) -> (String, serde_json::Value) {
    let kid = URL_SAFE_NO_PAD.encode(&crate::crypto::sha256(public)[..KID_HASH_BYTES]);
    let jwk = match alg {
        // RFC 8037 §2: an OKP key; `x` is the 32-byte public key.
        Alg::EdDsa => json!({
            "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public),
            "kid": kid, "alg": "EdDSA", "use": "sig",
        }),
        // RFC 7518 §6.2.1: the uncompressed point 0x04 || X || Y.
        Alg::Es256 => json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]), "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
            "kid": kid, "alg": "ES256", "use": "sig",
        }),
    };
    (kid, jwk)
}

pub(super) fn public_jwk(key: &SigningKey) -> (String, serde_json::Value) {
    let alg = match key {
        SigningKey::Ed25519(_) => Alg::EdDsa,
        SigningKey::P256(_) => Alg::Es256,
    };
    jwk_of(alg, key.public_key())
}

#[derive(Clone, Copy)]
enum Alg {
    EdDsa,
    Es256,
}

/// A key published in the JWK Set without signing (rotation).
#[derive(Debug, Clone)]
pub(crate) struct PublishedKey {
    pub(super) kid: String,
    pub(super) jwk: serde_json::Value,
}

/// DER prefixes of the SubjectPublicKeyInfo of an Ed25519 key (RFC 8410
/// §4) and of an uncompressed P-256 point (RFC 5480 §2): what follows is
/// the raw public key.
pub(super) const ED25519_SPKI_PREFIX: &[u8] = &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
pub(super) const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl PublishedKey {
    /// The public half of a PEM file: a private key as `[assertion] key`
    /// takes (the next key is one), or a `PUBLIC KEY` (SPKI) block.
    pub(crate) fn from_pem_file(path: &Path) -> Result<PublishedKey, AssertionError> {
        let pem = read_bounded(path)?;
        if let Ok(spki) = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(&pem) {
            let der = spki.as_ref();
            let (alg, public) = if let Some(raw) = der.strip_prefix(ED25519_SPKI_PREFIX) {
                (Alg::EdDsa, raw)
            } else if let Some(raw) = der.strip_prefix(P256_SPKI_PREFIX) {
                (Alg::Es256, raw)
            } else {
                return Err(AssertionError::KeyParse {
                    path: path.to_owned(),
                    reason: "a public key that is neither Ed25519 nor P-256".into(),
                });
            };
            let expected = match alg {
                Alg::EdDsa => 32,
                Alg::Es256 => 65,
            };
            if public.len() != expected {
                return Err(AssertionError::KeyParse {
                    path: path.to_owned(),
                    reason: "a malformed public key".into(),
                });
            }
            let (kid, jwk) = jwk_of(alg, public);
            return Ok(PublishedKey { kid, jwk });
        }
        let signer = Signer::from_pem_file(path)?;
        let (kid, jwk) = public_jwk(&signer.key);
        Ok(PublishedKey { kid, jwk })
    }

    /// Its key id, as the JWK Set shows it.
    #[cfg(test)]
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }
}

impl Signer {
    /// Also publishes these keys in the JWK Set, after the signing key
    /// (rotation: the next keys before they sign, the previous ones while
    /// what they signed may still be checked). A key already published is
    /// not repeated.
    pub(crate) fn publishing(mut self, published: &[PublishedKey]) -> Signer {
        let (_, own) = public_jwk(&self.key);
        let mut kids = vec![self.kid.clone()];
        let mut keys = vec![own];
        for key in published {
            if !kids.contains(&key.kid) {
                kids.push(key.kid.clone());
                keys.push(key.jwk.clone());
            }
        }
        self.jwks = json!({ "keys": keys }).to_string();
        self
    }

    /// The JWK Set (RFC 7517 §5) with this key's public half (and the
    /// published keys', see [`publishing`](Self::publishing)), served at
    /// `/.well-known/embedgate/jwks.json`.
    pub(crate) fn jwks_json(&self) -> &str {
        &self.jwks
    }
}
