//! The queue's rules, over the storage layer: how a failed attempt is
//! decided and recorded, and the wake-ups that tell schedulers there is
//! work.

pub mod notify;
pub mod retry;

use chrono::{DateTime, Utc};
use pipeweave_protocol::TaskDescriptor;
use pipeweave_protocol::wire::AttemptError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::storage::{self, RunState};
use retry::{AfterFailure, RetryPolicy};

/// Which attempt a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRef {
    /// The run.
    pub run_id: Uuid,
    /// The attempt number.
    pub attempt: i32,
    /// Its token.
    pub attempt_token: Uuid,
}

/// Ends an attempt as failed, with the log its worker stored if any, and
/// decides by its task's retry policy whether the run waits for another
/// attempt or is dead, in one transaction. Returns the run's new state, or `None` when the attempt
/// was no longer current (then nothing changed).
pub async fn fail_attempt(
    pool: &PgPool,
    metrics: &Metrics,
    attempt: AttemptRef,
    error: &AttemptError,
    logs_path: Option<&str>,
    now: DateTime<Utc>,
) -> crate::Result<Option<RunState>> {
    let mut tx = pool.begin().await?;
    let Some(running) = storage::runs::lock_running(&mut tx, attempt.run_id).await? else {
        return Ok(None);
    };
    if running.attempt != attempt.attempt || running.attempt_token != attempt.attempt_token {
        return Ok(None);
    }
    let descriptor: TaskDescriptor =
        serde_json::from_value(running.descriptor.clone()).map_err(|source| {
            crate::Error::Corrupt {
                what: "task descriptor",
                source,
            }
        })?;
    let failed_attempt = u32::try_from(running.attempt).unwrap_or(u32::MAX);
    let (next, retry_at) =
        match RetryPolicy::of(&descriptor).after_failure(failed_attempt, error.retryable) {
            AfterFailure::RetryIn(delay) => {
                let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                (
                    RunState::AwaitingRetry,
                    Some(
                        now.checked_add_signed(delay)
                            .unwrap_or(DateTime::<Utc>::MAX_UTC),
                    ),
                )
            }
            AfterFailure::Dead => (RunState::Dead, None),
        };
    let error_json = serde_json::to_value(error).map_err(|source| crate::Error::Corrupt {
        what: "attempt error",
        source,
    })?;
    let recorded = storage::runs::fail(
        &mut tx,
        &running,
        &error_json,
        logs_path,
        next,
        retry_at,
        now,
    )
    .await?;
    tx.commit().await?;
    if recorded {
        let reason = error
            .reason
            .unwrap_or(pipeweave_protocol::FailureReason::TaskError);
        metrics.attempt_ended("failed", reason.as_str());
        tracing::info!(
            run_id = %crate::RunId(attempt.run_id),
            task_id = %running.task_id,
            attempt = running.attempt,
            reason = %error.reason.unwrap_or(pipeweave_protocol::FailureReason::TaskError),
            next = next.as_str(),
            "attempt failed: {}",
            error.message
        );
    }
    Ok(recorded.then_some(next))
}
