//! embedgate: a reverse-proxy gateway that embeds web apps in a portal
//! through personal access tokens (see `SPEC.md`).
//!
//! [`Gateway::start`] is what the binary runs: it binds the listeners and
//! serves until [`Gateway::shutdown`]. Everything else is crate-private.
//!
//! Modules form layers, and a module only uses modules of a lower layer,
//! never one of its own or above, nor anything of this file. This table is
//! the one list of them: `tests/it/layers.rs` reads it, and fails on an import
//! that points sideways or up and on a module the table does not rank. Top
//! to bottom, one layer a line (a description may go on below it):
//!
//! ```text
//! bench_support, fuzzing          fixtures for benches/ and fuzz/ only (nothing uses them)
//! server, demo                    accept, TLS, HTTP/1.1 + HTTP/2, drain, admin; the bundled demo
//! router                          path → route
//! api, embed, helper              the PAT API; the exchange and the embed route's phases;
//!                                   the host-page helper (js/)
//! state                           one generation of config and what is built from it
//! assertion                       signing the identity for the upstream (X-Embed-Assertion)
//! session, limits, proxy, tls     records and the Store; rate limits; the proxy engine;
//!                                   PEM certificates
//! config, telemetry               gateway.toml → Config; logging and redaction
//! token, error                    tokens and hashes; GatewayError → response
//! body, query, drain, metrics, request_id, certs
//!                                 bodies; query strings; graceful drain; metrics; request
//!                                   ids; dev certificates (the demo's)
//! fast_hash, crypto               the hasher of the maps looked up on every request; the
//!                                   crypto provider of every TLS connection
//! ```

#![forbid(unsafe_code)]

mod api;
mod assertion;
/// Fixtures for the criterion benchmarks in `benches/` only: thin wrappers
/// around the crate's hot-path code. Not a stable API: built only with the
/// `internals` feature, which `benches/` and `fuzz/` turn on.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod bench_support;
mod body;
#[cfg(feature = "demo")]
mod certs;
mod config;
mod crypto;
#[cfg(feature = "demo")]
mod demo;
mod drain;
mod embed;
mod error;
mod fast_hash;
/// Entry points for the fuzz targets in `fuzz/` only: the crate's own
/// parsers fed arbitrary bytes. Not a stable API (the `internals` feature).
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod fuzzing;
mod helper;
mod limits;
mod metrics;
mod proxy;
mod query;
mod request_id;
mod router;
mod server;
mod session;
mod state;
mod telemetry;
mod tls;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{error, info, warn};

pub use config::{load as load_config, Config, ConfigError, ConfigErrors};
pub use telemetry::{init as init_logging, LogFormat, LogGuard};

use drain::{Drain, Watch};
use server::Shared;
use state::State;

/// Why the gateway could not start (or a reload was refused).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("demo certificates: {0}")]
    Certs(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("demo app on {addr}: {source}")]
    Demo { addr: SocketAddr, source: std::io::Error },
    #[error("log.audit_file: cannot open {path} for appending: {source}")]
    AuditFile { path: PathBuf, source: std::io::Error },
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    drain: Drain,
    public_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    demo: Option<DemoServers>,
}

/// What `[demo] enabled` started.
#[derive(Debug, Clone)]
pub struct DemoServers {
    /// The demo upstream app.
    pub app: SocketAddr,
    /// The demo portal page.
    pub portal: SocketAddr,
    /// The portal's API token, made at start and printed for the README's
    /// curl walk-through.
    pub api_token: String,
}

impl Gateway {
    /// Prepares the demo files (when `[demo] enabled`), builds the state,
    /// binds the public and admin listeners, starts the demo servers and
    /// starts serving.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        #[cfg(feature = "demo")]
        if config.demo.enabled {
            make_demo_files(&config)?;
        }
        for warning in warnings(&config) {
            warn!(%warning, "configuration");
        }
        #[cfg_attr(not(feature = "demo"), allow(unused_mut))]
        let mut state = State::build(config, None)?;
        open_audit_file(&state.config)?;
        let server = &state.config.server;
        let listener = bind("server.listen", server.listen).await?;
        let public_addr = listener.local_addr().unwrap_or(server.listen);
        let admin = match server.admin_listen {
            Some(addr) => Some(bind("server.admin_listen", addr).await?),
            None => None,
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr().unwrap_or(server.listen));
        let max_connections = server.max_connections;
        // Without the demo feature the config refuses `[demo] enabled`.
        #[cfg(not(feature = "demo"))]
        let demo = None;
        #[cfg(feature = "demo")]
        let demo = if state.config.demo.enabled {
            Some(start_demo(&mut state, public_addr).await?)
        } else {
            None
        };

        state
            .store
            .clone()
            .start()
            .map_err(|e| ConfigErrors(vec![state.config.error("store.url", e.to_string())]))?;
        let ended_sessions = state.store.ended_sessions();
        let shared = Arc::new(Shared::new(state));
        let (drain, watch) = Drain::new();
        tokio::spawn(
            shared
                .embed
                .clone()
                .follow_ended_sessions(ended_sessions, watch.clone()),
        );
        tokio::spawn(server::accept_loop(
            listener,
            shared.clone(),
            watch.clone(),
            max_connections,
        ));
        if let Some(admin) = admin {
            tokio::spawn(server::admin::serve(admin, watch.clone(), shared.clone()));
        }
        tokio::spawn(sweep(shared.clone(), watch.clone()));
        drop::<Watch>(watch);
        Ok(Gateway {
            shared,
            drain,
            public_addr,
            admin_addr,
            demo,
        })
    }

    /// Where the public listener is bound.
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    /// Where the admin listener is bound, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// What the demo started, when `[demo] enabled`.
    pub fn demo(&self) -> Option<&DemoServers> {
        self.demo.as_ref()
    }

    /// `http` or `https`: what the public listener speaks.
    pub fn public_scheme(&self) -> &'static str {
        if self.shared.load().tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `server.public_url` in force.
    pub fn public_url(&self) -> String {
        self.shared.load().config.server.public_url.clone()
    }

    /// `server.shutdown_grace_seconds` in force.
    pub fn shutdown_grace(&self) -> Duration {
        self.shared.load().config.server.shutdown_grace
    }

    /// Reads the config file at `path` and [`reload`](Self::reload)s it
    /// (SIGHUP); a file that does not parse is refused like an invalid
    /// config, and counted so.
    ///
    /// The audit file is reopened either way: logrotate sends SIGHUP after
    /// moving it, whatever became of the config file meanwhile.
    pub fn reload_file(&self, path: &std::path::Path) -> Result<(), StartError> {
        let reloaded = load_config(path)
            .inspect_err(|_| metrics::global().config_reload(false))
            .map_err(StartError::from)
            .and_then(|config| self.reload(config));
        if reloaded.is_err() {
            if let Err(error) = open_audit_file(&self.shared.load().config) {
                error!(%error, "reopening the audit file failed");
            }
        }
        reloaded
    }

    /// Validates `config` whole and puts it in force for new requests and
    /// connections; on any error the old state stays. Listener addresses,
    /// `worker_threads`, `max_connections` and `[demo]` need a restart.
    pub fn reload(&self, config: Config) -> Result<(), StartError> {
        let old = self.shared.load();
        let state = State::build(config, Some(&old)).inspect_err(|_| metrics::global().config_reload(false))?;
        open_audit_file(&state.config).inspect_err(|_| metrics::global().config_reload(false))?;
        metrics::global().config_reload(true);
        let (new_server, old_server) = (&state.config.server, &old.config.server);
        if new_server.listen != old_server.listen
            || new_server.admin_listen != old_server.admin_listen
            || new_server.worker_threads != old_server.worker_threads
            || new_server.max_connections != old_server.max_connections
            || state.config.demo.enabled != old.config.demo.enabled
            || state.config.store != old.config.store
        {
            warn!("listen, admin_listen, worker_threads, max_connections, [store] and [demo] changes take effect at restart");
        }
        self.shared.store(state);
        info!("configuration reloaded");
        Ok(())
    }

    /// Stops accepting and waits until every in-flight request and open
    /// tunnel has finished. Bound it with the grace period.
    pub async fn shutdown(self) {
        self.drain.drain().await;
    }
}

/// Puts `[log] audit_file` in force (opening or reopening it).
fn open_audit_file(config: &Config) -> Result<(), StartError> {
    let path = config.log.audit_file.as_deref();
    telemetry::audit::open(path).map_err(|source| StartError::AuditFile {
        path: path.map(PathBuf::from).unwrap_or_default(),
        source,
    })
}

/// `embedgate check`: everything [`Gateway::start`] would refuse, short of
/// binding, and on success what deserves a second look (warnings, never
/// fatal). Certificate files the demo would create are not required.
pub fn check(config: Config) -> Result<Vec<ConfigError>, ConfigErrors> {
    let mut config = config;
    if config.demo.enabled {
        if let Some(tls) = &config.tls {
            if !tls.main.cert.exists() && !tls.main.key.exists() {
                config.tls = None;
            }
        }
        // The demo makes its signing key at first start, too.
        if config.assertion.as_ref().is_some_and(|a| !a.key.exists()) {
            config.assertion = None;
        }
    }
    let warnings = warnings(&config);
    State::build(config, None).map(|_| warnings)
}

/// What is allowed but probably a mistake: no API token (the PAT API
/// refuses every call), and an app host that no `[tls]` certificate covers
/// (clients would refuse the handshake, unless TLS ends in front of the
/// gateway).
fn warnings(config: &Config) -> Vec<ConfigError> {
    let mut warnings = Vec::new();
    let api = &config.api;
    // The demo makes a token of its own at start.
    if api.token_hashes.is_empty() && api.tokens.is_empty() && api.token_env.is_none() && !config.demo.enabled {
        warnings.push(config.error_at(
            "api",
            None,
            "no API token (token_sha256, [[api.tokens]] or token_env): every call to the PAT API will get 401",
        ));
    }
    let Some(tls) = &config.tls else {
        return warnings;
    };
    let uncovered = config.apps.iter().enumerate().filter_map(|(i, app)| {
        let host = app.host.as_ref()?;
        (!tls::covers(tls, &host.name)).then(|| {
            config.error_at(
                &format!("apps[{i}].public_url"),
                host.line,
                format!(
                    "no [tls] certificate covers {} (fine if TLS ends in front of the gateway)",
                    host.name
                ),
            )
        })
    });
    warnings.extend(uncovered);
    warnings
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

/// Makes the dev certificate and assertion key when missing.
#[cfg(feature = "demo")]
fn make_demo_files(config: &Config) -> Result<(), StartError> {
    if let Some(tls) = &config.tls {
        if certs::ensure_dev_cert(&tls.main.cert, &tls.main.key).map_err(|e| StartError::Certs(Box::new(e)))? {
            info!(cert = %tls.main.cert.display(), "created a development certificate");
        }
    }
    if let Some(assertion) = &config.assertion {
        if certs::ensure_signing_key(&assertion.key).map_err(|e| StartError::Certs(Box::new(e)))? {
            info!(key = %assertion.key.display(), "created a development assertion signing key");
        }
    }
    Ok(())
}

/// Starts the demo app and the demo portal. The portal gets an API token of
/// its own, accepted from now on; it mints for the first configured user,
/// one PAT for each configured app, in config order.
#[cfg(feature = "demo")]
async fn start_demo(state: &mut State, public_addr: SocketAddr) -> Result<DemoServers, StartError> {
    let api_token = token::new_session_token().map_err(|e| StartError::Demo {
        addr: public_addr,
        source: std::io::Error::other(e),
    })?;
    state.add_demo_token(token::hash(&api_token));
    // The demo servers call the gateway on loopback in plain HTTP (the demo
    // listener takes both, see `server::starts_tls`).
    let local = if public_addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], public_addr.port()))
    } else {
        public_addr
    };
    let base = format!("http://{local}");
    let demo = &state.config.demo;
    let app = demo::spawn_app(demo.app_listen, demo::GatewayLink { base: base.clone() })
        .await
        .map_err(|source| StartError::Demo {
            addr: demo.app_listen,
            source,
        })?;
    let portal = demo::Portal {
        gateway_api: base,
        api_token: api_token.clone(),
        email: state.config.users.first().map(|u| u.email.clone()).unwrap_or_default(),
        app_ids: state.config.apps.iter().map(|a| a.id.to_string()).collect(),
    };
    let portal = demo::spawn_portal(demo.portal_listen, portal)
        .await
        .map_err(|source| StartError::Demo {
            addr: demo.portal_listen,
            source,
        })?;
    Ok(DemoServers { app, portal, api_token })
}

/// How often expired sessions and PATs, and quiet rate-limit keys, are
/// dropped.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Background sweep until draining begins.
async fn sweep(shared: Arc<Shared>, mut watch: Watch) {
    let mut interval = tokio::time::interval(SWEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = watch.signaled() => return,
        }
        let state = shared.load();
        let now = session::now_ms();
        match state.store.sweep(now).await {
            Ok(0) => {}
            Ok(dropped) => tracing::debug!(dropped, "swept expired sessions and PATs"),
            Err(error) => warn!(%error, "sweeping the session store failed"),
        }
        // A shared store is counted here, once a sweep, for the gauges (the
        // in-process one at each scrape too: see the admin's /metrics).
        if let Ok(live) = state.store.count(now).await {
            metrics::global().set_live(live.sessions, live.pats);
            tracing::debug!(sessions = live.sessions, pats = live.pats, "live in the session store");
        }
        state.limits.retain_recent();
        shared.embed.sweep();
    }
}
