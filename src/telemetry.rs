//! Logging setup and redaction (SPEC §8): secrets never reach a log line.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use http::Uri;

use crate::query;
use tracing_subscriber::EnvFilter;

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
pub struct LogGuard(#[allow(dead_code, reason = "held for its Drop")] WorkerGuard);

/// Lines queued for stderr before new ones are dropped (and counted).
const LOG_QUEUE_LINES: usize = 128 * 1024;

/// The background writer's count of dropped lines, once logging is set up.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber: stderr through a background writer (a
/// request never waits on stderr; past a queue of lines, new lines are
/// dropped and counted), filtered by `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("embedgate-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests running `run` twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    LogGuard(guard)
}

/// Log lines dropped so far because stderr did not keep up.
pub(crate) fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
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
