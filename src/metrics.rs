//! Prometheus metrics, served at the admin listener's `/metrics` in the
//! text format through `prometheus-client`.
//!
//! Metrics are per process, so there is one registry for the process
//! ([`global`]). Label values come only from the config (app ids, API
//! token names) or from fixed sets (route kinds, status classes, outcome
//! and error categories): never from request data, never a secret or an
//! email.
//!
//! The request path pays atomics only: the counters of every (route, app,
//! status class) and the duration histogram of every route are looked up
//! once per configuration ([`RequestMetrics::new`]), and the histograms
//! here are lock-free ([`AtomicHistogram`]).

mod histogram;
mod requests;

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub(crate) use histogram::AtomicHistogram;
pub(crate) use requests::RequestMetrics;

/// Label pairs, as the families take them.
type Labels = Vec<(&'static str, String)>;

/// What kind of request, for `route` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// `/api/ext/*`.
    Api,
    /// A PAT exchange.
    Exchange,
    /// An embedded app's request through a session (or refused for want
    /// of one).
    Embed,
    /// `[passthrough]`.
    Passthrough,
    /// `/.well-known/embedgate/jwks.json`.
    Jwks,
    /// `/embedgate.js` and `/embedgate.mjs`: the host-page helper.
    Helper,
    /// Anything else (not found).
    Other,
}

impl RouteKind {
    pub(crate) const ALL: [RouteKind; 7] = [
        RouteKind::Api,
        RouteKind::Exchange,
        RouteKind::Embed,
        RouteKind::Passthrough,
        RouteKind::Jwks,
        RouteKind::Helper,
        RouteKind::Other,
    ];

    pub(crate) const fn name(self) -> &'static str {
        match self {
            RouteKind::Api => "api",
            RouteKind::Exchange => "exchange",
            RouteKind::Embed => "embed",
            RouteKind::Passthrough => "passthrough",
            RouteKind::Jwks => "jwks",
            RouteKind::Helper => "helper",
            RouteKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a request was, as the handlers learn it: its route kind and, for
/// an embedded app's, the app's place in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) route: RouteKind,
    pub(crate) app: Option<usize>,
}

impl Tag {
    /// A request of this kind, for no app (yet).
    pub(crate) fn new(route: RouteKind) -> Tag {
        Tag { route, app: None }
    }
}

/// Every metric of the process.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    durations: Family<Labels, AtomicHistogram>,
    /// Time to an upstream's response head.
    pub(crate) upstream_head: AtomicHistogram,
    /// The counters of fixed label sets, looked up once.
    upstream_errors: [Counter; UpstreamFailure::ALL.len()],
    pats_minted: Family<Labels, Counter>,
    exchanges: [Counter; Exchange::ALL.len()],
    rate_limited: [Counter; Limiter::ALL.len()],
    /// `ok`, then `refused`.
    config_reloads: [Counter; 2],
    /// Sessions live in the store: counted at each scrape with the
    /// in-process store, at each sweep with a shared one.
    sessions_live: Gauge,
    /// PATs live in the store, counted as sessions are.
    pats_live: Gauge,
    /// Client connections open now.
    pub(crate) connections_open: Gauge,
    /// Of those, HTTP/1.1 connections parked between requests, holding
    /// only their socket.
    pub(crate) connections_idle: Gauge,
    /// WebSocket (and other upgraded) tunnels open now.
    pub(crate) tunnels_open: Gauge,
    /// TLS handshakes that failed or timed out.
    pub(crate) tls_handshake_failures: Counter,
    /// Calls to the session store that failed (a shared store down or
    /// slow).
    pub(crate) store_errors: Counter,
    /// Log lines the background writer dropped because stderr did not keep
    /// up (brought up to date at each scrape).
    pub(crate) log_lines_dropped: Counter,
}

/// The process's metrics.
pub(crate) fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

fn one(name: &'static str, value: &str) -> Labels {
    vec![(name, value.to_owned())]
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("embedgate");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route kind, app id and status class",
            requests.clone(),
        );
        let durations = Family::<Labels, AtomicHistogram>::default();
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to its response head, by route kind",
            durations.clone(),
        );
        let upstream_head = AtomicHistogram::default();
        registry.register(
            "upstream_response_head_seconds",
            "Time from sending a request upstream to its response head",
            upstream_head.clone(),
        );
        let upstream_errors = Family::<Labels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream requests that failed, by kind (refused, timeout, reset, tls, other)",
            upstream_errors.clone(),
        );
        let pats_minted = Family::<Labels, Counter>::default();
        registry.register("pats_minted", "PATs minted, by API token name", pats_minted.clone());
        let exchanges = Family::<Labels, Counter>::default();
        registry.register(
            "exchanges",
            "PAT exchanges, by outcome (ok, invalid, user_gone, access_gone, rate_limited, store_error)",
            exchanges.clone(),
        );
        let rate_limited = Family::<Labels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by limiter",
            rate_limited.clone(),
        );
        let config_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by outcome (ok, refused)",
            config_reloads.clone(),
        );
        let sessions_live = Gauge::default();
        registry.register(
            "sessions_live",
            "Embed sessions live in the store (as of the last sweep)",
            sessions_live.clone(),
        );
        let pats_live = Gauge::default();
        registry.register(
            "pats_live",
            "PATs live in the store (as of the last sweep)",
            pats_live.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open on the public listener",
            connections_open.clone(),
        );
        let connections_idle = Gauge::default();
        registry.register(
            "connections_idle",
            "Client connections parked between requests, holding no HTTP buffers",
            connections_idle.clone(),
        );
        let tunnels_open = Gauge::default();
        registry.register(
            "tunnels_open",
            "WebSocket (upgraded) tunnels open",
            tunnels_open.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Calls to the session store that failed or timed out",
            store_errors.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr did not keep up",
            log_lines_dropped.clone(),
        );
        // Fixed label sets are there from the start, at zero, so that a
        // dashboard or an alert sees them before the first event; their
        // counters are looked up once.
        let handle = |family: &Family<Labels, Counter>, name: &'static str, value: &str| {
            family.get_or_create(&one(name, value)).clone()
        };
        Metrics {
            registry,
            requests,
            durations,
            upstream_head,
            upstream_errors: UpstreamFailure::ALL.map(|kind| handle(&upstream_errors, "kind", kind.name())),
            pats_minted,
            exchanges: Exchange::ALL.map(|outcome| handle(&exchanges, "outcome", outcome.name())),
            rate_limited: Limiter::ALL.map(|limiter| handle(&rate_limited, "limiter", limiter.name())),
            config_reloads: ["ok", "refused"].map(|outcome| handle(&config_reloads, "outcome", outcome)),
            sessions_live,
            pats_live,
            connections_open,
            connections_idle,
            tunnels_open,
            tls_handshake_failures,
            store_errors,
            log_lines_dropped,
        }
    }

    /// Sets the live sessions and PATs of the store.
    pub(crate) fn set_live(&self, sessions: usize, pats: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.sessions_live.set(gauge(sessions));
        self.pats_live.set(gauge(pats));
    }

    /// Brings `log_lines_dropped` up to `dropped`, the writer's own count.
    pub(crate) fn log_lines_dropped_total(&self, dropped: u64) {
        let seen = self.log_lines_dropped.get();
        if dropped > seen {
            self.log_lines_dropped.inc_by(dropped - seen);
        }
    }

    /// The text exposition of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts one upstream failure.
    pub(crate) fn upstream_error(&self, kind: UpstreamFailure) {
        self.upstream_errors[kind as usize].inc();
    }

    /// Counts one PAT minted by the API token named `token`.
    pub(crate) fn pat_minted(&self, token: &str) {
        self.pats_minted.get_or_create(&one("token", token)).inc();
    }

    /// Counts one exchange.
    pub(crate) fn exchange(&self, outcome: Exchange) {
        self.exchanges[outcome as usize].inc();
    }

    /// Counts one refusal by a rate limit.
    pub(crate) fn rate_limited(&self, limiter: Limiter) {
        self.rate_limited[limiter as usize].inc();
    }

    /// Counts one configuration reload.
    pub(crate) fn config_reload(&self, ok: bool) {
        self.config_reloads[usize::from(!ok)].inc();
    }
}

/// Why an upstream request failed, as the `kind` label of
/// `embedgate_upstream_errors_total` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamFailure {
    Refused,
    Timeout,
    Reset,
    Tls,
    Other,
}

impl UpstreamFailure {
    const ALL: [UpstreamFailure; 5] = [
        UpstreamFailure::Refused,
        UpstreamFailure::Timeout,
        UpstreamFailure::Reset,
        UpstreamFailure::Tls,
        UpstreamFailure::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            UpstreamFailure::Refused => "refused",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Reset => "reset",
            UpstreamFailure::Tls => "tls",
            UpstreamFailure::Other => "other",
        }
    }
}

/// How a PAT exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exchange {
    Ok,
    /// Unknown, expired, used, or another app's: deliberately one category
    /// (SPEC §4).
    Invalid,
    UserGone,
    AccessGone,
    RateLimited,
    StoreError,
}

impl Exchange {
    const ALL: [Exchange; 6] = [
        Exchange::Ok,
        Exchange::Invalid,
        Exchange::UserGone,
        Exchange::AccessGone,
        Exchange::RateLimited,
        Exchange::StoreError,
    ];

    fn name(self) -> &'static str {
        match self {
            Exchange::Ok => "ok",
            Exchange::Invalid => "invalid",
            Exchange::UserGone => "user_gone",
            Exchange::AccessGone => "access_gone",
            Exchange::RateLimited => "rate_limited",
            Exchange::StoreError => "store_error",
        }
    }
}

/// A rate limiter (SPEC §2 `[rate_limit]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limiter {
    /// `pat_create_per_minute`, per API token.
    PatCreate,
    /// `pat_create_per_user_per_minute`, per email.
    PatCreatePerUser,
    /// `bad_pat_per_minute`, per client address.
    BadPat,
}

impl Limiter {
    const ALL: [Limiter; 3] = [Limiter::PatCreate, Limiter::PatCreatePerUser, Limiter::BadPat];

    fn name(self) -> &'static str {
        match self {
            Limiter::PatCreate => "pat_create",
            Limiter::PatCreatePerUser => "pat_create_per_user",
            Limiter::BadPat => "bad_pat",
        }
    }
}

#[cfg(test)]
mod tests;
