//! Retries of one API call, shared by the cloud clients: error classes, backoff, deadline,
//! one credentials refresh.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

use crate::{
    backoff::Backoff,
    credentials::CredentialsProvider,
    error::{Error, ErrorKind, Result},
    rand::{SplitMix64, entropy},
};

/// Retries of one API call (both clouds).
///
/// Retried: throttling (with `throttle_backoff`), 5xx and transport errors, conflicts, wrong
/// state, a reused nonce (with `backoff`). Never retried: quota, vSwitch exhausted, permission,
/// bad parameter, not found. Every attempt gets a fresh nonce and timestamp; a `ClientToken`
/// stays the same.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in total (default 6).
    pub max_attempts: u32,
    /// Overall deadline of a call, retries and backoff included (default 60 s).
    pub deadline: Duration,
    /// Backoff after transient errors (default 200 ms ×2 up to 8 s, 50 % jitter).
    pub backoff: Backoff,
    /// Backoff after throttling (default 1 s ×2 up to 20 s, 50 % jitter).
    pub throttle_backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            deadline: Duration::from_secs(60),
            backoff: Backoff::new(Duration::from_millis(200), 2.0, Duration::from_secs(8), 0.5),
            throttle_backoff: Backoff::new(
                Duration::from_secs(1),
                2.0,
                Duration::from_secs(20),
                0.5,
            ),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    #[must_use]
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

/// Runs `attempt` (given the overall deadline) until it succeeds, fails for good, or the
/// policy's attempts or deadline run out. A credentials rejection (`rejects_credentials`)
/// refreshes the credentials once when the provider can; errors matching `stop` end the
/// retries at once (the caller reconciles them).
pub(crate) async fn run<T, Fut>(
    policy: &RetryPolicy,
    operation: &str,
    credentials: &dyn CredentialsProvider,
    rejects_credentials: fn(&Error) -> bool,
    stop: impl Fn(&Error) -> bool,
    mut attempt: impl FnMut(Instant) -> Fut,
) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let deadline = start + policy.deadline;
    let mut rng = SplitMix64::new(entropy());
    let mut credentials_refreshed = false;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let err = match attempt(deadline).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if rejects_credentials(&err) && !credentials_refreshed && credentials.invalidate() {
            tracing::info!(operation, error = %err, "credentials rejected; refreshing once");
            credentials_refreshed = true;
            continue;
        }
        let retryable = err.is_retryable()
            || matches!(&err, Error::InvalidResponse { http_status: Some(s), .. } if *s >= 500);
        if stop(&err) || !retryable || attempts >= policy.max_attempts.max(1) {
            return Err(err);
        }
        let backoff = if err.kind() == ErrorKind::Throttled {
            &policy.throttle_backoff
        } else {
            &policy.backoff
        };
        let delay = backoff.delay(attempts - 1, rng.next_f64());
        if Instant::now() + delay >= deadline {
            return Err(Error::DeadlineExceeded {
                operation: operation.to_owned(),
                attempts,
                elapsed: start.elapsed(),
                last_error: Some(Box::new(err)),
            });
        }
        tracing::debug!(operation, attempt = attempts, ?delay, error = %err, "retrying");
        tokio::time::sleep(delay).await;
    }
}
