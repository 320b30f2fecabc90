//! The queue's rules, over the storage layer: how a failed attempt is
//! decided and recorded, how the end of a pipeline's task run moves its
//! pipeline run on, and the wake-ups that tell schedulers there is work.

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
/// attempt or is dead, in one transaction; a task run of a pipeline moves
/// its pipeline run on in the same transaction. Returns the run's new
/// state, or `None` when the attempt was no longer current (then nothing
/// changed).
pub async fn fail_attempt(
    pool: &PgPool,
    metrics: &Metrics,
    attempt: AttemptRef,
    error: &AttemptError,
    logs_path: Option<&str>,
    now: DateTime<Utc>,
) -> crate::Result<Option<RunState>> {
    let mut tx = pool.begin().await?;
    // A pipeline run's lock comes before its task runs' (one lock order).
    let pipeline_run = storage::pipelines::of_task_run(&mut tx, attempt.run_id).await?;
    if let Some(id) = pipeline_run {
        storage::pipelines::lock_run(&mut tx, id).await?;
    }
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
    if recorded && let Some(id) = pipeline_run {
        after_pipeline_task(&mut tx, id, next, now).await?;
    }
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

/// Moves a locked pipeline run on after one of its task runs changed state
/// to `now_state`: a death in fail-fast mode fails the pipeline run and
/// cancels the rest of it; anything else may make tasks ready or end it.
async fn after_pipeline_task(
    conn: &mut sqlx::PgConnection,
    pipeline_run: Uuid,
    now_state: RunState,
    now: DateTime<Utc>,
) -> crate::Result<()> {
    let Some(locked) = storage::pipelines::lock_run(conn, pipeline_run).await? else {
        return Ok(());
    };
    if locked.state != storage::pipelines::PipelineRunState::Running {
        return Ok(());
    }
    if matches!(now_state, RunState::Dead | RunState::Cancelled)
        && locked.failure_mode == storage::pipelines::FailureMode::FailFast
    {
        let rest = storage::pipelines::fail(conn, pipeline_run, now).await?;
        if !rest.is_empty() {
            storage::runs::cancel(
                conn,
                &rest,
                "pipeline",
                Some("fail-fast: another task of the pipeline run failed"),
                now,
            )
            .await?;
        }
        tracing::info!(pipeline_run = %crate::PipelineRunId(pipeline_run), cancelled = rest.len(), "pipeline run failed (fail-fast)");
        return Ok(());
    }
    let advanced = storage::pipelines::advance(conn, pipeline_run, now).await?;
    if let Some(state) = advanced.ended {
        tracing::info!(pipeline_run = %crate::PipelineRunId(pipeline_run), state = ?state, "pipeline run ended");
    }
    Ok(())
}

/// Why a pipeline task's success could not be recorded as reported.
#[derive(Debug, thiserror::Error)]
pub enum PipelineSuccessError {
    /// `selectedNext` names tasks outside the task's `allowedNext`.
    #[error(
        "selectedNext names {disallowed:?}, which the task's allowedNext {allowed:?} does not list"
    )]
    Disallowed {
        /// The names not allowed.
        disallowed: Vec<String>,
        /// What the task allows (from the run's snapshot).
        allowed: Vec<String>,
    },
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] crate::Error),
}

impl From<sqlx::Error> for PipelineSuccessError {
    fn from(error: sqlx::Error) -> Self {
        Self::Storage(error.into())
    }
}

/// Records the success of a task run of pipeline run `pipeline_run` and,
/// in the same transaction, what it selected and what that makes ready:
/// `selected` (the callback's `selectedNext`) must be a subset of the
/// task's allowedNext in the run's snapshot; absent selects all of them.
/// Returns whether the attempt was still current.
pub async fn succeed_in_pipeline(
    pool: &PgPool,
    success: &storage::runs::Success,
    pipeline_run: Uuid,
    selected: Option<&[String]>,
    now: DateTime<Utc>,
) -> Result<bool, PipelineSuccessError> {
    let mut tx = pool.begin().await?;
    let Some(locked) = storage::pipelines::lock_run(&mut tx, pipeline_run).await? else {
        return Ok(false);
    };
    let task_id = storage::runs::task_of(&mut tx, success.run_id).await?;
    let allowed: Vec<String> = task_id
        .as_deref()
        .and_then(|task| locked.structure["tasks"][task]["allowedNext"].as_array())
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let selected_next = match selected {
        None => allowed.clone(),
        Some(selected) => {
            let disallowed: Vec<String> = selected
                .iter()
                .filter(|name| !allowed.contains(name))
                .cloned()
                .collect();
            if !disallowed.is_empty() {
                return Err(PipelineSuccessError::Disallowed {
                    disallowed,
                    allowed,
                });
            }
            selected.to_vec()
        }
    };
    let finished =
        storage::runs::succeed_in_pipeline(&mut tx, success, &selected_next, now).await?;
    if finished {
        after_pipeline_task(&mut tx, pipeline_run, RunState::Succeeded, now).await?;
    }
    tx.commit().await?;
    Ok(finished)
}

/// Cancels one run (see `storage::runs::cancel`); a task run of a pipeline
/// moves its pipeline run on in the same transaction, as a death would.
/// `None` if there is no such run.
pub async fn cancel_run(
    pool: &PgPool,
    run_id: Uuid,
    cancelled_by: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> crate::Result<Option<storage::runs::Cancelled>> {
    let mut tx = pool.begin().await?;
    let pipeline_run = storage::pipelines::of_task_run(&mut tx, run_id).await?;
    if let Some(id) = pipeline_run {
        storage::pipelines::lock_run(&mut tx, id).await?;
    }
    let outcome = storage::runs::cancel(&mut tx, &[run_id], cancelled_by, reason, now)
        .await?
        .into_iter()
        .next();
    if let (Some(id), Some(true)) = (pipeline_run, outcome.as_ref().map(|o| o.cancelled)) {
        after_pipeline_task(&mut tx, id, RunState::Cancelled, now).await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// What cancelling a pipeline run as a whole did.
#[derive(Debug, Clone)]
pub struct PipelineRunCancelled {
    /// Its state before: only a `running` one is cancelled.
    pub previous: storage::pipelines::PipelineRunState,
    /// Its task runs that had not ended, each as [`storage::runs::cancel`]
    /// left it; running ones need their host told.
    pub task_runs: Vec<storage::runs::Cancelled>,
}

/// Cancels a pipeline run as a whole, in one transaction: locks its row
/// first (the one lock order, see [`storage::pipelines::lock_run`]), ends
/// it `cancelled`, then cancels every task run of it that is queued,
/// running or waiting for a retry. A pipeline run that already ended is
/// left as it is (`previous` says how it ended). `None` if there is no
/// such pipeline run.
pub async fn cancel_pipeline_run(
    pool: &PgPool,
    pipeline_run: Uuid,
    cancelled_by: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> crate::Result<Option<PipelineRunCancelled>> {
    let mut tx = pool.begin().await?;
    let Some(locked) = storage::pipelines::lock_run(&mut tx, pipeline_run).await? else {
        return Ok(None);
    };
    if locked.state != storage::pipelines::PipelineRunState::Running {
        return Ok(Some(PipelineRunCancelled {
            previous: locked.state,
            task_runs: Vec::new(),
        }));
    }
    let live = storage::pipelines::cancel(&mut tx, pipeline_run, now).await?;
    let task_runs = if live.is_empty() {
        Vec::new()
    } else {
        storage::runs::cancel(&mut tx, &live, cancelled_by, reason, now).await?
    };
    tx.commit().await?;
    Ok(Some(PipelineRunCancelled {
        previous: locked.state,
        task_runs,
    }))
}

/// Why a pipeline run could not start.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// No pipeline has that id.
    #[error("pipeline {0:?} does not exist")]
    NoPipeline(String),
    /// The pipeline does not validate against the tasks registered now.
    #[error("pipeline {id:?} cannot run with the tasks registered now: {problems}")]
    Invalid {
        /// The pipeline.
        id: String,
        /// What is wrong, by name.
        problems: String,
    },
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] crate::Error),
}

impl From<sqlx::Error> for TriggerError {
    fn from(error: sqlx::Error) -> Self {
        Self::Storage(error.into())
    }
}

/// A pipeline run's input: inline, or stored at `path` on `backend_id`.
#[derive(Debug, Clone)]
pub enum PipelineInput {
    /// Small enough to keep in the row.
    Inline(serde_json::Value),
    /// Stored in object storage.
    Stored {
        /// Its path.
        path: String,
        /// The backend holding it.
        backend_id: String,
    },
}

/// A pipeline run that started.
#[derive(Debug, Clone)]
pub struct Started {
    /// The pipeline as it was triggered.
    pub pipeline: storage::pipelines::PipelineRow,
    /// The run's failure mode.
    pub failure_mode: storage::pipelines::FailureMode,
    /// The entry task runs, `(run id, task)`.
    pub entry: Vec<(Uuid, String)>,
}

/// Starts run `run_id` of pipeline `id` in the caller's transaction:
/// validates the pipeline against the tasks registered now, snapshots its
/// structure and code hashes, and enqueues its entry tasks with `input`.
/// The trigger API and cron schedules both start runs here.
pub async fn trigger_pipeline(
    conn: &mut sqlx::PgConnection,
    id: &str,
    run_id: crate::PipelineRunId,
    input: PipelineInput,
    failure_mode: Option<storage::pipelines::FailureMode>,
    metadata: Option<serde_json::Value>,
    now: DateTime<Utc>,
) -> Result<Started, TriggerError> {
    let pipeline = storage::pipelines::get(&mut *conn, id)
        .await?
        .ok_or_else(|| TriggerError::NoPipeline(id.to_owned()))?;
    let tasks = storage::pipelines::task_infos(&mut *conn).await?;
    let validated =
        crate::pipeline::validate(&pipeline.entry_tasks, pipeline.tasks.as_deref(), &tasks)
            .map_err(|problems| TriggerError::Invalid {
                id: id.to_owned(),
                problems: problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
    let structure =
        serde_json::to_value(&validated.structure).map_err(|source| crate::Error::Corrupt {
            what: "pipeline structure",
            source,
        })?;
    let entry: Vec<(Uuid, String)> = pipeline
        .entry_tasks
        .iter()
        .map(|task| (crate::RunId::new().0, task.clone()))
        .collect();
    let failure_mode = failure_mode.unwrap_or(pipeline.failure_mode);
    let (inline, input_path, backend_id) = match input {
        PipelineInput::Inline(value) => (Some(value), None, None),
        PipelineInput::Stored { path, backend_id } => (None, Some(path), Some(backend_id)),
    };
    storage::pipelines::trigger(
        conn,
        &storage::pipelines::NewPipelineRun {
            id: run_id.0,
            pipeline_id: pipeline.id.clone(),
            pipeline_version: pipeline.version,
            failure_mode,
            input: inline,
            input_path,
            backend_id,
            structure,
            metadata,
        },
        &entry,
        now,
    )
    .await?;
    Ok(Started {
        pipeline,
        failure_mode,
        entry,
    })
}
