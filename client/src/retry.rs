//! The retry loop: exponential backoff with jitter, bounded by the policy.
//!
//! The operation is a closure so the loop can be tested without a broker,
//! and so callers decide what is fixed across attempts (a publish's id is
//! chosen before the loop and every attempt resends it).

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::{Error, Result};
use crate::options::RetryPolicy;

/// Successive waits between attempts.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    retries: u32,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self { policy, retries: 0 }
    }

    /// The wait before the next retry (jittered into `[d/2, d]`).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling(self.retries);
        self.retries = self.retries.saturating_add(1);
        if ceiling.is_zero() {
            return ceiling;
        }
        let half = ceiling / 2;
        half + rand::rng().random_range(Duration::ZERO..=ceiling - half)
    }

    /// Back to the first delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.retries = 0;
    }

    /// The un-jittered wait before retry number `retries + 1`.
    fn ceiling(&self, retries: u32) -> Duration {
        let factor = 1u32.checked_shl(retries.min(31)).unwrap_or(u32::MAX);
        self.policy
            .initial_backoff
            .saturating_mul(factor)
            .min(self.policy.max_backoff)
    }
}

/// Which failures a call may retry: every retryable one when resending is
/// harmless (reads, publishes with a fixed id), or only `Unavailable` (the
/// broker refused before acting) for mutations that are not idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotence {
    Idempotent,
    NotIdempotent,
}

impl Idempotence {
    pub(crate) fn may_retry(self, error: &Error) -> bool {
        match self {
            Idempotence::Idempotent => error.is_retryable(),
            Idempotence::NotIdempotent => matches!(error, Error::Unavailable { .. }),
        }
    }
}

/// Runs `op` (given the attempt number, from 1) until it succeeds, fails with
/// an error `idempotence` does not retry, or the policy's attempts run out.
pub(crate) async fn retry<T, F, Fut>(policy: RetryPolicy, idempotence: Idempotence, mut op: F) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::new(policy);
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(value) => return Ok(value),
            Err(error) if attempt < policy.max_attempts && idempotence.may_retry(&error) => {
                let delay = backoff.next_delay();
                tracing::debug!(%error, attempt, ?delay, "retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy::new(attempts, Duration::from_millis(1), Duration::from_millis(4))
    }

    fn unavailable() -> Error {
        Error::Unavailable {
            message: "no quorum".into(),
            leader_hint: None,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let policy = RetryPolicy::new(10, Duration::from_millis(100), Duration::from_millis(1000));
        let mut backoff = Backoff::new(policy);
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for ceiling in ceilings {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
        // Huge retry counts do not overflow.
        assert_eq!(backoff.ceiling(1000), Duration::from_millis(1000));
    }

    #[tokio::test]
    async fn retryable_failures_are_retried_until_success() {
        let calls = Mutex::new(0);
        let result = retry(policy(5), Idempotence::Idempotent, |attempt| {
            *calls.lock().unwrap() += 1;
            async move {
                if attempt < 3 {
                    Err(unavailable())
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(result, Ok(3));
        assert_eq!(*calls.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn attempts_are_bounded_by_the_policy() {
        let calls = Mutex::new(0);
        let result: Result<()> = retry(policy(4), Idempotence::Idempotent, |_| {
            *calls.lock().unwrap() += 1;
            async { Err(Error::timeout("slow")) }
        })
        .await;
        assert_eq!(result, Err(Error::timeout("slow")));
        assert_eq!(*calls.lock().unwrap(), 4);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = Mutex::new(0);
        let result: Result<()> = retry(policy(5), Idempotence::Idempotent, |_| {
            *calls.lock().unwrap() += 1;
            async { Err(Error::invalid("topic", "bad")) }
        })
        .await;
        assert!(matches!(result, Err(Error::InvalidArgument { .. })));
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn mutations_retry_only_when_the_broker_refused_before_acting() {
        let calls = Mutex::new(0);
        let result: Result<()> = retry(policy(5), Idempotence::NotIdempotent, |_| {
            *calls.lock().unwrap() += 1;
            async { Err(Error::timeout("maybe applied")) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(*calls.lock().unwrap(), 1);
        let result = retry(policy(5), Idempotence::NotIdempotent, |attempt| async move {
            if attempt == 1 { Err(unavailable()) } else { Ok(()) }
        })
        .await;
        assert_eq!(result, Ok(()));
    }
}
