//! How a task run looks in the API: camelCase, the spec's `runId`,
//! `taskId` and `status`, and the output fields of the callback
//! (`output`, `outputPath`, `outputSize`, `assets`) lifted to the top.

use chrono::{DateTime, Utc};
use pipeweave_protocol::wire::ResultRef;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::storage::RunState;
use crate::storage::attempts::AttemptRow;
use crate::storage::runs::RunRow;
use crate::{PipelineRunId, RunId};

/// A run as lists show it. Fields without a value are left out.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunSummary {
    /// The run.
    run_id: RunId,
    /// Its task.
    task_id: String,
    /// The pipeline run it belongs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_run_id: Option<PipelineRunId>,
    /// Its state.
    status: RunState,
    /// Its priority; lower runs first.
    priority: i32,
    /// Its current or last attempt, from 1; 0 before the first.
    attempt: i32,
    /// When it was enqueued.
    created_at: DateTime<Utc>,
    /// Not started before this.
    scheduled_at: DateTime<Utc>,
    /// When its current or last attempt started.
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<DateTime<Utc>>,
    /// Its last heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<DateTime<Utc>>,
    /// The code version its current or last attempt ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    code_version: Option<i32>,
    /// The code hash its current or last attempt ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    code_hash: Option<String>,
    /// The host or worker of its current or last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// Progress reported by the attempt, 0 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<i16>,
    /// What the attempt said it is doing.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress_message: Option<String>,
    /// The caller's data from the enqueue.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    /// The last attempt's error (`message`, `code`, `retryable`, `reason`,
    /// `details`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
    /// Who cancelled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    cancelled_by: Option<String>,
    /// Why it was cancelled, if they said.
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_reason: Option<String>,
}

impl RunSummary {
    pub(super) fn of(run: &RunRow) -> Self {
        Self {
            run_id: RunId(run.id),
            task_id: run.task_id.clone(),
            pipeline_run_id: run.pipeline_run_id.map(PipelineRunId),
            status: run.state,
            priority: run.priority,
            attempt: run.attempt,
            created_at: run.created_at,
            scheduled_at: run.scheduled_at,
            started_at: run.started_at,
            heartbeat_at: run.heartbeat_at,
            finished_at: run.finished_at,
            code_version: run.code_version,
            code_hash: run.code_hash.clone(),
            target: run.target.clone(),
            progress: run.progress,
            progress_message: run.progress_message.clone(),
            metadata: run.metadata.clone(),
            error: run.error.clone(),
            cancelled_by: run.cancelled_by.clone(),
            cancel_reason: run.cancel_reason.clone(),
        }
    }
}

/// The run's result as its callback reported it; empty until it succeeds.
fn result_of(run: &RunRow) -> ResultRef {
    run.result
        .clone()
        .and_then(|result| serde_json::from_value(result).ok())
        .unwrap_or_default()
}

/// The run that holds an idempotency key, answered instead of a new run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DuplicateRun {
    #[serde(flatten)]
    run: RunSummary,
    #[serde(flatten)]
    result: ResultRef,
    /// Always `true`: no new run was made.
    duplicate: bool,
}

impl DuplicateRun {
    pub(super) fn of(run: &RunRow) -> Self {
        Self {
            run: RunSummary::of(run),
            result: result_of(run),
            duplicate: true,
        }
    }
}

/// One finished attempt of a run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AttemptView {
    /// Its number, from 1.
    attempt: i32,
    /// `succeeded`, `failed` or `cancelled`.
    #[schema(example = "failed")]
    outcome: &'static str,
    /// The host or worker it ran on.
    target: Option<String>,
    /// The code version it ran.
    code_version: Option<i32>,
    /// The code hash it ran.
    code_hash: Option<String>,
    /// When it started.
    started_at: Option<DateTime<Utc>>,
    /// When it ended.
    finished_at: Option<DateTime<Utc>>,
    /// Why it failed (`message`, `code`, `retryable`, `reason`, `details`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
    /// Its log (JSON lines), when the host or worker that ran it stored
    /// one: read it with `GET /api/storage/{logsPath}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    logs_path: Option<String>,
}

impl AttemptView {
    pub(super) fn of(attempt: &AttemptRow) -> Self {
        Self {
            attempt: attempt.attempt,
            outcome: attempt.outcome.as_str(),
            target: attempt.target.clone(),
            code_version: Some(attempt.code_version),
            code_hash: Some(attempt.code_hash.clone()),
            started_at: Some(attempt.started_at),
            finished_at: Some(attempt.finished_at),
            error: attempt.error.clone(),
            logs_path: attempt.logs_path.clone(),
        }
    }

    /// The successful attempt, which is the run row itself.
    fn succeeded(run: &RunRow) -> Self {
        Self {
            attempt: run.attempt,
            outcome: "succeeded",
            target: run.target.clone(),
            code_version: run.code_version,
            code_hash: run.code_hash.clone(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            error: None,
            logs_path: run.logs_path.clone(),
        }
    }
}

/// A run's input: inline, or where it is stored.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunInput {
    /// The input, when it is kept inline (up to 64 KiB of JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<Value>,
    /// Where the input is stored otherwise: read it with
    /// `GET /api/storage/{inputPath}?backend={backendId}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_path: Option<String>,
    /// The storage backend holding the run's stored input.
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_id: Option<String>,
}

impl RunInput {
    pub(super) fn of(run: &RunRow) -> Self {
        Self {
            input: run.input.clone(),
            input_path: run.input_path.clone(),
            backend_id: run.input_path.as_ref().and(run.backend_id.clone()),
        }
    }
}

/// Everything about one run: the summary, its input, its result and every
/// finished attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunDetail {
    #[serde(flatten)]
    run: RunSummary,
    #[serde(flatten)]
    input: RunInput,
    #[serde(flatten)]
    result: ResultRef,
    /// Its finished attempts, oldest first.
    attempts: Vec<AttemptView>,
}

impl RunDetail {
    /// The failed and cancelled attempts come from `attempts`, the
    /// successful one from the run row.
    pub(super) fn of(run: &RunRow, attempts: &[AttemptRow]) -> Self {
        let mut views: Vec<AttemptView> = attempts.iter().map(AttemptView::of).collect();
        if run.state == RunState::Succeeded {
            views.push(AttemptView::succeeded(run));
        }
        Self {
            run: RunSummary::of(run),
            input: RunInput::of(run),
            result: result_of(run),
            attempts: views,
        }
    }
}
