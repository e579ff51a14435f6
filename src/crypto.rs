//! The one crypto provider of every TLS connection, served or made,
//! listener and upstream client alike.

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
