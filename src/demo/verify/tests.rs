use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::assertion::tests::{claims_at, groups, openssl, openssl_ec_key, p256_pem, segments, write_pem, NOW};
use crate::assertion::{self, CachedAssertion, Claims, Signer};

fn b64json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segments(token)[0]).unwrap()).unwrap()
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
    let Some(path) = openssl_ec_key(dir.path(), "P-256") else {
        return;
    };
    let signer = Signer::from_pem_file(&path).unwrap();
    assert_eq!(signer.alg(), "ES256");
    let groups = groups();
    verify(signer.jwks_json(), &signer.sign(&claims_at(&groups, NOW)).unwrap(), NOW).unwrap();
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
        Err(VerifyError::BadSignature)
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
        Err(VerifyError::UnknownKid)
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
        assert!(matches!(result, Err(VerifyError::UnknownKid)), "{result:?}");
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
                matches!(result, Err(VerifyError::AlgMismatch { .. })),
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
        Err(VerifyError::Malformed(_))
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
        Err(VerifyError::Expired { .. })
    ));
    assert!(matches!(
        verify(signer.jwks_json(), &token, NOW + 3600),
        Err(VerifyError::Expired { .. })
    ));
    assert!(verify(signer.jwks_json(), &token, NOW - 60).is_ok());
    let result = verify(signer.jwks_json(), &token, NOW - 61);
    assert!(matches!(result, Err(VerifyError::IssuedInFuture { .. })), "{result:?}");
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

/// [`assertion::reuse_or_sign`], as the text of the header value.
fn reuse_or_sign(
    cache: &mut Option<CachedAssertion>,
    signer: &Signer,
    claims: &Claims<'_>,
    now: u64,
) -> Result<String, assertion::AssertionError> {
    assertion::reuse_or_sign(cache, signer, claims, now).map(|v| v.to_str().unwrap().to_owned())
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
    // The signer's key held here as well, to sign what `Signer::sign` refuses.
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::from_pem_file(&write_pem(dir.path(), "ed.pem", pkcs8.as_ref())).unwrap();
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
        Err(VerifyError::BadJwks(_))
    ));
}
