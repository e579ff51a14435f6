//! The one crypto stack, aws-lc-rs: the provider of every TLS connection,
//! served or made, listener and upstream client alike; and the digests,
//! signatures and randomness of the rest of the gateway come from the same
//! library (`aws_lc_rs::rand`, `::signature`), through [`sha256`] for the
//! hashes of tokens.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The one crypto provider of every TLS connection, served or made:
/// aws-lc-rs, with AES-128-GCM suites first. AES-128-GCM is as safe for
/// TLS as AES-256-GCM, and its TLS 1.3 suite's SHA-256 key schedule makes
/// a full handshake cheaper than AES-256-GCM-SHA384's (bench/run's TLS
/// rows measure it).
pub(crate) fn tls_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            // A stable sort: the rest keep aws-lc-rs' order.
            provider.cipher_suites.sort_by_key(|suite| {
                !matches!(
                    suite.suite(),
                    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                        | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                )
            });
            Arc::new(provider)
        })
        .clone()
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_is_fips_180_4s() {
        // FIPS 180-4's example "abc".
        assert_eq!(
            hex::encode(super::sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
