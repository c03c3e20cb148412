//! Shared helpers for the cnikit benchmarks.
//!
//! Every comparison prints one machine-readable line per result,
//! `BENCH <name> key=value ...`, which `docs/benchmarks.md` records together with the command
//! that produced it. Latency summaries use [`Summary`] (median and tail percentiles), because the
//! machines these run on are shared and noisy.
#![deny(missing_docs)]

use std::{fmt::Display, time::Duration};

pub use cnikit_test_support::privilege;

/// Formats one `BENCH` line.
#[must_use]
pub fn bench_line(name: &str, fields: &[(&str, &dyn Display)]) -> String {
    let mut line = format!("BENCH {name}");
    for (key, value) in fields {
        line.push_str(&format!(" {key}={value}"));
    }
    line
}

/// Prints one `BENCH` line to stdout.
pub fn report(name: &str, fields: &[(&str, &dyn Display)]) {
    println!("{}", bench_line(name, fields));
}

/// True when criterion runs in `--test` mode (or under `cargo test --benches`): benches then do
/// one quick iteration instead of measuring.
#[must_use]
pub fn smoke_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench")
}

/// Median and tail percentiles of a set of latency samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// 50th percentile.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples` (nearest-rank percentiles); `None` when empty.
    #[must_use]
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "ranks are small positive integers"
            )]
            let r = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[r.clamp(1, sorted.len()) - 1]
        };
        Some(Self {
            count: sorted.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Milliseconds with three decimals, for `BENCH` fields.
#[must_use]
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Microseconds with one decimal, for `BENCH` fields.
#[must_use]
pub fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_line_format() {
        assert_eq!(
            bench_line("svc_program", &[("services", &10_000), ("ratio", &"790")]),
            "BENCH svc_program services=10000 ratio=790"
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(Summary::of(&[]), None);
        let one = Summary::of(&[Duration::from_millis(7)]).unwrap();
        assert_eq!(one.p50, one.p99);
    }
}
