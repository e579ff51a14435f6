//! The access log: one line per request on its own target
//! (`embedgate::access`), written when the request is over — the response's
//! last byte sent (or the client gone) and the request body done — so it
//! can say how many bytes went each way and how long it all took.
//!
//! A request's [`Access`] record is shared by its two bodies (each counts
//! its bytes into it) and written when the last holder drops it. The line
//! is formatted here rather than by `tracing_subscriber::fmt` — the same
//! shape, a fraction of the cost — into the log [`Sink`](super::sink::Sink)
//! as a line that may wait for its batch. `RUST_LOG` still decides whether
//! it is written (`embedgate::access=off` silences it), as does
//! `[log] access`. The line's bytes are written by [`line`].

mod line;

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Uri, Version};

pub(crate) use self::line::timestamp_string;
use self::line::{key, version_name, Line, LINE_BYTES, ROUTE_NAMES};
use super::{output, LogFormat};
use crate::body::{Direction, Tally};
use crate::metrics::RouteKind;

/// One request, as its access line will tell it.
pub(crate) struct Access {
    started: Instant,
    request_id: HeaderValue,
    client: IpAddr,
    method: Method,
    /// Logged with PATs redacted.
    uri: Uri,
    version: Version,
    received: AtomicU64,
    sent: AtomicU64,
    answer: OnceLock<Answered>,
}

/// What the gateway answered, known once the response head is ready.
#[derive(Debug)]
pub(crate) struct Answered {
    pub(crate) route: RouteKind,
    /// The embedded app's id (shared with the config, not copied).
    pub(crate) app: Option<Arc<str>>,
    pub(crate) status: u16,
    pub(crate) upstream: Option<UpstreamSeen>,
}

/// The upstream's side of a proxied request, kept by its response body.
pub(crate) use crate::body::UpstreamSeen;

/// The status logged for a request whose client left before the answer
/// (nginx's 499).
const CLIENT_CLOSED: u16 = 499;

impl Access {
    /// The record of a request that started at `started`, or `None` when no access line
    /// is to be written (`[log] access = false`, or `RUST_LOG` filters the
    /// target out).
    pub(crate) fn begin(
        enabled: bool,
        started: Instant,
        request_id: &HeaderValue,
        client: impl FnOnce() -> IpAddr,
        method: &Method,
        uri: &Uri,
        version: Version,
    ) -> Option<Arc<Access>> {
        if !enabled || !tracing::enabled!(target: "embedgate::access", tracing::Level::INFO) {
            return None;
        }
        Some(Arc::new(Access {
            started,
            request_id: request_id.clone(),
            client: client(),
            method: method.clone(),
            uri: uri.clone(),
            version,
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            answer: OnceLock::new(),
        }))
    }

    /// Records the answer (the first one counts).
    pub(crate) fn answered(&self, answer: Answered) {
        let _ = self.answer.set(answer);
    }

    /// Writes the line, in `format` and ending in a newline, at the start
    /// of `buffer` (lengthened first if the line could be longer); returns
    /// its length.
    fn write_line(&self, format: LogFormat, now: SystemTime, buffer: &mut Vec<u8>) -> usize {
        let answer = self.answer.get();
        let elapsed_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let path = super::redacted_target(&self.uri);
        let app = answer.and_then(|a| a.app.as_deref());
        let method = self.method.as_str();
        // The longest the line can be: a byte escaped in JSON takes six.
        let variable = path.len() + self.request_id.len() + method.len() + app.map_or(0, str::len);
        let longest = LINE_BYTES + variable * if format == LogFormat::Json { 6 } else { 1 };
        if buffer.len() < longest {
            buffer.resize(longest, 0);
        }
        let mut line = Line {
            buf: buffer,
            len: 0,
            format,
        };
        line.open(now);
        line.str(key!("request_id"), self.request_id.as_bytes());
        line.ip(key!("client"), self.client);
        line.str(key!("method"), method.as_bytes());
        line.str(key!("path"), path.as_bytes());
        line.short(key!("version"), version_name(self.version));
        if let Some(answer) = answer {
            line.short(key!("route"), &ROUTE_NAMES[answer.route as usize]);
            if let Some(app) = app {
                line.str(key!("app"), app.as_bytes());
            }
        }
        line.number(key!("status"), u64::from(answer.map_or(CLIENT_CLOSED, |a| a.status)));
        line.number(key!("bytes_in"), self.received.load(Ordering::Relaxed));
        line.number(key!("bytes_out"), self.sent.load(Ordering::Relaxed));
        line.number(key!("elapsed_us"), elapsed_us);
        if let Some(upstream) = answer.and_then(|a| a.upstream) {
            if let Some(addr) = upstream.addr {
                line.addr(key!("upstream"), addr);
            }
            line.number(key!("upstream_status"), u64::from(upstream.status));
        }
        line.close();
        line.len
    }
}

impl Tally for Access {
    fn count(&self, direction: Direction, bytes: u64) {
        let counter = match direction {
            Direction::Received => &self.received,
            Direction::Sent => &self.sent,
        };
        counter.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        let Some((sink, format)) = output() else {
            return;
        };
        thread_local! {
            static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return;
            };
            let len = self.write_line(format, SystemTime::now(), &mut line);
            sink.append(&line[..len], false);
            // A line for a huge request head is not kept room for.
            if line.len() > KEPT_LINE_BYTES {
                *line = Vec::new();
            }
        });
    }
}

/// The most room a thread keeps for its lines between requests.
const KEPT_LINE_BYTES: usize = 16 * 1024;

#[cfg(test)]
mod tests;
