//! What a request runs against: the validated config and everything built
//! from it. SIGHUP builds a whole new [`State`] and swaps it in at once; a
//! request takes the current one when it starts and keeps it to the end.
//! What must outlive a reload — the session store, the rate-limit counters
//! (while their quotas are unchanged) and the assertion key (while its file
//! is unchanged) — is carried over from the previous generation.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::assertion::Signer;
use crate::config::{App, Config, ConfigErrors, StoreConfig, User};
use crate::limits::Limits;
use crate::proxy::UpstreamClient;
use crate::session::{MemoryStore, Store};
use crate::tls;
use crate::token::TokenHash;

/// One consistent generation of runtime state.
pub(crate) struct State {
    pub(crate) config: Config,
    /// `None`: the public listener speaks plain HTTP.
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) client: UpstreamClient,
    /// Sessions and PATs; the handlers do not know which store it is.
    pub(crate) store: Arc<dyn Store>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) signer: Arc<Signer>,
    /// Hashes of every accepted API token: the config's, plus the demo
    /// portal's (made at start, kept across reloads).
    api_tokens: Vec<TokenHash>,
    demo_token: Option<TokenHash>,
    users: HashMap<String, usize>,
    apps: HashMap<String, usize>,
}

impl State {
    /// Builds everything the config describes that can fail — the TLS
    /// acceptor, the upstream client, the assertion key — reusing what
    /// `previous` has where it must survive a reload.
    pub(crate) fn build(config: Config, previous: Option<&State>) -> Result<State, ConfigErrors> {
        let mut errors = Vec::new();
        if matches!(config.store, StoreConfig::Redis { .. }) {
            // Refused rather than quietly served from memory: replicas would
            // each think they hold every session (SPEC §7).
            errors.push(config.error(
                "store.kind",
                "\"redis\" is not supported by this build yet; use \"memory\"",
            ));
        }
        let tls = match &config.tls {
            Some(t) => tls::acceptor(t)
                .map_err(|e| errors.push(config.error(e.key, e.why)))
                .ok(),
            None => None,
        };
        let roots = match &config.server.upstream_ca {
            Some(path) => tls::load_certificates(path).unwrap_or_else(|why| {
                errors.push(config.error("server.upstream_ca", why));
                Vec::new()
            }),
            None => Vec::new(),
        };
        let client = UpstreamClient::new(config.server.upstream_connect_timeout, roots)
            .map_err(|e| errors.push(config.error("server.upstream_ca", e.to_string())))
            .ok();
        let signer = match (&config.assertion, previous) {
            (None, Some(previous)) if previous.config.assertion.is_none() => Some(previous.signer.clone()),
            (None, _) => Signer::generate()
                .map(Arc::new)
                .map_err(|e| errors.push(config.error("assertion", e.to_string())))
                .ok(),
            (Some(a), _) => Signer::from_pem_file(&a.key)
                .map(Arc::new)
                .map_err(|e| errors.push(config.error("assertion.key", e.to_string())))
                .ok(),
        };
        let limits = match previous {
            Some(previous) if previous.config.rate_limit == config.rate_limit => previous.limits.clone(),
            _ => Arc::new(Limits::new(&config.rate_limit)),
        };
        let store = match previous {
            Some(previous) => previous.store.clone(),
            None => Arc::new(MemoryStore::new()) as Arc<dyn Store>,
        };
        let users = config
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.email.clone(), i))
            .collect();
        let apps = config.apps.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect();
        let demo_token = previous.and_then(|p| p.demo_token);
        let api_tokens = config.api.token_hashes.iter().copied().chain(demo_token).collect();
        match (client, signer) {
            (Some(client), Some(signer)) if errors.is_empty() => Ok(State {
                config,
                tls,
                client,
                store,
                limits,
                signer,
                api_tokens,
                demo_token,
                users,
                apps,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// Hashes of the accepted API tokens.
    pub(crate) fn api_tokens(&self) -> &[TokenHash] {
        &self.api_tokens
    }

    /// Accepts one more API token (the demo portal's) from now on,
    /// including after reloads.
    pub(crate) fn add_demo_token(&mut self, hash: TokenHash) {
        self.demo_token = Some(hash);
        self.api_tokens.push(hash);
    }

    /// The configured user with this (lowercased) email.
    pub(crate) fn user(&self, email: &str) -> Option<&User> {
        self.users.get(email).and_then(|&i| self.config.users.get(i))
    }

    /// The configured app with this (lowercased) id.
    pub(crate) fn app(&self, id: &str) -> Option<&App> {
        self.apps.get(id).and_then(|&i| self.config.apps.get(i))
    }
}
