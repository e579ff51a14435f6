//! Logging setup and redaction (SPEC §8): secrets never reach a log line.

use std::borrow::Cow;
use std::io::IsTerminal;

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

/// Installs the global subscriber: stderr, filtered by `RUST_LOG`
/// (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests running `run` twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
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
