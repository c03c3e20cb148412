//! A metrics snapshot: pool gauges, cloud calls by action and outcome, allocation latency.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use cnikit_cloud_api::ErrorKind;

use crate::error::Blocker;

/// Upper bounds of the latency histogram's buckets, in microseconds (the last bucket is
/// unbounded).
pub const LATENCY_BUCKETS_US: [u64; 24] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS_US`] plus one unbounded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencyHistogram {
    /// Samples per bucket; `counts[i]` counts samples at most `LATENCY_BUCKETS_US[i]` µs (and
    /// above the previous bound); the last entry counts the rest.
    pub counts: Vec<u64>,
}

impl LatencyHistogram {
    /// Samples in total.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (in `[0, 1]`); `None` when empty or
    /// when it falls in the unbounded bucket.
    #[must_use]
    pub fn quantile_upper_bound(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within the sample count"
        )]
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return LATENCY_BUCKETS_US
                    .get(i)
                    .map(|us| Duration::from_micros(*us));
            }
        }
        None
    }

    /// The samples recorded after `earlier` (a snapshot of the same histogram taken before).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// Samples above `bound`, counting whole buckets: a bucket counts when its lower bound
    /// is at least `bound` (so pass one of [`LATENCY_BUCKETS_US`]).
    #[must_use]
    pub fn count_above(&self, bound: Duration) -> u64 {
        let us = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
        let first = LATENCY_BUCKETS_US.partition_point(|b| *b <= us);
        self.counts.iter().skip(first).sum()
    }
}

/// The live counters behind a [`LatencyHistogram`].
#[derive(Debug)]
pub(crate) struct LatencyCounters([AtomicU64; LATENCY_BUCKETS_US.len() + 1]);

impl Default for LatencyCounters {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl LatencyCounters {
    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|b| *b < us);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            counts: self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
        }
    }
}

/// How a cloud call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallOutcome {
    /// It succeeded.
    Ok,
    /// It failed with an error of this kind.
    Error(ErrorKind),
}

impl std::fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Error(k) => write!(f, "{k}"),
        }
    }
}

impl PartialOrd for ErrorKindOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// `ErrorKind` has no order; the metrics map needs one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ErrorKindOrd(CallOutcome);

impl Ord for ErrorKindOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.to_string().cmp(&other.0.to_string())
    }
}

/// Gauges of one kind of resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KindGauges {
    /// Ready to hand out.
    pub idle: u32,
    /// Bound to pods (or being bound).
    pub in_use: u32,
    /// Released, resting before reuse.
    pub cooling: u32,
    /// Requested from the cloud, not yet usable (being assigned or attached).
    pub being_added: u32,
    /// Being given back to the cloud.
    pub being_released: u32,
    /// Allocations waiting for the cloud.
    pub waiting: u32,
    /// The most the pool may hold.
    pub capacity: u32,
}

/// ENIs the pool manages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EniGauges {
    /// Attached and usable.
    pub ready: u32,
    /// Being created or attached.
    pub attaching: u32,
    /// Being detached or deleted.
    pub releasing: u32,
    /// Detached ENIs of this pool that no slot accounts for (left by a crash), to be deleted
    /// after the leak grace period.
    pub orphans: u32,
}

/// A point-in-time view of the pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Shared IPs.
    pub shared: KindGauges,
    /// Exclusive ENIs.
    pub exclusive: KindGauges,
    /// ENIs.
    pub enis: EniGauges,
    /// Cloud calls by action (the provider method, e.g. `create_eni`) and outcome.
    pub cloud_calls: BTreeMap<(String, String), u64>,
    /// Allocations acknowledged.
    pub allocations: u64,
    /// Of those, served from idle without waiting for the cloud.
    pub allocations_from_idle: u64,
    /// Of those, answered for a retried ADD (the same key again).
    pub allocations_repeated: u64,
    /// Allocations that failed.
    pub allocation_failures: u64,
    /// Releases acknowledged (repeats included).
    pub releases: u64,
    /// Allocation latency (acknowledged allocations).
    pub allocation_latency: LatencyHistogram,
    /// Why allocations could not be served lately, if anything blocks them.
    pub blocker: Option<Blocker>,
}

impl MetricsSnapshot {
    /// Cloud calls of every action and outcome.
    #[must_use]
    pub fn total_cloud_calls(&self) -> u64 {
        self.cloud_calls.values().sum()
    }

    /// Calls of one action (every outcome).
    #[must_use]
    pub fn cloud_calls_of(&self, action: &str) -> u64 {
        self.cloud_calls
            .iter()
            .filter(|((a, _), _)| a == action)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The counters behind [`MetricsSnapshot`].
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) allocations: AtomicU64,
    pub(crate) from_idle: AtomicU64,
    pub(crate) repeated: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) releases: AtomicU64,
    latency: LatencyCounters,
    calls: Mutex<BTreeMap<(&'static str, ErrorKindOrd), u64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            allocations: AtomicU64::new(0),
            from_idle: AtomicU64::new(0),
            repeated: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            latency: LatencyCounters::default(),
            calls: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_latency(&self, d: Duration) {
        self.latency.record(d);
    }

    pub(crate) fn record_call(&self, action: &'static str, outcome: CallOutcome) {
        *self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((action, ErrorKindOrd(outcome)))
            .or_default() += 1;
    }

    /// Fills the counter fields of `snap`.
    pub(crate) fn fill(&self, snap: &mut MetricsSnapshot) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        snap.allocations = load(&self.allocations);
        snap.allocations_from_idle = load(&self.from_idle);
        snap.allocations_repeated = load(&self.repeated);
        snap.allocation_failures = load(&self.failures);
        snap.releases = load(&self.releases);
        snap.allocation_latency = self.latency.snapshot();
        snap.cloud_calls = self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((a, o), n)| (((*a).to_owned(), o.0.to_string()), *n))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_and_call_counts() {
        let c = Counters::default();
        for us in [3u64, 40, 40, 40, 900, 1_500_000] {
            c.record_latency(Duration::from_micros(us));
        }
        c.record_call("create_eni", CallOutcome::Ok);
        c.record_call("create_eni", CallOutcome::Error(ErrorKind::Throttled));
        c.record_call("create_eni", CallOutcome::Ok);
        let mut s = MetricsSnapshot::default();
        c.fill(&mut s);
        let h = &s.allocation_latency;
        assert_eq!(h.total(), 6);
        assert_eq!(h.quantile_upper_bound(0.5), Some(Duration::from_micros(50)));
        assert_eq!(h.quantile_upper_bound(1.0), Some(Duration::from_secs(2)));
        assert_eq!(s.cloud_calls_of("create_eni"), 3);
        assert_eq!(
            s.cloud_calls
                .get(&("create_eni".to_owned(), "throttled".to_owned())),
            Some(&1)
        );
        assert_eq!(LatencyHistogram::default().quantile_upper_bound(0.5), None);
        // Buckets from 500 µs up hold 900 µs and 1.5 s; from 1 ms up, only 1.5 s.
        assert_eq!(h.count_above(Duration::from_micros(500)), 2);
        assert_eq!(h.count_above(Duration::from_millis(1)), 1);
        c.record_latency(Duration::from_micros(700));
        let mut later = MetricsSnapshot::default();
        c.fill(&mut later);
        let new = later.allocation_latency.since(h);
        assert_eq!(new.total(), 1);
        assert_eq!(
            new.quantile_upper_bound(0.5),
            Some(Duration::from_millis(1))
        );
    }
}
