//! `X-Embed-Assertion`: the signed statement of who the user is that the
//! gateway hands each upstream (SPEC §2 `[assertion]`, §5).
//!
//! The assertion is a JWT (RFC 7519) in JWS compact serialization
//! (RFC 7515 §7.1), signed with EdDSA over Ed25519 (RFC 8037 §3.1) or ES256
//! (RFC 7518 §3.4). The public key is served as a JWK Set (RFC 7517 §5) at
//! `GET /.well-known/embedgate/jwks.json` so an upstream can check it.
//!
//! All cryptography is aws-lc-rs' (the crate's one stack): signing here,
//! the key's origin in [`key`], the published keys in [`jwks`]. The private
//! key never leaves [`Signer`]: no
//! `Debug`, error or log line prints it, and the token itself is a credential
//! that must not be logged either (SPEC §8).

mod jwks;
mod key;

use jwks::public_jwk;
pub(crate) use jwks::PublishedKey;

use std::fmt;
use std::path::PathBuf;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use serde::Serialize;
use serde_json::json;

use crate::session::Attributes;

/// How long an assertion lives: `exp` is at most this many seconds after
/// `iat` (SPEC §5). Short, because it travels to upstreams in a header.
pub(crate) const LIFETIME_SECONDS: u64 = 60;

/// A cached assertion is reused only while it has at least this long left,
/// so that it does not expire in flight or while the upstream checks it.
const REUSE_MARGIN_SECONDS: u64 = 15;

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
    fn new(key: SigningKey, rng: SystemRandom) -> Signer {
        let (kid, jwk) = public_jwk(&key);
        let jwks = json!({ "keys": [jwk] }).to_string();
        Signer { key, kid, jwks, rng }
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

#[cfg(test)]
pub(crate) mod tests;
