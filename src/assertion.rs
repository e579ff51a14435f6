//! `X-Embed-Assertion`: the signed statement of who the user is that the
//! gateway hands each upstream (SPEC §2 `[assertion]`, §5).
//!
//! The assertion is a JWT (RFC 7519) in JWS compact serialization
//! (RFC 7515 §7.1), signed with EdDSA over Ed25519 (RFC 8037 §3.1) or ES256
//! (RFC 7518 §3.4). The public key is served as a JWK Set (RFC 7517 §5) at
//! `GET /.well-known/embedgate/jwks.json` so an upstream can check it.
//!
//! All cryptography is `ring`'s. The private key never leaves [`Signer`]: no
//! `Debug`, error or log line prints it, and the token itself is a credential
//! that must not be logged either (SPEC §8).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::PrivateKeyDer;
use serde::Serialize;
use serde_json::json;

use crate::session::Attributes;

/// How long an assertion lives: `exp` is at most this many seconds after
/// `iat` (SPEC §5). Short, because it travels to upstreams in a header.
pub(crate) const LIFETIME_SECONDS: u64 = 60;

/// A cached assertion is reused only while it has at least this long left,
/// so that it does not expire in flight or while the upstream checks it.
const REUSE_MARGIN_SECONDS: u64 = 15;

/// A key file larger than this is not a PEM private key.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Bytes of the SHA-256 of the public key that make up the `kid`.
const KID_HASH_BYTES: usize = 16;

/// Everything that can go wrong loading a key or signing.
///
/// No variant carries key material or a token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AssertionError {
    /// The key file could not be read.
    #[error("cannot read assertion key {}: {source}", path.display())]
    KeyRead {
        /// The configured key file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not a usable PKCS#8 PEM document.
    #[error("assertion key {}: {reason}", path.display())]
    KeyParse {
        /// The configured key file.
        path: PathBuf,
        /// Why, in words; never the file's content.
        reason: String,
    },
    /// The key is PKCS#8 but neither Ed25519 nor ECDSA P-256.
    #[error(
        "assertion key {}: not an Ed25519 or P-256 key (Ed25519: {ed25519}; P-256: {p256})",
        path.display()
    )]
    UnsupportedKey {
        /// The configured key file.
        path: PathBuf,
        /// ring's reason for refusing it as Ed25519.
        ed25519: String,
        /// ring's reason for refusing it as P-256.
        p256: String,
    },
    /// The system random source failed while generating a key.
    #[error("cannot generate an assertion signing key")]
    Generate,
    /// Signing failed (ECDSA needs randomness, which can fail).
    #[error("cannot sign the assertion")]
    Sign,
    /// The claims to sign break the lifetime rule: `iat < exp <= iat + 60`.
    #[error("assertion lifetime out of range: iat {iat}, exp {exp} (at most {LIFETIME_SECONDS} s)")]
    Lifetime {
        /// The requested `iat`.
        iat: u64,
        /// The requested `exp`.
        exp: u64,
    },
}

/// The claims of an assertion (RFC 7519 §4.1 plus `groups` and `attrs`).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Claims<'a> {
    /// Issuer: the gateway's `public_url`.
    pub(crate) iss: &'a str,
    /// Audience: the app id.
    pub(crate) aud: &'a str,
    /// Subject: the user's email.
    pub(crate) sub: &'a str,
    /// The user's groups.
    pub(crate) groups: &'a [String],
    /// The attributes the portal vouched for; left out when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) attrs: Option<&'a Attributes>,
    /// Issued at, seconds since the Unix epoch.
    pub(crate) iat: u64,
    /// Expiry, seconds since the Unix epoch; at most [`LIFETIME_SECONDS`] after `iat`.
    pub(crate) exp: u64,
}

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

fn public_jwk(key: &SigningKey) -> (String, serde_json::Value) {
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
    kid: String,
    jwk: serde_json::Value,
}

/// DER prefixes of the SubjectPublicKeyInfo of an Ed25519 key (RFC 8410
/// §4) and of an uncompressed P-256 point (RFC 5480 §2): what follows is
/// the raw public key.
const ED25519_SPKI_PREFIX: &[u8] = &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
const P256_SPKI_PREFIX: &[u8] = &[
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

/// The private key behind the assertions, with its public JWK Set.
///
/// Cheap to share: `Send + Sync`, signing takes `&self`.
pub(crate) struct Signer {
    key: SigningKey,
    kid: String,
    jwks: String,
    rng: SystemRandom,
}

enum SigningKey {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

impl SigningKey {
    fn alg(&self) -> &'static str {
        match self {
            SigningKey::Ed25519(_) => "EdDSA",
            SigningKey::P256(_) => "ES256",
        }
    }

    fn public_key(&self) -> &[u8] {
        match self {
            SigningKey::Ed25519(k) => k.public_key().as_ref(),
            SigningKey::P256(k) => k.public_key().as_ref(),
        }
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg())
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

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

    fn new(key: SigningKey, rng: SystemRandom) -> Signer {
        let (kid, jwk) = public_jwk(&key);
        let jwks = json!({ "keys": [jwk] }).to_string();
        Signer { key, kid, jwks, rng }
    }

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

    /// The key id: base64url of the first 16 bytes of SHA-256 of the public
    /// key bytes (RFC 7517 §4.5 leaves the scheme to us). Stable for a key
    /// file, so replicas agree.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS `alg` (RFC 7518 §3.1, RFC 8037 §3.1): `"EdDSA"` or `"ES256"`.
    pub(crate) fn alg(&self) -> &'static str {
        self.key.alg()
    }

    /// The JWK Set (RFC 7517 §5) with this key's public half (and the
    /// published keys', see [`publishing`](Self::publishing)), served at
    /// `/.well-known/embedgate/jwks.json`.
    pub(crate) fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// Signs `claims` into a JWS compact serialization (RFC 7515 §7.1) with
    /// header `{"alg", "typ": "JWT", "kid"}`. ES256 signatures are the fixed
    /// 64-byte `R || S` form RFC 7518 §3.4 requires.
    ///
    /// Refuses claims whose lifetime is empty or longer than [`LIFETIME_SECONDS`].
    pub(crate) fn sign(&self, claims: &Claims<'_>) -> Result<String, AssertionError> {
        if claims.exp <= claims.iat || claims.exp - claims.iat > LIFETIME_SECONDS {
            return Err(AssertionError::Lifetime {
                iat: claims.iat,
                exp: claims.exp,
            });
        }
        let header = json!({ "alg": self.alg(), "typ": "JWT", "kid": self.kid });
        let claims = serde_json::to_vec(claims).map_err(|_| AssertionError::Sign)?;
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = match &self.key {
            SigningKey::Ed25519(key) => key.sign(token.as_bytes()),
            SigningKey::P256(key) => key
                .sign(&self.rng, token.as_bytes())
                .map_err(|_| AssertionError::Sign)?,
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

/// A session's last assertion, reused while it has time left so that signing
/// does not cost every request. It is kept as the header value it is sent
/// as, so a request only clones it.
///
/// It remembers the key and the identity it was signed for, and is never
/// handed out for another.
#[derive(Clone)]
pub(crate) struct CachedAssertion {
    token: HeaderValue,
    iat: u64,
    exp: u64,
    kid: String,
    iss: String,
    aud: String,
    sub: String,
    groups: Vec<String>,
    attrs: Option<Attributes>,
}

impl fmt::Debug for CachedAssertion {
    // The token is a credential (SPEC §8): only its times show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedAssertion")
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

impl CachedAssertion {
    /// Whether it is still valid after `now` (Unix seconds).
    pub(crate) fn expires_after(&self, now: u64) -> bool {
        self.exp > now
    }

    fn fits(&self, signer: &Signer, claims: &Claims<'_>, now: u64) -> bool {
        self.kid == signer.kid()
            && self.iat <= now
            && self.exp >= now.saturating_add(REUSE_MARGIN_SECONDS)
            && self.iss == claims.iss
            && self.aud == claims.aud
            && self.sub == claims.sub
            && self.groups == claims.groups
            && self.attrs.as_ref() == claims.attrs
    }
}

/// The cached assertion when it was signed by `signer`'s key for the same
/// `iss`, `aud`, `sub`, `groups` and `attrs`, and still has at least 15 s to live at
/// `now` (and its `iat` is not in the future, should the clock step back);
/// otherwise a new one signed from `claims` (whose `iat`/`exp` the caller
/// sets, normally `now` and `now + LIFETIME_SECONDS`), stored in `cache`.
/// Either way as the `X-Embed-Assertion` value, marked sensitive.
pub(crate) fn reuse_or_sign(
    cache: &mut Option<CachedAssertion>,
    signer: &Signer,
    claims: &Claims<'_>,
    now: u64,
) -> Result<HeaderValue, AssertionError> {
    if let Some(cached) = cache.as_ref().filter(|c| c.fits(signer, claims, now)) {
        return Ok(cached.token.clone());
    }
    // base64url and dots: always a valid header value.
    let mut token = HeaderValue::try_from(signer.sign(claims)?).map_err(|_| AssertionError::Sign)?;
    token.set_sensitive(true);
    *cache = Some(CachedAssertion {
        token: token.clone(),
        iat: claims.iat,
        exp: claims.exp,
        kid: signer.kid().to_owned(),
        iss: claims.iss.to_owned(),
        aud: claims.aud.to_owned(),
        sub: claims.sub.to_owned(),
        groups: claims.groups.to_vec(),
        attrs: claims.attrs.cloned(),
    });
    Ok(token)
}

/// Reads at most [`MAX_KEY_FILE_BYTES`] (a mistaken path to a huge file or a
/// device must not hang the start).
fn read_bounded(path: &Path) -> Result<Vec<u8>, AssertionError> {
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

#[cfg(test)]
pub(crate) mod tests;
