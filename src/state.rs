//! What a request runs against: the validated config and everything built
//! from it. SIGHUP builds a whole new [`State`] and swaps it in at once;
//! a request takes the current one when it starts and keeps it to the end.

use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ConfigError, ConfigErrors};
use crate::proxy::UpstreamClient;
use crate::server::tls;

/// One consistent generation of runtime state.
pub struct State {
    pub config: Config,
    /// `None`: the public listener speaks plain HTTP.
    pub tls: Option<TlsAcceptor>,
    pub client: UpstreamClient,
}

impl State {
    /// Builds everything the config describes that can fail: the TLS
    /// acceptor (reading the certificate files) and the upstream client.
    pub fn build(config: Config) -> Result<State, ConfigErrors> {
        let mut errors = Vec::new();
        let tls = match &config.tls {
            Some(t) => tls::acceptor(t, &config.source).map_err(|e| errors.push(e)).ok(),
            None => None,
        };
        let roots = match &config.server.upstream_ca {
            Some(path) => tls::load_roots(path).unwrap_or_else(|why| {
                errors.push(error(&config, "server.upstream_ca", why));
                Vec::new()
            }),
            None => Vec::new(),
        };
        let client = UpstreamClient::new(config.server.upstream_connect_timeout, roots)
            .map_err(|e| errors.push(error(&config, "server.upstream_ca", e.to_string())))
            .ok();
        match client {
            Some(client) if errors.is_empty() => Ok(State { config, tls, client }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

fn error(config: &Config, key: &str, message: String) -> ConfigError {
    ConfigError {
        file: config.source.clone(),
        line: None,
        key: key.into(),
        message,
    }
}

/// The current [`State`], swappable as a whole.
pub struct Shared {
    current: RwLock<Arc<State>>,
}

impl Shared {
    /// Starts with `state`.
    pub fn new(state: State) -> Self {
        Shared {
            current: RwLock::new(Arc::new(state)),
        }
    }

    /// The state in force now.
    pub fn load(&self) -> Arc<State> {
        // A poisoned lock only means a writer panicked between two whole
        // states; the value inside is still one of them.
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `state` in force for every request that starts from now on.
    pub fn store(&self, state: State) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
    }
}
