//! The assertion as an upstream checks it (SPEC §5): the JWK Set (RFC 7517
//! §5) at `/.well-known/embedgate/jwks.json`, JWS compact verification
//! (RFC 7515 §7.1) with ring for EdDSA (RFC 8037) and ES256 (RFC 7518 §3.4),
//! and assertion signing keys written as PKCS#8 PEM files for `[assertion]`.
//!
//! Keys are told apart by their public key material, never by how the
//! gateway derives a `kid`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::KeyPair;
use serde_json::Value;

use super::client::get;

/// Where the gateway publishes its assertion keys.
pub const JWKS_PATH: &str = "/.well-known/embedgate/jwks.json";

/// Decodes base64url without padding, panicking with the input on error.
pub fn b64url_decode(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {s:?}"))
}

/// The JWK Set the gateway at `addr` serves (asserting a 200, a `keys`
/// array, and no private key in it).
pub async fn fetch_jwks(addr: SocketAddr) -> Value {
    let r = get(addr, JWKS_PATH).await;
    assert_eq!(r.status, 200, "GET {JWKS_PATH}: {r:?} {}", r.text());
    let jwks = r.json();
    let keys = jwks["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("a JWK Set without a keys array: {jwks}"));
    for k in keys {
        assert!(k.get("d").is_none(), "the JWKS publishes a private key: {k}");
    }
    jwks
}

/// The JWKs of a set, in order.
pub fn jwks_keys(jwks: &Value) -> Vec<Value> {
    jwks["keys"].as_array().cloned().unwrap_or_default()
}

/// The `kid`s of a JWK Set, in order.
pub fn jwks_kids(jwks: &Value) -> Vec<String> {
    jwks_keys(jwks)
        .iter()
        .map(|k| {
            k["kid"]
                .as_str()
                .unwrap_or_else(|| panic!("a JWK without a kid: {k}"))
                .to_string()
        })
        .collect()
}

/// The decoded JOSE header of a compact JWS.
pub fn jwt_header(jwt: &str) -> Value {
    let part = jwt.split('.').next().unwrap_or("");
    serde_json::from_slice(&b64url_decode(part)).unwrap_or_else(|e| panic!("header is not JSON ({e}): {jwt}"))
}

/// The decoded claims of a compact JWS (not verified: see [`verify_jwt`]).
pub fn jwt_claims(jwt: &str) -> Value {
    let part = jwt
        .split('.')
        .nth(1)
        .unwrap_or_else(|| panic!("not a compact JWS: {jwt}"));
    serde_json::from_slice(&b64url_decode(part)).unwrap_or_else(|e| panic!("claims are not JSON ({e}): {jwt}"))
}

/// The `kid` of a compact JWS's header.
pub fn jwt_kid(jwt: &str) -> String {
    let header = jwt_header(jwt);
    header["kid"]
        .as_str()
        .unwrap_or_else(|| panic!("no kid in the header: {header}"))
        .to_string()
}

/// The algorithm a JWK is for and its public key as ring takes it: the 32
/// bytes of an Ed25519 `x` (RFC 8037 §2), or the uncompressed P-256 point
/// `0x04 || x || y` (RFC 7518 §6.2.1).
pub fn jwk_public_key(jwk: &Value) -> Result<(&'static str, Vec<u8>), String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let s = jwk[name].as_str().ok_or_else(|| format!("JWK without {name}: {jwk}"))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| format!("JWK {name} is not base64url ({e}): {jwk}"))
    };
    match (jwk["kty"].as_str(), jwk["crv"].as_str()) {
        (Some("OKP"), Some("Ed25519")) => {
            let x = field("x")?;
            if x.len() != 32 {
                return Err(format!("Ed25519 x of {} bytes: {jwk}", x.len()));
            }
            Ok(("EdDSA", x))
        }
        (Some("EC"), Some("P-256")) => {
            let (x, y) = (field("x")?, field("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err(format!("P-256 x/y of {}/{} bytes: {jwk}", x.len(), y.len()));
            }
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(("ES256", point))
        }
        _ => Err(format!("neither an Ed25519 nor a P-256 JWK: {jwk}")),
    }
}

/// Checks a compact JWS as an upstream would: the JWK named by the header's
/// `kid`, the header's `alg` equal to that key's, the signature. Returns the
/// claims. Does not look at `exp`: the caller does when it matters.
pub fn verify_jwt(jwks: &Value, jwt: &str) -> Result<Value, String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err(format!("not a compact JWS: {jwt}"));
    }
    let header = jwt_header(jwt);
    let kid = header["kid"].as_str().ok_or_else(|| format!("no kid: {header}"))?;
    let jwk = jwks_keys(jwks)
        .into_iter()
        .find(|k| k["kid"] == kid)
        .ok_or_else(|| format!("kid {kid} is not in the JWKS: {jwks}"))?;
    let (alg, public) = jwk_public_key(&jwk)?;
    if header["alg"] != alg {
        return Err(format!("header alg {} but the key is for {alg}: {jwk}", header["alg"]));
    }
    if jwk.get("alg").is_some() && jwk["alg"] != alg {
        return Err(format!("the JWK says alg {} for a {alg} key", jwk["alg"]));
    }
    let algorithm: &'static dyn ring::signature::VerificationAlgorithm = match alg {
        "EdDSA" => &ring::signature::ED25519,
        _ => &ring::signature::ECDSA_P256_SHA256_FIXED,
    };
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|e| format!("signature is not base64url ({e})"))?;
    let signed = format!("{}.{}", parts[0], parts[1]);
    ring::signature::UnparsedPublicKey::new(algorithm, &public)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| format!("the signature does not verify against kid {kid}"))?;
    Ok(jwt_claims(jwt))
}

/// An assertion signing key written to a PKCS#8 PEM file.
#[derive(Debug, Clone)]
pub struct AssertionKey {
    /// The file.
    pub path: PathBuf,
    /// The file's name, for a config next to it.
    pub file_name: String,
    /// `"EdDSA"` or `"ES256"`.
    pub alg: &'static str,
    /// The public key as [`jwk_public_key`] gives it.
    pub public: Vec<u8>,
}

impl AssertionKey {
    /// A fresh Ed25519 key in `dir/name` (PKCS#8 as ring writes it).
    pub fn ed25519(dir: &Path, name: &str) -> AssertionKey {
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519 key");
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse Ed25519 key");
        AssertionKey::write(dir, name, pkcs8.as_ref(), "EdDSA", pair.public_key().as_ref())
    }

    /// A fresh P-256 key in `dir/name` (PKCS#8 as ring writes it).
    pub fn p256(dir: &Path, name: &str) -> AssertionKey {
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let rng = SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("P-256 key");
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("parse P-256 key");
        AssertionKey::write(dir, name, pkcs8.as_ref(), "ES256", pair.public_key().as_ref())
    }

    fn write(dir: &Path, name: &str, der: &[u8], alg: &'static str, public: &[u8]) -> AssertionKey {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write key file");
        AssertionKey {
            path,
            file_name: name.to_string(),
            alg,
            public: public.to_vec(),
        }
    }

    /// Whether `jwk` publishes this key.
    pub fn is(&self, jwk: &Value) -> bool {
        matches!(jwk_public_key(jwk), Ok((alg, public)) if alg == self.alg && public == self.public)
    }

    /// This key's JWK in `jwks`, if published.
    pub fn jwk_in(&self, jwks: &Value) -> Option<Value> {
        jwks_keys(jwks).into_iter().find(|k| self.is(k))
    }

    /// This key's `kid` in `jwks`, if published.
    pub fn kid_in(&self, jwks: &Value) -> Option<String> {
        self.jwk_in(jwks).and_then(|k| k["kid"].as_str().map(str::to_string))
    }
}
