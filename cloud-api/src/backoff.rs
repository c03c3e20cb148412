//! Capped exponential backoff with jitter, and the options of waiting for an ENI status.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Capped exponential backoff with proportional jitter.
///
/// The n-th delay (n from 0) is `d = min(max, initial × factor^n)`, then jittered uniformly
/// into `[d × (1 − jitter), d]`. `jitter = 0.5` is the "equal jitter" of the official Python
/// SDK's throttling backoff; `jitter = 1.0` is "full jitter".
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// Growth per attempt (≥ 1).
    pub factor: f64,
    /// The largest delay.
    pub max: Duration,
    /// Fraction of each delay that is randomized, in `[0, 1]`.
    pub jitter: f64,
}

impl Backoff {
    /// A backoff from its four parameters (`factor` is raised to 1, `jitter` clamped to
    /// `[0, 1]`).
    #[must_use]
    pub fn new(initial: Duration, factor: f64, max: Duration, jitter: f64) -> Self {
        Self {
            initial,
            factor: if factor.is_finite() {
                factor.max(1.0)
            } else {
                1.0
            },
            max,
            jitter: if jitter.is_finite() {
                jitter.clamp(0.0, 1.0)
            } else {
                0.0
            },
        }
    }

    /// A constant delay.
    #[must_use]
    pub fn constant(delay: Duration) -> Self {
        Self::new(delay, 1.0, delay, 0.0)
    }

    /// The capped delay before retry number `attempt` (0-based), before jitter.
    #[must_use]
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt.min(64)).unwrap_or(64);
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        let max = self.max.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            self.max
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// The jittered delay before retry number `attempt`, with `unit` uniform in `[0, 1)`.
    #[must_use]
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let d = self.base_delay(attempt).as_secs_f64();
        let unit = unit.clamp(0.0, 1.0);
        Duration::from_secs_f64((d * (1.0 - self.jitter) + d * self.jitter * unit).max(0.0))
    }
}

/// How to poll for an ENI status: first delay, backoff between polls, deadline, cancellation.
///
/// Defaults follow the clients Alibaba itself ships (ecs-api.md §4): first poll after 2 s, then
/// 1 s growing ×1.5 up to 10 s with 30 % jitter, 120 s overall. Dropping the wait future also
/// cancels it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WaitOptions {
    /// Delay before the first poll (attach and detach never finish faster).
    pub initial_delay: Duration,
    /// Backoff between polls.
    pub poll: Backoff,
    /// Overall deadline, measured from the call.
    pub timeout: Duration,
    /// Cancels the wait when triggered.
    pub cancel: Option<CancellationToken>,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(2),
            poll: Backoff::new(Duration::from_secs(1), 1.5, Duration::from_secs(10), 0.3),
            timeout: Duration::from_secs(120),
            cancel: None,
        }
    }
}

impl WaitOptions {
    /// Options polling every `interval` (no initial delay, no growth) until `timeout`.
    #[must_use]
    pub fn fixed(interval: Duration, timeout: Duration) -> Self {
        Self {
            initial_delay: Duration::ZERO,
            poll: Backoff::constant(interval),
            timeout,
            cancel: None,
        }
    }

    /// Sets the overall timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the cancellation token.
    #[must_use]
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = Some(cancel);
        self
    }
}

/// Sleeps `d`, or returns `false` early when `cancel` fires.
pub(crate) async fn sleep_cancellable(d: Duration, cancel: Option<&CancellationToken>) -> bool {
    if d.is_zero() {
        return !cancel.is_some_and(CancellationToken::is_cancelled);
    }
    match cancel {
        None => {
            tokio::time::sleep(d).await;
            true
        }
        Some(c) => tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = c.cancelled() => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_growth_is_capped() {
        let b = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(1), 0.0);
        assert_eq!(b.base_delay(0), Duration::from_millis(100));
        assert_eq!(b.base_delay(1), Duration::from_millis(200));
        assert_eq!(b.base_delay(3), Duration::from_millis(800));
        assert_eq!(b.base_delay(4), Duration::from_secs(1));
        assert_eq!(b.base_delay(1000), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_band() {
        let b = Backoff::new(Duration::from_secs(1), 1.0, Duration::from_secs(1), 0.5);
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(0, 1.0), Duration::from_secs(1));
        let mid = b.delay(0, 0.5);
        assert!(mid > Duration::from_millis(700) && mid < Duration::from_millis(800));
    }

    #[test]
    fn bad_parameters_are_sanitized() {
        let b = Backoff::new(
            Duration::from_secs(1),
            f64::NAN,
            Duration::from_secs(2),
            7.0,
        );
        assert!((b.factor - 1.0).abs() < f64::EPSILON);
        assert!((b.jitter - 1.0).abs() < f64::EPSILON);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellable_sleep_returns_early() {
        let c = CancellationToken::new();
        let c2 = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            c2.cancel();
        });
        let start = tokio::time::Instant::now();
        assert!(!sleep_cancellable(Duration::from_secs(100), Some(&c)).await);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(sleep_cancellable(Duration::from_millis(1), None).await);
    }
}
