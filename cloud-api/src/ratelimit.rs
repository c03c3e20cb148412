//! Token buckets: the client's per-action rate limiter and the simulator's throttling.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::ecs::Action;

/// A rate: `per_second` tokens refill a bucket of `burst` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after idling.
    pub burst: u32,
}

impl Rate {
    /// A rate of `per_second` with bucket size `burst`.
    #[must_use]
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second: if per_second.is_finite() && per_second > 0.0 {
                per_second
            } else {
                f64::MIN_POSITIVE
            },
            burst: burst.max(1),
        }
    }

    /// `n` requests per minute with a burst of `n` (how Terway states its limits).
    #[must_use]
    pub fn per_minute(n: u32) -> Self {
        Self::new(f64::from(n) / 60.0, n)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s burst {}", self.per_second, self.burst)
    }
}

/// A token bucket.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: Rate, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.rate.per_second).min(f64::from(self.rate.burst));
        self.last = now;
    }

    /// Takes a token if one is there (server-side throttling: no token, reject).
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Reserves a token, going into debt if needed; returns how long to wait before using it
    /// (client-side limiting: callers queue in arrival order).
    pub(crate) fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate.per_second)
        }
    }
}

/// Per-action client-side rate limits.
///
/// Defaults are Terway's (requests per minute, burst equal to the rate): Create, Attach, Delete
/// 500; Detach 400; `DescribeNetworkInterfaces` 800; Assign/Unassign IPv4/IPv6 400;
/// `DescribeInstanceTypes` 400; `DescribeVSwitches` 300.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RateLimits {
    /// Limits by action.
    pub per_action: BTreeMap<String, Rate>,
    /// Limit for actions without an entry; `None` leaves them unlimited.
    pub default: Option<Rate>,
}

impl Default for RateLimits {
    fn default() -> Self {
        let mut per_action = BTreeMap::new();
        for action in Action::ALL {
            let n = match action {
                Action::CreateNetworkInterface
                | Action::AttachNetworkInterface
                | Action::DeleteNetworkInterface => 500,
                Action::DescribeNetworkInterfaces => 800,
                Action::DescribeVSwitches => 300,
                Action::DetachNetworkInterface
                | Action::AssignPrivateIpAddresses
                | Action::UnassignPrivateIpAddresses
                | Action::AssignIpv6Addresses
                | Action::UnassignIpv6Addresses
                | Action::DescribeInstanceTypes => 400,
            };
            per_action.insert(action.as_str().to_owned(), Rate::per_minute(n));
        }
        Self {
            per_action,
            default: Some(Rate::per_minute(500)),
        }
    }
}

impl RateLimits {
    /// No client-side limiting at all.
    #[must_use]
    pub fn unlimited() -> Self {
        Self {
            per_action: BTreeMap::new(),
            default: None,
        }
    }

    /// Sets the limit of one action.
    #[must_use]
    pub fn with(mut self, action: Action, rate: Rate) -> Self {
        self.per_action.insert(action.as_str().to_owned(), rate);
        self
    }

    /// Sets every action to the same rate.
    #[must_use]
    pub fn uniform(rate: Rate) -> Self {
        Self {
            per_action: BTreeMap::new(),
            default: Some(rate),
        }
    }

    /// The rate for `action`.
    #[must_use]
    pub fn rate(&self, action: Action) -> Option<Rate> {
        self.rate_of(action.as_str())
    }

    /// The rate for the action named `action` (any cloud's).
    #[must_use]
    pub fn rate_of(&self, action: &str) -> Option<Rate> {
        self.per_action.get(action).copied().or(self.default)
    }

    /// Sets the limit of the action named `action` (any cloud's, e.g. an EC2 action).
    #[must_use]
    pub fn with_named(mut self, action: impl Into<String>, rate: Rate) -> Self {
        self.per_action.insert(action.into(), rate);
        self
    }
}

/// The client's limiter: one bucket per action, waiters served in arrival order.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    buckets: BTreeMap<&'static str, std::sync::Mutex<TokenBucket>>,
}

impl RateLimiter {
    /// Buckets for the ECS actions.
    pub(crate) fn new(limits: &RateLimits) -> Self {
        Self::for_actions(limits, Action::ALL.map(Action::as_str))
    }

    /// Buckets for the actions named `actions` (of any cloud).
    pub(crate) fn for_actions(
        limits: &RateLimits,
        actions: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        let now = Instant::now();
        let buckets = actions
            .into_iter()
            .filter_map(|a| {
                limits
                    .rate_of(a)
                    .map(|r| (a, std::sync::Mutex::new(TokenBucket::new(r, now))))
            })
            .collect();
        Self { buckets }
    }

    /// Waits for a token for `action` (its wire name); returns how long it waited.
    pub(crate) async fn acquire(&self, action: &str) -> Duration {
        let Some(bucket) = self.buckets.get(action) else {
            return Duration::ZERO;
        };
        let wait = {
            let mut b = bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            b.reserve(Instant::now())
        };
        if !wait.is_zero() {
            if wait > Duration::from_secs(5) {
                tracing::info!(%action, ?wait, "client-side rate limit: waiting");
            }
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_rate() {
        let now = Instant::now();
        let mut b = TokenBucket::new(Rate::new(10.0, 3), now);
        assert!(b.try_take(now) && b.try_take(now) && b.try_take(now));
        assert!(!b.try_take(now));
        assert!(b.try_take(now + Duration::from_millis(100)));
        assert!(!b.try_take(now + Duration::from_millis(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_a_burst_at_the_rate() {
        let limits =
            RateLimits::unlimited().with(Action::AttachNetworkInterface, Rate::new(10.0, 2));
        let limiter = RateLimiter::new(&limits);
        let start = Instant::now();
        for _ in 0..12 {
            limiter
                .acquire(Action::AttachNetworkInterface.as_str())
                .await;
        }
        // 2 at once, then 10 more at 10/s: about one second.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(990) && took < Duration::from_millis(1100),
            "{took:?}"
        );
        // Unlimited actions never wait.
        assert_eq!(
            limiter.acquire(Action::DescribeVSwitches.as_str()).await,
            Duration::ZERO
        );
    }

    #[test]
    fn defaults_are_terways() {
        let d = RateLimits::default();
        let per_min = |a: Action| (d.rate(a).unwrap().per_second * 60.0).round() as u32;
        assert_eq!(per_min(Action::DescribeNetworkInterfaces), 800);
        assert_eq!(per_min(Action::DetachNetworkInterface), 400);
        assert_eq!(per_min(Action::CreateNetworkInterface), 500);
        assert_eq!(per_min(Action::DescribeVSwitches), 300);
        assert_eq!(d.rate(Action::AssignIpv6Addresses).unwrap().burst, 400);
    }
}
