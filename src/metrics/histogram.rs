//! Latency histograms made of atomics, encoded as `prometheus-client`'s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the latency histograms, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A histogram of latencies made of atomics: observing takes no lock.
/// Clones share it, as `prometheus-client`'s own metrics do.
#[derive(Debug, Default, Clone)]
pub(crate) struct AtomicHistogram(Arc<Buckets>);

/// The counts of an [`AtomicHistogram`].
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    /// Per bucket of [`LATENCY_BUCKETS`], then one for +Inf; not
    /// cumulative (the encoder sums them).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    /// The sum of observations in nanoseconds.
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// Records one duration.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let h = &self.0;
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        h.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        h.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&h.buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let count = h.count.load(Ordering::Relaxed);
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_by_upper_bound() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(400));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_secs(10));
        let counts: Vec<u64> = h.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        assert_eq!(counts[0], 1, "0.4 ms ≤ 0.5 ms");
        assert_eq!(counts[1], 1, "1 ms ≤ 1 ms");
        assert_eq!(counts[LATENCY_BUCKETS.len()], 1, "10 s: +Inf");
        assert_eq!(h.0.count.load(Ordering::Relaxed), 3);
    }
}
