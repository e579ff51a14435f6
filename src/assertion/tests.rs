//! Also the test helpers of the demo's verifier, which checks what this
//! module signs.
use super::jwks::{ED25519_SPKI_PREFIX, P256_SPKI_PREFIX};
use super::*;
use aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
use serde_json::Value;
use std::path::Path;

pub(crate) const NOW: u64 = 1_700_000_000;

pub(crate) fn groups() -> Vec<String> {
    vec!["sales".to_owned(), "ops".to_owned()]
}

pub(crate) fn claims_at(groups: &[String], now: u64) -> Claims<'_> {
    Claims {
        iss: "https://gw.example.com",
        aud: "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc",
        sub: "user@example.com",
        groups,
        attrs: None,
        iat: now,
        exp: now + LIFETIME_SECONDS,
    }
}

pub(crate) fn segments(token: &str) -> Vec<&str> {
    token.split('.').collect()
}

pub(crate) fn write_pem(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
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

pub(crate) fn p256_pem(dir: &Path) -> PathBuf {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    write_pem(dir, "p256.pem", pkcs8.as_ref())
}

/// Runs openssl with `args`; `None` (test skipped with a reason) when it
/// is absent, unless `EMBEDGATE_CI_STRICT` is set.
pub(crate) fn openssl(args: &[&str]) -> Option<()> {
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

/// An EC private key on `curve` (e.g. `P-256`) written by openssl in
/// `dir`; `None` as [`openssl`] says.
pub(crate) fn openssl_ec_key(dir: &Path, curve: &str) -> Option<PathBuf> {
    let path = dir.join(format!("{curve}.pem"));
    let curve = format!("ec_paramgen_curve:{curve}");
    let out = path.to_str()?;
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", &curve, "-out", out])?;
    Some(path)
}

#[test]
fn signer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Signer>();
    check::<CachedAssertion>();
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
    let Some(path) = openssl_ec_key(dir.path(), "P-384") else {
        return;
    };
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
    let token = token.to_str().unwrap();
    let shown = format!("{cache:?}");
    assert!(!shown.contains(token) && !shown.contains(segments(token)[2]), "{shown}");
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

/// A PEM `PUBLIC KEY` (SPKI) block of `der`.
fn write_public_pem(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
    let path = write_pem(dir, name, der);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("PRIVATE KEY", "PUBLIC KEY");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn published_keys_follow_the_signing_key_in_the_jwks_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let rng = SystemRandom::new();
    let next_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let next_path = write_pem(dir.path(), "next.pem", next_pkcs8.as_ref());
    let next = PublishedKey::from_pem_file(&next_path).unwrap();
    let next_signer = Signer::from_pem_file(&next_path).unwrap();
    assert_eq!(next.kid(), next_signer.kid(), "a private key publishes its public half");

    // The same key as an SPKI public key has the same kid and JWK.
    let public = Ed25519KeyPair::from_pkcs8(next_pkcs8.as_ref()).unwrap();
    let spki = [ED25519_SPKI_PREFIX, public.public_key().as_ref()].concat();
    let from_public = PublishedKey::from_pem_file(&write_public_pem(dir.path(), "pub.pem", &spki)).unwrap();
    assert_eq!(from_public.kid(), next.kid());
    assert_eq!(from_public.jwk, next.jwk);

    // A P-256 public key, as openssl would write it.
    let p256 = Signer::from_pem_file(&p256_pem(dir.path())).unwrap();
    let SigningKey::P256(pair) = &p256.key else {
        panic!("P-256")
    };
    let spki = [P256_SPKI_PREFIX, pair.public_key().as_ref()].concat();
    let p256_public = PublishedKey::from_pem_file(&write_public_pem(dir.path(), "p256-pub.pem", &spki)).unwrap();
    assert_eq!(p256_public.kid(), p256.kid());

    let signer = Signer::generate()
        .unwrap()
        .publishing(&[next.clone(), p256_public, next]);
    let jwks: Value = serde_json::from_str(signer.jwks_json()).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [signer.kid(), next_signer.kid(), p256.kid()]);

    // Publishing the signing key itself does not repeat it.
    let own = PublishedKey::from_pem_file(&next_path).unwrap();
    let alone = Signer::from_pem_file(&next_path).unwrap().publishing(&[own]);
    let jwks: Value = serde_json::from_str(alone.jwks_json()).unwrap();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));

    let junk = write_public_pem(dir.path(), "junk-pub.pem", b"\x30\x03\x02\x01\x00");
    let err = PublishedKey::from_pem_file(&junk).unwrap_err();
    assert!(err.to_string().contains("junk-pub.pem"), "{err}");
}
