//! The request metrics of one configuration: its counters and histograms
//! looked up once, so that recording a request costs an index and atomics.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::{global, one, AtomicHistogram, RouteKind, Tag};

/// The request counters and duration histograms of one configuration,
/// looked up once: recording a request is an index and two atomics.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    /// By route kind, then app slot (`apps.len()` for none), then status
    /// class (1xx to 5xx).
    counters: Vec<Counter>,
    slots: usize,
    durations: Vec<AtomicHistogram>,
}

impl RequestMetrics {
    /// The handles for these app ids, in config order.
    pub(crate) fn new<'a>(app_ids: impl ExactSizeIterator<Item = &'a str> + Clone) -> RequestMetrics {
        let metrics = global();
        let slots = app_ids.len() + 1;
        let mut counters = Vec::with_capacity(RouteKind::ALL.len() * slots * 5);
        for route in RouteKind::ALL {
            for app in app_ids.clone().map(Some).chain([None]) {
                for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
                    let labels = vec![
                        ("route", route.name().to_owned()),
                        ("app", app.unwrap_or("").to_owned()),
                        ("status_class", class.to_owned()),
                    ];
                    counters.push(metrics.requests.get_or_create(&labels).clone());
                }
            }
        }
        let durations = RouteKind::ALL
            .iter()
            .map(|route| metrics.durations.get_or_create(&one("route", route.name())).clone())
            .collect();
        RequestMetrics {
            counters,
            slots,
            durations,
        }
    }

    /// Records one answered request.
    pub(crate) fn record(&self, tag: Tag, status: u16, elapsed: Duration) {
        let class = usize::from(status.clamp(100, 599) / 100 - 1);
        let app = tag.app.filter(|&a| a < self.slots - 1).unwrap_or(self.slots - 1);
        let index = (tag.route.index() * self.slots + app) * 5 + class;
        if let Some(counter) = self.counters.get(index) {
            counter.inc();
        }
        if let Some(histogram) = self.durations.get(tag.route.index()) {
            histogram.observe(elapsed);
        }
    }
}
