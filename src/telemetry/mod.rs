//! Logging setup and redaction (SPEC §8): secrets never reach a log line.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::OnceLock;

use http::Uri;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::query;

pub(crate) mod access;
pub(crate) mod audit;
mod sink;

use sink::{Sink, SinkGuard};

const REDACTED: &str = "REDACTED";

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps the background log writer running; dropping it writes what is
/// still queued. Hold it until the process ends.
#[must_use = "dropping it stops the log writer"]
pub struct LogGuard(#[allow(dead_code, reason = "held for its Drop")] Option<SinkGuard>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        // The audit file's last lines first; then the field's own drop
        // writes what is left for stderr.
        let _ = audit::open(None);
    }
}

/// Where log lines go, and in which format, once logging is set up.
static OUTPUT: OnceLock<(Sink, LogFormat)> = OnceLock::new();

/// The stderr sink and the line format, once [`init`] ran.
fn output() -> Option<(&'static Sink, LogFormat)> {
    OUTPUT.get().map(|(sink, format)| (sink, *format))
}

/// Installs the global subscriber: stderr through a background writer (a
/// request never waits on stderr; past a queue of lines, new lines are
/// dropped and counted), filtered by `RUST_LOG` (default `info`); audit
/// events also go to `[log] audit_file` once [`audit::open`] named one.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = filter();
    let Ok((sink, guard)) = Sink::start(Box::new(std::io::stderr()), "embedgate-log") else {
        eprintln!("cannot start the log writer thread; logging to stderr directly");
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer())
            .try_init();
        return LogGuard(None);
    };
    if OUTPUT.set((sink.clone(), format)).is_err() {
        // A second init (tests running `run` twice) keeps the first.
        return LogGuard(Some(guard));
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(sink)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter).with(audit::FileLayer);
    let _ = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
    LogGuard(Some(guard))
}

/// `RUST_LOG` (default `info`) as per-target levels: `info`,
/// `warn,embedgate::access=info`, `embedgate=debug,info`. A value that does
/// not parse is reported and the default used.
///
/// `Targets` rather than `EnvFilter`: it decides from a line's target and
/// level alone, once per call site, so entering and leaving a request's
/// span costs no lock — `EnvFilter` takes one at each, for the span-field
/// directives that `Targets` does not have.
fn filter() -> Targets {
    const DEFAULT: &str = "info";
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let spec = if spec.trim().is_empty() { DEFAULT } else { spec.as_str() };
    spec.parse().unwrap_or_else(|error| {
        eprintln!("RUST_LOG={spec:?} is not a log filter ({error}); logging at {DEFAULT}");
        DEFAULT.parse().unwrap_or_default()
    })
}

/// Log lines dropped so far because stderr did not keep up.
pub(crate) fn dropped_lines() -> u64 {
    output().map_or(0, |(sink, _)| sink.dropped()) + audit::dropped_lines()
}

/// The request target for logs: path and query with the value of every
/// PAT parameter replaced (recognised after percent-decoding, exactly as the
/// exchange reads it).
pub(crate) fn redacted_target(uri: &Uri) -> Cow<'_, str> {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return Cow::Borrowed(path);
    };
    if !query::pairs(query).any(|p| p.is_pat()) {
        return Cow::Owned(format!("{path}?{query}"));
    }
    let redacted: Vec<Cow<'_, str>> = query::pairs(query)
        .map(|pair| {
            if pair.is_pat() {
                Cow::Owned(format!("{}={REDACTED}", query::PAT_PARAM))
            } else {
                Cow::Borrowed(pair.raw)
            }
        })
        .collect();
    Cow::Owned(format!("{path}?{}", redacted.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> String {
        let uri: Uri = s.parse().unwrap_or_default();
        redacted_target(&uri).into_owned()
    }

    #[test]
    fn pat_query_values_are_redacted() {
        assert_eq!(
            target("/embed-apps/x?a=1&personal-access-token=pat_abc&b=2"),
            "/embed-apps/x?a=1&personal-access-token=REDACTED&b=2"
        );
        assert_eq!(
            target("/e?Personal-Access-Token=pat_x"),
            "/e?personal-access-token=REDACTED"
        );
        assert_eq!(
            target("/e?personal%2Daccess-token=pat_x"),
            "/e?personal-access-token=REDACTED"
        );
        assert!(!target("/e?personal-access-token=pat_secret&personal-access-token=pat_two").contains("pat_"));
    }

    #[test]
    fn other_targets_are_unchanged() {
        assert_eq!(target("/a/b?c=d"), "/a/b?c=d");
        assert_eq!(target("/a"), "/a");
    }
}
