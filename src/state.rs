//! What a request runs against: the validated config and everything built
//! from it. SIGHUP builds a whole new [`State`] and swaps it in at once; a
//! request takes the current one when it starts and keeps it to the end.
//! What must outlive a reload — the session store, the rate-limit counters
//! (while their quotas are unchanged) and the assertion key (while its file
//! is unchanged) — is carried over from the previous generation.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::assertion::{PublishedKey, Signer};
use crate::config::{self, ApiToken, App, Config, ConfigErrors, StoreConfig, User, UserSource};
use crate::limits::Limits;
use crate::metrics::RequestMetrics;
use crate::proxy::UpstreamClient;
use crate::session::{MemoryStore, RedisStore, Store};
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
    /// The request counters and histograms of this configuration's apps.
    pub(crate) request_metrics: RequestMetrics,
    /// Every accepted API token: the config's, plus the demo portal's
    /// (made at start, kept across reloads).
    api_tokens: Vec<ApiToken>,
    demo_token: Option<TokenHash>,
    users: HashMap<String, usize, crate::fast_hash::FastHash>,
    /// By id, the key shared with the config's `App`.
    apps: HashMap<Arc<str>, usize, crate::fast_hash::FastHash>,
    /// Host-mode apps by host name.
    app_hosts: HashMap<String, usize, crate::fast_hash::FastHash>,
}

impl State {
    /// Builds everything the config describes that can fail — the TLS
    /// acceptor, the upstream client, the assertion key — reusing what
    /// `previous` has where it must survive a reload.
    pub(crate) fn build(config: Config, previous: Option<&State>) -> Result<State, ConfigErrors> {
        let mut errors = Vec::new();
        let tls = match &config.tls {
            Some(t) => tls::acceptor(t)
                .map_err(|e| errors.push(config.error_at(&e.key, e.line, e.why)))
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
            (Some(a), _) => {
                let published: Vec<PublishedKey> = a
                    .next_keys
                    .iter()
                    .chain(&a.previous_keys)
                    .filter_map(|file| {
                        PublishedKey::from_pem_file(&file.path)
                            .map_err(|e| errors.push(config.error_at(&file.key, file.line, e.to_string())))
                            .ok()
                    })
                    .collect();
                Signer::from_pem_file(&a.key)
                    .map(|signer| Arc::new(signer.publishing(&published)))
                    .map_err(|e| errors.push(config.error("assertion.key", e.to_string())))
                    .ok()
            }
        };
        let limits = match previous {
            Some(previous) if previous.config.rate_limit == config.rate_limit => previous.limits.clone(),
            _ => Arc::new(Limits::new(&config.rate_limit)),
        };
        let store = match (previous, &config.store) {
            // Sessions outlive a reload; another store needs a restart.
            (Some(previous), _) => Some(previous.store.clone()),
            (None, StoreConfig::Memory) => Some(Arc::new(MemoryStore::new()) as Arc<dyn Store>),
            (
                None,
                StoreConfig::Redis {
                    url,
                    timeout,
                    key_prefix,
                },
            ) => RedisStore::new(url, *timeout, key_prefix)
                .map(|store| Arc::new(store) as Arc<dyn Store>)
                .map_err(|e| errors.push(config.error("store.url", e.to_string())))
                .ok(),
        };
        let users = config
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.email.clone(), i))
            .collect();
        let apps = config.apps.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect();
        let app_hosts = config
            .apps
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Some((a.host.as_ref()?.name.clone(), i)))
            .collect();
        let demo_token = previous.and_then(|p| p.demo_token);
        let api_tokens = api_tokens(&config, demo_token);
        let request_metrics = RequestMetrics::new(config.apps.iter().map(|a| &*a.id));
        match (client, signer, store) {
            (Some(client), Some(signer), Some(store)) if errors.is_empty() => Ok(State {
                config,
                tls,
                client,
                store,
                limits,
                signer,
                request_metrics,
                api_tokens,
                demo_token,
                users,
                apps,
                app_hosts,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// The accepted API tokens, by hash, with their names and scopes.
    pub(crate) fn api_tokens(&self) -> &[ApiToken] {
        &self.api_tokens
    }

    /// Accepts one more API token (the demo portal's) from now on,
    /// including after reloads.
    #[cfg(feature = "demo")]
    pub(crate) fn add_demo_token(&mut self, hash: TokenHash) {
        self.demo_token = Some(hash);
        self.api_tokens = api_tokens(&self.config, self.demo_token);
    }

    /// The configured user with this (lowercased) email.
    pub(crate) fn user(&self, email: &str) -> Option<&User> {
        self.users.get(email).and_then(|&i| self.config.users.get(i))
    }

    /// The configured app with this (lowercased) id.
    pub(crate) fn app(&self, id: &str) -> Option<&App> {
        self.apps.get(id).and_then(|&i| self.config.apps.get(i))
    }

    /// The host-mode app served at the request's host (a `Host` value or
    /// an `:authority`, which `host` reads only when some app has a host of
    /// its own), if any.
    pub(crate) fn app_at_host<'h>(&self, host: impl FnOnce() -> Option<&'h str>) -> Option<&App> {
        if self.app_hosts.is_empty() {
            return None;
        }
        let name = config::host_name(host()?);
        self.app_hosts.get(&name).and_then(|&i| self.config.apps.get(i))
    }

    /// Whether `app` admits `email` now: with `[identity] users = "config"`
    /// by the directory's entry alone; with `"portal"` by the groups a PAT
    /// vouched for (`vouched`) or by a directory entry of the same email.
    /// The per-request form of [`identify`](Self::identify): allocates
    /// nothing.
    pub(crate) fn admits(&self, app: &App, email: &str, vouched: &[String]) -> bool {
        let by_directory = || self.user(email).is_some_and(|u| app.admits(email, &u.groups));
        match self.config.identity {
            UserSource::Config => by_directory(),
            UserSource::Portal => app.admits(email, vouched) || by_directory(),
        }
    }

    /// Who `email` is now, with the groups a PAT vouched for (`vouched`):
    /// with `[identity] users = "config"` the directory's entry alone
    /// (`None`: no such user); with `"portal"` anyone, with the vouched
    /// groups and those of a directory entry of the same email.
    pub(crate) fn identify(&self, email: &str, vouched: &[String]) -> Option<Vec<String>> {
        let listed = self.user(email);
        match self.config.identity {
            UserSource::Config => listed.map(|u| u.groups.clone()),
            UserSource::Portal => {
                let mut groups = vouched.to_vec();
                for group in listed.map(|u| u.groups.as_slice()).unwrap_or_default() {
                    if !groups.contains(group) {
                        groups.push(group.clone());
                    }
                }
                Some(groups)
            }
        }
    }
}

/// Every accepted API token with its name: `token_sha256[i]` and
/// `token_env` (unscoped), the `[[api.tokens]]` entries, and the demo
/// portal's.
fn api_tokens(config: &Config, demo_token: Option<TokenHash>) -> Vec<ApiToken> {
    let api = &config.api;
    // `token_env`'s hash, when there is one, is the last.
    let from_list = api
        .token_hashes
        .len()
        .saturating_sub(usize::from(api.token_env.is_some()));
    let unscoped = api.token_hashes.iter().enumerate().map(|(i, &hash)| {
        let name = if i < from_list {
            format!("token_sha256[{i}]")
        } else {
            "token_env".to_owned()
        };
        ApiToken::unscoped(name, hash)
    });
    let demo = demo_token.map(|hash| ApiToken::unscoped("(demo-portal)".to_owned(), hash));
    unscoped.chain(api.tokens.iter().cloned()).chain(demo).collect()
}
