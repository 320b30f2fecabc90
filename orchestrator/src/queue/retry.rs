//! What happens after a failed attempt: another attempt after a delay, or
//! the end of the run. Pure logic, so it is tested here and the storage
//! layer only applies the decision.
//!
//! The policy is the spec's: `retries` is how many attempts may follow the
//! first, so a run has at most `retries + 1` attempts. The delay before the
//! next attempt after the n-th failure is `retryDelayMs` with fixed backoff
//! and `min(retryDelayMs × 2^(n-1), maxRetryDelayMs)` with exponential
//! backoff. A fatal (non-retryable) error ends the run at once.

use std::time::Duration;

use pipeweave_protocol::{RetryBackoff, TaskDescriptor};

/// The retry settings of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts that may follow the first.
    pub retries: u32,
    /// Fixed or exponential.
    pub backoff: RetryBackoff,
    /// Delay after the first failure.
    pub base_delay: Duration,
    /// Cap on any delay.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The policy a task declared.
    pub fn of(descriptor: &TaskDescriptor) -> Self {
        Self {
            retries: descriptor.retries,
            backoff: descriptor.retry_backoff,
            base_delay: Duration::from_millis(descriptor.retry_delay_ms),
            max_delay: Duration::from_millis(descriptor.max_retry_delay_ms),
        }
    }

    /// The most attempts a run gets.
    pub fn max_attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The wait before the next attempt after attempt `failed_attempt`
    /// (from 1) failed.
    pub fn delay_after(&self, failed_attempt: u32) -> Duration {
        match self.backoff {
            RetryBackoff::Fixed => self.base_delay.min(self.max_delay),
            RetryBackoff::Exponential => {
                let doublings = failed_attempt.saturating_sub(1).min(63);
                let factor = 1u64 << doublings;
                let millis = u64::try_from(self.base_delay.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(factor);
                Duration::from_millis(millis).min(self.max_delay)
            }
        }
    }

    /// What to do now that attempt `failed_attempt` failed.
    pub fn after_failure(&self, failed_attempt: u32, retryable: bool) -> AfterFailure {
        if retryable && failed_attempt < self.max_attempts() {
            AfterFailure::RetryIn(self.delay_after(failed_attempt))
        } else {
            AfterFailure::Dead
        }
    }
}

/// The decision after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Schedule another attempt after this delay.
    RetryIn(Duration),
    /// No attempts left, or the error was fatal: the run is dead.
    Dead,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: RetryBackoff) -> RetryPolicy {
        RetryPolicy {
            retries: 3,
            backoff,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_millis(86_400_000),
        }
    }

    #[test]
    fn exponential_delays_follow_the_spec_table() {
        let policy = policy(RetryBackoff::Exponential);
        let delays: Vec<u128> = [1, 2, 3, 4, 15]
            .iter()
            .map(|&n| policy.delay_after(n).as_millis())
            .collect();
        assert_eq!(delays, [1000, 2000, 4000, 8000, 16_384_000]);
        assert_eq!(policy.delay_after(18).as_millis(), 86_400_000, "capped");
        assert_eq!(policy.delay_after(u32::MAX).as_millis(), 86_400_000);
    }

    #[test]
    fn fixed_delays_do_not_grow() {
        let policy = policy(RetryBackoff::Fixed);
        assert_eq!(policy.delay_after(1), policy.delay_after(7));
    }

    #[test]
    fn retries_count_attempts_after_the_first() {
        let policy = policy(RetryBackoff::Fixed);
        assert_eq!(policy.max_attempts(), 4);
        assert!(matches!(
            policy.after_failure(3, true),
            AfterFailure::RetryIn(_)
        ));
        assert_eq!(policy.after_failure(4, true), AfterFailure::Dead);
    }

    #[test]
    fn a_fatal_error_ends_the_run_at_once() {
        assert_eq!(
            policy(RetryBackoff::Fixed).after_failure(1, false),
            AfterFailure::Dead
        );
    }

    #[test]
    fn zero_retries_means_one_attempt() {
        let policy = RetryPolicy {
            retries: 0,
            ..policy(RetryBackoff::Fixed)
        };
        assert_eq!(policy.after_failure(1, true), AfterFailure::Dead);
    }
}
