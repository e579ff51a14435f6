//! `X-Embed-Assertion`: the signed statement of who the user is that the
//! gateway hands each upstream (SPEC §2 `[assertion]`, §5).
//!
//! The assertion is a JWT (RFC 7519) in JWS compact serialization
//! (RFC 7515 §7.1), signed with EdDSA over Ed25519 (RFC 8037 §3.1) or ES256
//! (RFC 7518 §3.4). The public key is served as a JWK Set (RFC 7517 §5) at
//! `GET /.well-known/embedgate/jwks.json` so an upstream can check it;
//! [`verify`] is what such an upstream does.
//!
//! All cryptography is `ring`'s. The private key never leaves [`Signer`]: no
//! `Debug`, error or log line prints it, and the token itself is a credential
//! that must not be logged either (SPEC §8).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
    ED25519,
};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::PrivateKeyDer;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// How long an assertion lives: `exp` is at most this many seconds after
/// `iat` (SPEC §5). Short, because it travels to upstreams in a header.
pub const LIFETIME_SECONDS: u64 = 60;

/// A cached assertion is reused only while it has at least this long left,
/// so that it does not expire in flight or while the upstream checks it.
const REUSE_MARGIN_SECONDS: u64 = 15;

/// How far in the future [`verify`] accepts an `iat`, for clock skew between
/// the gateway and the upstream.
const IAT_SKEW_SECONDS: u64 = 60;

/// [`verify`] refuses longer tokens outright; ours are a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A key file larger than this is not a PEM private key.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Bytes of the SHA-256 of the public key that make up the `kid`.
const KID_HASH_BYTES: usize = 16;

/// Everything that can go wrong loading a key, signing, or verifying.
///
/// No variant carries key material or a token.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
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
    /// The token is not a well-formed JWS/JWT of the expected shape.
    #[error("malformed assertion: {0}")]
    Malformed(&'static str),
    /// The JWK Set given to [`verify`] is not usable.
    #[error("malformed JWK set: {0}")]
    BadJwks(&'static str),
    /// No key in the JWK Set has the token's `kid`.
    #[error("assertion signed by an unknown key id")]
    UnknownKid,
    /// The token's `alg` is not the one its key is for (`none` included).
    #[error("assertion alg {alg:?} does not match the key's {key}")]
    AlgMismatch {
        /// The token's `alg`, clipped to a few characters.
        alg: String,
        /// The algorithm the key is for.
        key: &'static str,
    },
    /// The signature does not verify.
    #[error("assertion signature does not verify")]
    BadSignature,
    /// `exp` is not after `now`.
    #[error("assertion expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// `iat` is further in the future than the allowed clock skew.
    #[error("assertion issued in the future at {iat} (now {now})")]
    IssuedInFuture {
        /// The token's `iat`.
        iat: u64,
        /// The verifier's clock.
        now: u64,
    },
}

/// The claims of an assertion (RFC 7519 §4.1 plus `groups`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Claims<'a> {
    /// Issuer: the gateway's `public_url`.
    pub iss: &'a str,
    /// Audience: the app id.
    pub aud: &'a str,
    /// Subject: the user's email.
    pub sub: &'a str,
    /// The user's groups.
    pub groups: &'a [String],
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry, seconds since the Unix epoch; at most [`LIFETIME_SECONDS`] after `iat`.
    pub exp: u64,
}

/// The private key behind the assertions, with its public JWK Set.
///
/// Cheap to share: `Send + Sync`, signing takes `&self`.
pub struct Signer {
    key: Key,
    kid: String,
    jwks: String,
    rng: SystemRandom,
}

enum Key {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

impl Key {
    fn alg(&self) -> &'static str {
        match self {
            Key::Ed25519(_) => "EdDSA",
            Key::P256(_) => "ES256",
        }
    }

    fn public_key(&self) -> &[u8] {
        match self {
            Key::Ed25519(k) => k.public_key().as_ref(),
            Key::P256(k) => k.public_key().as_ref(),
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
    pub fn generate() -> Result<Signer, AssertionError> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| AssertionError::Generate)?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| AssertionError::Generate)?;
        Ok(Signer::new(Key::Ed25519(key), rng))
    }

    /// Loads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`,
    /// RFC 5958 / RFC 7468 §10): Ed25519 (v1 or v2 PKCS#8, as openssl and
    /// rcgen write) or ECDSA P-256. Replicas sharing the file share the `kid`.
    pub fn from_pem_file(path: &Path) -> Result<Signer, AssertionError> {
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
            Ok(key) => Key::Ed25519(key),
            Err(ed) => {
                match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der(), &rng) {
                    Ok(key) => Key::P256(key),
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

    fn new(key: Key, rng: SystemRandom) -> Signer {
        let public = key.public_key();
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(public)[..KID_HASH_BYTES]);
        let jwk = match &key {
            // RFC 8037 §2: an OKP key; `x` is the 32-byte public key.
            Key::Ed25519(_) => json!({
                "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public),
                "kid": kid, "alg": "EdDSA", "use": "sig",
            }),
            // RFC 7518 §6.2.1: ring gives the uncompressed point 0x04 || X || Y.
            Key::P256(_) => json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&public[1..33]), "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
                "kid": kid, "alg": "ES256", "use": "sig",
            }),
        };
        let jwks = json!({ "keys": [jwk] }).to_string();
        Signer { key, kid, jwks, rng }
    }

    /// The key id: base64url of the first 16 bytes of SHA-256 of the public
    /// key bytes (RFC 7517 §4.5 leaves the scheme to us). Stable for a key
    /// file, so replicas agree.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWS `alg` (RFC 7518 §3.1, RFC 8037 §3.1): `"EdDSA"` or `"ES256"`.
    pub fn alg(&self) -> &'static str {
        self.key.alg()
    }

    /// The JWK Set (RFC 7517 §5) with this key's public half, served at
    /// `/.well-known/embedgate/jwks.json`.
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// Signs `claims` into a JWS compact serialization (RFC 7515 §7.1) with
    /// header `{"alg", "typ": "JWT", "kid"}`. ES256 signatures are the fixed
    /// 64-byte `R || S` form RFC 7518 §3.4 requires.
    ///
    /// Refuses claims whose lifetime is empty or longer than [`LIFETIME_SECONDS`].
    pub fn sign(&self, claims: &Claims<'_>) -> Result<String, AssertionError> {
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
            Key::Ed25519(key) => key.sign(token.as_bytes()),
            Key::P256(key) => key
                .sign(&self.rng, token.as_bytes())
                .map_err(|_| AssertionError::Sign)?,
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

/// Checks an assertion as an upstream would, and returns its claims.
///
/// Parses the JWS compact serialization (RFC 7515 §7.1), picks the JWK of
/// `jwks_json` (RFC 7517 §5) whose `kid` the header names, requires the
/// header's `alg` to be the one that key is for (so `none` and algorithm
/// substitution are refused, RFC 7515 §10.7 / RFC 8725 §3.1), verifies the
/// signature, then requires `exp > now` and `iat <= now + 60`.
///
/// It does not check `iss` or `aud`: the caller compares them with the
/// gateway's `public_url` and its own app id. Never panics, whatever the input.
pub fn verify(jwks_json: &str, token: &str, now: u64) -> Result<Value, AssertionError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AssertionError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed("not three dot-separated parts"));
    };

    let header = decode_object(header_b64).ok_or(AssertionError::Malformed("header is not base64url JSON object"))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AssertionError::Malformed("header has no alg"))?;
    // RFC 7515 §4.1.11: extensions we do not understand must fail the token.
    if header.contains_key("crit") {
        return Err(AssertionError::Malformed("header has crit extensions"));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(AssertionError::UnknownKid)?;

    let jwk = find_jwk(jwks_json, kid)?;
    let (key_alg, public) = jwk_public_key(jwk)?;
    if alg != key_alg {
        return Err(AssertionError::AlgMismatch {
            alg: alg.chars().take(16).collect(),
            key: key_alg,
        });
    }

    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| AssertionError::Malformed("signature is not base64url"))?;
    let algorithm: &'static dyn ring::signature::VerificationAlgorithm = if key_alg == "EdDSA" {
        &ED25519
    } else {
        &ECDSA_P256_SHA256_FIXED
    };
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    UnparsedPublicKey::new(algorithm, &public)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| AssertionError::BadSignature)?;

    let claims =
        decode_object(payload_b64).ok_or(AssertionError::Malformed("claims are not a base64url JSON object"))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(AssertionError::Malformed("claims have no exp"))?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(AssertionError::Malformed("claims have no iat"))?;
    if exp <= now {
        return Err(AssertionError::Expired { exp, now });
    }
    if iat > now.saturating_add(IAT_SKEW_SECONDS) {
        return Err(AssertionError::IssuedInFuture { iat, now });
    }
    Ok(Value::Object(claims))
}

/// One base64url segment holding a JSON object.
fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The JWK with `kid` in a JWK Set document.
fn find_jwk(jwks_json: &str, kid: &str) -> Result<Map<String, Value>, AssertionError> {
    let jwks: Value = serde_json::from_str(jwks_json).map_err(|_| AssertionError::BadJwks("not JSON"))?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(AssertionError::BadJwks("no keys array"))?;
    keys.iter()
        .filter_map(Value::as_object)
        .find(|jwk| jwk.get("kid").and_then(Value::as_str) == Some(kid))
        .cloned()
        .ok_or(AssertionError::UnknownKid)
}

/// The algorithm a JWK is for and its public key in ring's encoding.
fn jwk_public_key(jwk: Map<String, Value>) -> Result<(&'static str, Vec<u8>), AssertionError> {
    let field = |name: &'static str| jwk.get(name).and_then(Value::as_str);
    let coordinate = |name: &'static str, len: usize| -> Result<Vec<u8>, AssertionError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(field(name).ok_or(AssertionError::BadJwks("key lacks a coordinate"))?)
            .map_err(|_| AssertionError::BadJwks("coordinate is not base64url"))?;
        if bytes.len() != len {
            return Err(AssertionError::BadJwks("coordinate has the wrong length"));
        }
        Ok(bytes)
    };
    let (alg, public) = match (field("kty"), field("crv")) {
        (Some("OKP"), Some("Ed25519")) => ("EdDSA", coordinate("x", 32)?),
        (Some("EC"), Some("P-256")) => {
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend(coordinate("x", 32)?);
            point.extend(coordinate("y", 32)?);
            ("ES256", point)
        }
        _ => return Err(AssertionError::BadJwks("key is neither Ed25519 nor P-256")),
    };
    // A JWK that names its algorithm must name this one (RFC 7517 §4.4).
    if let Some(named) = jwk.get("alg") {
        if named.as_str() != Some(alg) {
            return Err(AssertionError::BadJwks("key alg disagrees with its kty/crv"));
        }
    }
    Ok((alg, public))
}

/// A session's last assertion, reused while it has time left so that signing
/// does not cost every request.
///
/// It remembers the key and the identity it was signed for, and is never
/// handed out for another.
#[derive(Clone)]
pub struct Cached {
    token: String,
    iat: u64,
    exp: u64,
    kid: String,
    iss: String,
    aud: String,
    sub: String,
    groups: Vec<String>,
}

impl fmt::Debug for Cached {
    // The token is a credential (SPEC §8): only its times show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

impl Cached {
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
    }
}

/// The cached assertion when it was signed by `signer`'s key for the same
/// `iss`, `aud`, `sub` and `groups`, and still has at least 15 s to live at
/// `now` (and its `iat` is not in the future, should the clock step back);
/// otherwise a new one signed from `claims` (whose `iat`/`exp` the caller
/// sets, normally `now` and `now + LIFETIME_SECONDS`), stored in `cache`.
pub fn reuse_or_sign(
    cache: &mut Option<Cached>,
    signer: &Signer,
    claims: &Claims<'_>,
    now: u64,
) -> Result<String, AssertionError> {
    if let Some(cached) = cache.as_ref().filter(|c| c.fits(signer, claims, now)) {
        return Ok(cached.token.clone());
    }
    let token = signer.sign(claims)?;
    *cache = Some(Cached {
        token: token.clone(),
        iat: claims.iat,
        exp: claims.exp,
        kid: signer.kid().to_owned(),
        iss: claims.iss.to_owned(),
        aud: claims.aud.to_owned(),
        sub: claims.sub.to_owned(),
        groups: claims.groups.to_vec(),
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
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn groups() -> Vec<String> {
        vec!["sales".to_owned(), "ops".to_owned()]
    }

    fn claims_at(groups: &[String], now: u64) -> Claims<'_> {
        Claims {
            iss: "https://gw.example.com",
            aud: "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc",
            sub: "user@example.com",
            groups,
            iat: now,
            exp: now + LIFETIME_SECONDS,
        }
    }

    fn b64json(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn segments(token: &str) -> Vec<&str> {
        token.split('.').collect()
    }

    fn header_of(token: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segments(token)[0]).unwrap()).unwrap()
    }

    fn write_pem(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    }

    fn p256_pem(dir: &Path) -> PathBuf {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        write_pem(dir, "p256.pem", pkcs8.as_ref())
    }

    /// Runs openssl with `args`; `None` (test skipped with a reason) when it
    /// is absent, unless `EMBEDGATE_CI_STRICT` is set.
    fn openssl(args: &[&str]) -> Option<()> {
        match std::process::Command::new("openssl").args(args).output() {
            Ok(out) if out.status.success() => Some(()),
            Ok(out) => panic!("openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) if std::env::var_os("EMBEDGATE_CI_STRICT").is_some() => {
                panic!("openssl unavailable and EMBEDGATE_CI_STRICT is set: {e}")
            }
            Err(e) => {
                eprintln!("skipped: openssl unavailable ({e})");
                None
            }
        }
    }

    #[test]
    fn signer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Signer>();
        check::<Cached>();
    }

    #[test]
    fn generated_ed25519_round_trips_exact_claims() {
        let signer = Signer::generate().unwrap();
        assert_eq!(signer.alg(), "EdDSA");
        let groups = groups();
        let token = signer.sign(&claims_at(&groups, NOW)).unwrap();
        assert_eq!(
            header_of(&token),
            json!({"alg": "EdDSA", "typ": "JWT", "kid": signer.kid()})
        );
        let claims = verify(signer.jwks_json(), &token, NOW).unwrap();
        assert_eq!(
            claims,
            json!({
                "iss": "https://gw.example.com",
                "aud": "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc",
                "sub": "user@example.com",
                "groups": ["sales", "ops"],
                "iat": NOW,
                "exp": NOW + 60,
            })
        );
    }

    #[test]
    fn p256_pem_file_signs_es256_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::from_pem_file(&p256_pem(dir.path())).unwrap();
        assert_eq!(signer.alg(), "ES256");
        let groups = groups();
        let token = signer.sign(&claims_at(&groups, NOW)).unwrap();
        assert_eq!(header_of(&token)["alg"], "ES256");
        // RFC 7518 §3.4: R || S, 32 bytes each, not DER.
        assert_eq!(URL_SAFE_NO_PAD.decode(segments(&token)[2]).unwrap().len(), 64);
        let claims = verify(signer.jwks_json(), &token, NOW + 59).unwrap();
        assert_eq!(claims["sub"], "user@example.com");
        assert_eq!(claims["groups"], json!(["sales", "ops"]));
    }

    #[test]
    fn openssl_ed25519_key_loads_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ed.pem");
        if openssl(&["genpkey", "-algorithm", "ed25519", "-out", path.to_str().unwrap()]).is_none() {
            return;
        }
        let signer = Signer::from_pem_file(&path).unwrap();
        assert_eq!(signer.alg(), "EdDSA");
        let groups = groups();
        let token = signer.sign(&claims_at(&groups, NOW)).unwrap();
        verify(signer.jwks_json(), &token, NOW).unwrap();
    }

    #[test]
    fn openssl_p256_key_loads_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ec.pem");
        let out = path.to_str().unwrap();
        let args = [
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            out,
        ];
        if openssl(&args).is_none() {
            return;
        }
        let signer = Signer::from_pem_file(&path).unwrap();
        assert_eq!(signer.alg(), "ES256");
        let groups = groups();
        verify(signer.jwks_json(), &signer.sign(&claims_at(&groups, NOW)).unwrap(), NOW).unwrap();
    }

    #[test]
    fn unsupported_and_broken_key_files_are_named_without_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = Signer::from_pem_file(&missing).unwrap_err();
        assert!(matches!(err, AssertionError::KeyRead { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello SECRETSECRET\n").unwrap();
        let err = Signer::from_pem_file(&garbage).unwrap_err();
        assert!(
            err.to_string().contains("garbage.pem") && !err.to_string().contains("SECRET"),
            "{err}"
        );

        // A well-formed PKCS#8 block whose content is no key at all.
        let junk = write_pem(dir.path(), "junk.pem", b"\x30\x03\x02\x01\x00");
        let err = Signer::from_pem_file(&junk).unwrap_err();
        assert!(matches!(err, AssertionError::UnsupportedKey { .. }), "{err}");
        assert!(err.to_string().contains("junk.pem"), "{err}");

        let sec1 = dir.path().join("sec1.pem");
        std::fs::write(
            &sec1,
            "-----BEGIN EC PRIVATE KEY-----\nMAMCAQA=\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = Signer::from_pem_file(&sec1).unwrap_err();
        assert!(err.to_string().contains("SEC1"), "{err}");
    }

    #[test]
    fn openssl_p384_key_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p384.pem");
        let out = path.to_str().unwrap();
        let args = [
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            out,
        ];
        if openssl(&args).is_none() {
            return;
        }
        let err = Signer::from_pem_file(&path).unwrap_err();
        assert!(matches!(err, AssertionError::UnsupportedKey { .. }), "{err}");
    }

    #[test]
    fn debug_never_shows_key_or_token() {
        let signer = Signer::generate().unwrap();
        let shown = format!("{signer:?}");
        assert!(shown.contains(signer.kid()) && shown.contains("EdDSA"), "{shown}");
        assert!(!shown.contains("Ed25519KeyPair") && !shown.contains("key:"), "{shown}");

        let groups = groups();
        let mut cache = None;
        let token = reuse_or_sign(&mut cache, &signer, &claims_at(&groups, NOW), NOW).unwrap();
        let shown = format!("{cache:?}");
        assert!(
            !shown.contains(&token) && !shown.contains(segments(&token)[2]),
            "{shown}"
        );
    }

    #[test]
    fn tampered_payload_fails() {
        let signer = Signer::generate().unwrap();
        let groups = groups();
        let token = signer.sign(&claims_at(&groups, NOW)).unwrap();
        let parts = segments(&token);
        let forged = b64json(&json!({
            "iss": "https://gw.example.com", "aud": "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc",
            "sub": "admin@example.com", "groups": ["admin"], "iat": NOW, "exp": NOW + 60,
        }));
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert!(matches!(
            verify(signer.jwks_json(), &tampered, NOW),
            Err(AssertionError::BadSignature)
        ));
    }

    #[test]
    fn token_from_another_key_fails() {
        let signer = Signer::generate().unwrap();
        let other = Signer::generate().unwrap();
        let groups = groups();
        let token = other.sign(&claims_at(&groups, NOW)).unwrap();
        assert!(matches!(
            verify(signer.jwks_json(), &token, NOW),
            Err(AssertionError::UnknownKid)
        ));
    }

    #[test]
    fn wrong_kid_fails() {
        let signer = Signer::generate().unwrap();
        let groups = groups();
        let token = signer.sign(&claims_at(&groups, NOW)).unwrap();
        let parts = segments(&token);
        for header in [
            json!({"alg": "EdDSA", "typ": "JWT", "kid": "not-the-kid"}),
            json!({"alg": "EdDSA"}),
        ] {
            let relabelled = format!("{}.{}.{}", b64json(&header), parts[1], parts[2]);
            let result = verify(signer.jwks_json(), &relabelled, NOW);
            assert!(matches!(result, Err(AssertionError::UnknownKid)), "{result:?}");
        }
    }

    #[test]
    fn alg_none_and_other_algs_are_refused() {
        let signer = Signer::generate().unwrap();
        let groups = groups();
        let token = signer.sign(&claims_at(&groups, NOW)).unwrap();
        let parts = segments(&token);
        for alg in ["none", "None", "HS256", "ES256", "RS256", ""] {
            let header = b64json(&json!({"alg": alg, "typ": "JWT", "kid": signer.kid()}));
            for signature in ["", parts[2]] {
                let forged = format!("{header}.{}.{signature}", parts[1]);
                let result = verify(signer.jwks_json(), &forged, NOW);
                assert!(
                    matches!(result, Err(AssertionError::AlgMismatch { .. })),
                    "{alg}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn crit_header_is_refused() {
        let signer = Signer::generate().unwrap();
        let groups = groups();
        let token = signer.sign(&claims_at(&groups, NOW)).unwrap();
        let parts = segments(&token);
        let header = b64json(&json!({"alg": "EdDSA", "kid": signer.kid(), "crit": ["exp"]}));
        let forged = format!("{header}.{}.{}", parts[1], parts[2]);
        assert!(matches!(
            verify(signer.jwks_json(), &forged, NOW),
            Err(AssertionError::Malformed(_))
        ));
    }

    #[test]
    fn expired_and_future_assertions_are_refused() {
        let signer = Signer::generate().unwrap();
        let groups = groups();
        let token = signer.sign(&claims_at(&groups, NOW)).unwrap();
        assert!(verify(signer.jwks_json(), &token, NOW + 59).is_ok());
        assert!(matches!(
            verify(signer.jwks_json(), &token, NOW + 60),
            Err(AssertionError::Expired { .. })
        ));
        assert!(matches!(
            verify(signer.jwks_json(), &token, NOW + 3600),
            Err(AssertionError::Expired { .. })
        ));
        assert!(verify(signer.jwks_json(), &token, NOW - 60).is_ok());
        let result = verify(signer.jwks_json(), &token, NOW - 61);
        assert!(
            matches!(result, Err(AssertionError::IssuedInFuture { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn sign_refuses_lifetimes_outside_the_contract() {
        let signer = Signer::generate().unwrap();
        let groups = groups();
        let base = claims_at(&groups, NOW);
        for (iat, exp) in [(NOW, NOW + 61), (NOW, NOW), (NOW, NOW - 1), (0, u64::MAX)] {
            let claims = Claims { iat, exp, ..base };
            assert!(
                matches!(signer.sign(&claims), Err(AssertionError::Lifetime { .. })),
                "{iat} {exp}"
            );
        }
        assert!(signer.sign(&Claims { exp: NOW + 1, ..base }).is_ok());
    }

    #[test]
    fn jwks_has_exact_fields() {
        let ed = Signer::generate().unwrap();
        let jwks: Value = serde_json::from_str(ed.jwks_json()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let x = keys[0]["x"].as_str().unwrap().to_owned();
        assert_eq!(URL_SAFE_NO_PAD.decode(&x).unwrap().len(), 32);
        assert_eq!(
            keys[0],
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": ed.kid(), "alg": "EdDSA", "use": "sig"})
        );

        let dir = tempfile::tempdir().unwrap();
        let ec = Signer::from_pem_file(&p256_pem(dir.path())).unwrap();
        let jwks: Value = serde_json::from_str(ec.jwks_json()).unwrap();
        let key = &jwks["keys"][0];
        let (x, y) = (key["x"].as_str().unwrap(), key["y"].as_str().unwrap());
        assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap().len(), 32);
        assert_eq!(URL_SAFE_NO_PAD.decode(y).unwrap().len(), 32);
        assert_ne!(x, y);
        assert_eq!(
            *key,
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": ec.kid(), "alg": "ES256", "use": "sig"})
        );
    }

    #[test]
    fn kid_is_stable_across_loads_of_one_file_and_differs_between_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = p256_pem(dir.path());
        let a = Signer::from_pem_file(&path).unwrap();
        let b = Signer::from_pem_file(&path).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.jwks_json(), b.jwks_json());
        assert_eq!(a.kid().len(), 22);
        // Another replica's token verifies with this replica's JWKS.
        let groups = groups();
        verify(a.jwks_json(), &b.sign(&claims_at(&groups, NOW)).unwrap(), NOW).unwrap();

        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let ed = write_pem(dir.path(), "ed.pem", pkcs8.as_ref());
        assert_eq!(
            Signer::from_pem_file(&ed).unwrap().kid(),
            Signer::from_pem_file(&ed).unwrap().kid()
        );
        assert_ne!(Signer::from_pem_file(&ed).unwrap().kid(), a.kid());
        assert_ne!(Signer::generate().unwrap().kid(), Signer::generate().unwrap().kid());
    }

    #[test]
    fn reuse_or_sign_reuses_within_the_window_and_resigns_near_expiry() {
        let signer = Signer::generate().unwrap();
        let groups = groups();
        let mut cache = None;
        let first = reuse_or_sign(&mut cache, &signer, &claims_at(&groups, NOW), NOW).unwrap();
        // 45 s later it has exactly 15 s left: still reused.
        let later = reuse_or_sign(&mut cache, &signer, &claims_at(&groups, NOW + 45), NOW + 45).unwrap();
        assert_eq!(first, later);
        // 46 s later it has 14 s left: a fresh one, valid from now.
        let fresh = reuse_or_sign(&mut cache, &signer, &claims_at(&groups, NOW + 46), NOW + 46).unwrap();
        assert_ne!(first, fresh);
        let claims = verify(signer.jwks_json(), &fresh, NOW + 100).unwrap();
        assert_eq!(claims["iat"], NOW + 46);
        // And the fresh one is what is reused next.
        assert_eq!(
            reuse_or_sign(&mut cache, &signer, &claims_at(&groups, NOW + 50), NOW + 50).unwrap(),
            fresh
        );
    }

    #[test]
    fn reuse_or_sign_resigns_for_another_key_identity_or_a_clock_step_back() {
        let signer = Signer::generate().unwrap();
        let groups = groups();
        let mut cache = None;
        let first = reuse_or_sign(&mut cache, &signer, &claims_at(&groups, NOW), NOW).unwrap();

        let rotated = Signer::generate().unwrap();
        let by_rotated = reuse_or_sign(&mut cache, &rotated, &claims_at(&groups, NOW + 1), NOW + 1).unwrap();
        assert_ne!(first, by_rotated);
        verify(rotated.jwks_json(), &by_rotated, NOW + 1).unwrap();

        let other_user = Claims {
            sub: "other@example.com",
            ..claims_at(&groups, NOW + 2)
        };
        let for_other = reuse_or_sign(&mut cache, &rotated, &other_user, NOW + 2).unwrap();
        assert_eq!(
            verify(rotated.jwks_json(), &for_other, NOW + 2).unwrap()["sub"],
            "other@example.com"
        );

        let fewer = vec!["sales".to_owned()];
        let for_fewer = reuse_or_sign(&mut cache, &rotated, &claims_at(&fewer, NOW + 3), NOW + 3).unwrap();
        assert_eq!(
            verify(rotated.jwks_json(), &for_fewer, NOW + 3).unwrap()["groups"],
            json!(["sales"])
        );

        let stepped_back = reuse_or_sign(&mut cache, &rotated, &claims_at(&fewer, NOW - 100), NOW - 100).unwrap();
        assert_ne!(stepped_back, for_fewer);
    }

    #[test]
    fn garbage_tokens_are_errors_not_panics() {
        let signer = Signer::generate().unwrap();
        let groups = groups();
        let good = signer.sign(&claims_at(&groups, NOW)).unwrap();
        let parts = segments(&good);
        let kid_header = b64json(&json!({"alg": "EdDSA", "kid": signer.kid()}));
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        let four = format!("{good}.x");
        let two = format!("{}.{}", parts[0], parts[1]);
        let padded = format!("{}=.{}.{}", parts[0], parts[1], parts[2]);
        let bad_sig_b64 = format!("{}.{}.!!!", parts[0], parts[1]);
        let short_sig = format!("{}.{}.AAAA", parts[0], parts[1]);
        let header_array = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("[1,2]"), parts[1], parts[2]);
        let header_not_json = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("{alg"), parts[1], parts[2]);
        let alg_number = format!(
            "{}.{}.{}",
            b64json(&json!({"alg": 1, "kid": signer.kid()})),
            parts[1],
            parts[2]
        );
        let kid_number = format!(
            "{}.{}.{}",
            b64json(&json!({"alg": "EdDSA", "kid": 7})),
            parts[1],
            parts[2]
        );
        let non_ascii = format!("é.{}.{}", parts[1], parts[2]);
        // A correct signature over claims without exp, and over a non-object.
        let sign_raw = |payload: &str| {
            let input = format!("{kid_header}.{payload}");
            let Key::Ed25519(key) = &signer.key else { unreachable!() };
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes())))
        };
        let no_exp = sign_raw(&b64json(&json!({"iat": NOW})));
        let exp_string = sign_raw(&b64json(&json!({"iat": NOW, "exp": "later"})));
        let exp_negative = sign_raw(&b64json(&json!({"iat": NOW, "exp": -1})));
        let payload_array = sign_raw(&b64json(&json!([1])));
        let payload_not_b64 = sign_raw("***");
        assert!(verify(
            signer.jwks_json(),
            &sign_raw(&b64json(&json!({"iat": NOW, "exp": NOW + 1}))),
            NOW
        )
        .is_ok());

        let table: &[&str] = &[
            "",
            ".",
            "..",
            "...",
            "a.b.c",
            &huge,
            &four,
            &two,
            &padded,
            &bad_sig_b64,
            &short_sig,
            &header_array,
            &header_not_json,
            &alg_number,
            &kid_number,
            &non_ascii,
            &no_exp,
            &exp_string,
            &exp_negative,
            &payload_array,
            &payload_not_b64,
            "\u{0}.\u{0}.\u{0}",
        ];
        for token in table {
            let result = verify(signer.jwks_json(), token, NOW);
            assert!(result.is_err(), "accepted {token:?}");
        }
    }

    #[test]
    fn garbage_jwks_are_errors_not_panics() {
        let signer = Signer::generate().unwrap();
        let groups = groups();
        let token = signer.sign(&claims_at(&groups, NOW)).unwrap();
        let kid = signer.kid();
        let jwks_docs = [
            String::new(),
            "[]".to_owned(),
            "{\"keys\": 1}".to_owned(),
            "{\"keys\": [1, null]}".to_owned(),
            json!({"keys": [{"kid": kid, "kty": "OKP", "crv": "Ed25519"}]}).to_string(),
            json!({"keys": [{"kid": kid, "kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}).to_string(),
            json!({"keys": [{"kid": kid, "kty": "OKP", "crv": "Ed448", "x": "AAAA"}]}).to_string(),
            json!({"keys": [{"kid": kid, "kty": "EC", "crv": "P-256", "x": "!"}]}).to_string(),
            json!({"keys": [{"kid": kid, "kty": "RSA", "n": "AQAB", "e": "AQAB"}]}).to_string(),
        ];
        for jwks in &jwks_docs {
            assert!(verify(jwks, &token, NOW).is_err(), "accepted with {jwks}");
        }
        // The right key labelled for another algorithm is refused too.
        let mut relabelled: Value = serde_json::from_str(signer.jwks_json()).unwrap();
        relabelled["keys"][0]["alg"] = json!("ES256");
        assert!(matches!(
            verify(&relabelled.to_string(), &token, NOW),
            Err(AssertionError::BadJwks(_))
        ));
    }
}
