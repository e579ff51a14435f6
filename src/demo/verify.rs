//! Checking an `X-Embed-Assertion` as an upstream does (SPEC §5): the demo
//! app's own verifier, kept apart from the gateway, which only signs (see
//! [`crate::assertion`]).
//!
//! The assertion is a JWT (RFC 7519) in JWS compact serialization
//! (RFC 7515 §7.1), signed with EdDSA over Ed25519 (RFC 8037 §3.1) or ES256
//! (RFC 7518 §3.4), checked against the gateway's JWK Set (RFC 7517 §5). All
//! cryptography is `ring`'s.

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// How far in the future [`verify`] accepts an `iat`, for clock skew between
/// the gateway and the upstream.
const IAT_SKEW_SECONDS: u64 = 60;

/// [`verify`] refuses longer tokens outright; the gateway's are a few
/// hundred bytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why an assertion was not accepted. No variant carries a token or a key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
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
pub(crate) fn verify(jwks_json: &str, token: &str, now: u64) -> Result<Value, VerifyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("not three dot-separated parts"));
    };

    let header = decode_object(header_b64).ok_or(VerifyError::Malformed("header is not base64url JSON object"))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(VerifyError::Malformed("header has no alg"))?;
    // RFC 7515 §4.1.11: extensions we do not understand must fail the token.
    if header.contains_key("crit") {
        return Err(VerifyError::Malformed("header has crit extensions"));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(VerifyError::UnknownKid)?;

    let jwk = find_jwk(jwks_json, kid)?;
    let (key_alg, public) = jwk_public_key(jwk)?;
    if alg != key_alg {
        return Err(VerifyError::AlgMismatch {
            alg: alg.chars().take(16).collect(),
            key: key_alg,
        });
    }

    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| VerifyError::Malformed("signature is not base64url"))?;
    let algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm = if key_alg == "EdDSA" {
        &ED25519
    } else {
        &ECDSA_P256_SHA256_FIXED
    };
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    UnparsedPublicKey::new(algorithm, &public)
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| VerifyError::BadSignature)?;

    let claims = decode_object(payload_b64).ok_or(VerifyError::Malformed("claims are not a base64url JSON object"))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(VerifyError::Malformed("claims have no exp"))?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or(VerifyError::Malformed("claims have no iat"))?;
    if exp <= now {
        return Err(VerifyError::Expired { exp, now });
    }
    if iat > now.saturating_add(IAT_SKEW_SECONDS) {
        return Err(VerifyError::IssuedInFuture { iat, now });
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
fn find_jwk(jwks_json: &str, kid: &str) -> Result<Map<String, Value>, VerifyError> {
    let jwks: Value = serde_json::from_str(jwks_json).map_err(|_| VerifyError::BadJwks("not JSON"))?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(VerifyError::BadJwks("no keys array"))?;
    keys.iter()
        .filter_map(Value::as_object)
        .find(|jwk| jwk.get("kid").and_then(Value::as_str) == Some(kid))
        .cloned()
        .ok_or(VerifyError::UnknownKid)
}

/// The algorithm a JWK is for and its public key in ring's encoding.
fn jwk_public_key(jwk: Map<String, Value>) -> Result<(&'static str, Vec<u8>), VerifyError> {
    let field = |name: &'static str| jwk.get(name).and_then(Value::as_str);
    let coordinate = |name: &'static str, len: usize| -> Result<Vec<u8>, VerifyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(field(name).ok_or(VerifyError::BadJwks("key lacks a coordinate"))?)
            .map_err(|_| VerifyError::BadJwks("coordinate is not base64url"))?;
        if bytes.len() != len {
            return Err(VerifyError::BadJwks("coordinate has the wrong length"));
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
        _ => return Err(VerifyError::BadJwks("key is neither Ed25519 nor P-256")),
    };
    // A JWK that names its algorithm must name this one (RFC 7517 §4.4).
    if let Some(named) = jwk.get("alg") {
        if named.as_str() != Some(alg) {
            return Err(VerifyError::BadJwks("key alg disagrees with its kty/crv"));
        }
    }
    Ok((alg, public))
}

#[cfg(test)]
mod tests;
