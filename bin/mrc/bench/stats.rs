//! Latency histograms (HdrHistogram, microseconds) and how they are reported.
//!
//! Readers record into one of a few mutex-guarded shards (one lock per receipt, rarely
//! contended); a step's figures are the merge of every shard's histogram for that step.

use std::fmt;
use std::sync::Mutex;

use hdrhistogram::Histogram;

use mrc::sync;

/// Largest latency recorded exactly (60 s, in microseconds); larger values are clamped.
const MAX_US: u64 = 60_000_000;

/// A new latency histogram: 1 µs .. 60 s, 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant bounds are valid")
}

/// Latency summary of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "p50_us": self.p50,
            "p99_us": self.p99,
            "p999_us": self.p999,
            "max_us": self.max,
            "mean_us": (self.mean * 10.0).round() / 10.0,
        })
    }
}

/// A duration in microseconds, shown with a unit a person reads at a glance.
pub struct Micros(pub u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us < 1_000 {
            write!(f, "{us}µs")
        } else if us < 10_000 {
            write!(f, "{:.2}ms", us as f64 / 1e3)
        } else if us < 1_000_000 {
            write!(f, "{:.0}ms", us as f64 / 1e3)
        } else {
            write!(f, "{:.2}s", us as f64 / 1e6)
        }
    }
}

/// A count per second, shown as `12.3k/s`.
pub struct Rate(pub f64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        if r >= 1e6 {
            write!(f, "{:.2}M/s", r / 1e6)
        } else if r >= 1e3 {
            write!(f, "{:.1}k/s", r / 1e3)
        } else {
            write!(f, "{r:.0}/s")
        }
    }
}

/// Per-step latency histograms, split in shards so that readers rarely share a lock.
pub struct Sharded {
    shards: Vec<Mutex<Vec<Histogram<u64>>>>,
}

impl Sharded {
    pub fn new(shards: usize, steps: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Mutex::new((0..steps).map(|_| histogram()).collect()))
            .collect();
        Sharded { shards }
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Records one latency; values outside the histogram's range are clamped, unknown
    /// steps ignored.
    pub fn record(&self, shard: usize, step: usize, micros: u64) {
        let mut steps = sync::lock(&self.shards[shard % self.shards.len()]);
        if let Some(h) = steps.get_mut(step) {
            h.saturating_record(micros.clamp(1, MAX_US));
        }
    }

    /// Every shard's histogram of `step`, merged.
    pub fn merged(&self, step: usize) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            let steps = sync::lock(shard);
            if let Some(h) = steps.get(step) {
                all.add(h).expect("histograms share bounds");
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, 500);
        assert_eq!(p.p99, 990);
        assert_eq!(p.p999, 999);
        assert_eq!(p.max, 1000);
        assert!((p.mean - 500.5).abs() < 1.0);
        assert_eq!(Percentiles::of(&histogram()), Percentiles::default());
    }

    #[test]
    fn shards_merge_per_step_and_clamp() {
        let s = Sharded::new(4, 2);
        s.record(0, 0, 100);
        s.record(5, 0, 300);
        s.record(2, 1, 0);
        s.record(3, 1, u64::MAX);
        s.record(1, 9, 5);
        let step0 = Percentiles::of(&s.merged(0));
        assert_eq!((step0.count, step0.max), (2, 300));
        let step1 = s.merged(1);
        assert_eq!(step1.len(), 2);
        assert_eq!(step1.min(), 1);
        assert!(step1.max() >= MAX_US);
    }

    #[test]
    fn units_read_well() {
        assert_eq!(Micros(850).to_string(), "850µs");
        assert_eq!(Micros(1_234).to_string(), "1.23ms");
        assert_eq!(Micros(45_600).to_string(), "46ms");
        assert_eq!(Micros(2_500_000).to_string(), "2.50s");
        assert_eq!(Rate(950.0).to_string(), "950/s");
        assert_eq!(Rate(12_345.0).to_string(), "12.3k/s");
        assert_eq!(Rate(1_500_000.0).to_string(), "1.50M/s");
    }
}
