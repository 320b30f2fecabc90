//! `POST /api/runs/{id}/cancel`: cancels a pipeline run as a whole.
//!
//! In one transaction the pipeline run's row is locked first (the lock
//! order every completion follows, see `storage::pipelines::lock_run`), the
//! run ends `cancelled`, and each of its task runs that is queued, running
//! or waiting for a retry is cancelled as `POST /api/task-runs/{id}/cancel`
//! cancels one. A completion racing with it waits for the lock and then
//! finds the pipeline run ended, so nothing new is enqueued. Hosts running
//! an attempt of it are told at once, as for a single cancel.

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use pipeweave_protocol::wire::CancelNotice;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::cancel::{CancelRequest, tell_host};
use super::error::{ApiError, BadRequest, Conflict, NotFound};
use super::json::OptionalApiJson;
use super::{AppState, optional_text};
use crate::storage::RunState;
use crate::storage::pipelines::PipelineRunState;
use crate::{PipelineRunId, RunId};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(cancel_pipeline_run))
}

/// A task run the pipeline cancel ended.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct CancelledTaskRun {
    /// The task run.
    run_id: RunId,
    /// What it was doing: `queued`, `awaiting_retry` or `running`.
    previous_status: RunState,
}

/// A pipeline run just cancelled.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PipelineRunCancelled {
    /// The pipeline run.
    pipeline_run_id: PipelineRunId,
    /// Always `cancelled`.
    status: PipelineRunState,
    /// Always `running`: only a running pipeline run is cancelled.
    previous_status: PipelineRunState,
    /// Who cancelled it.
    cancelled_by: String,
    /// Why, if they said.
    reason: Option<String>,
    /// Its task runs that had not ended, now cancelled; running attempts
    /// are being interrupted.
    cancelled_task_runs: Vec<CancelledTaskRun>,
}

fn state_name(state: PipelineRunState) -> &'static str {
    match state {
        PipelineRunState::Running => "running",
        PipelineRunState::Succeeded => "succeeded",
        PipelineRunState::Failed => "failed",
        PipelineRunState::Partial => "partial",
        PipelineRunState::Cancelled => "cancelled",
    }
}

/// `POST /api/runs/{id}/cancel`: cancels a running pipeline run and every
/// task run of it that has not ended.
#[utoipa::path(
    post,
    path = "/api/runs/{id}/cancel",
    tag = "pipelines",
    params(("id" = PipelineRunId, Path, description = "The pipeline run")),
    request_body(content = Option<CancelRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The pipeline run is cancelled, and every task run of it that had not ended", body = PipelineRunCancelled),
        BadRequest,
        NotFound,
        Conflict,
    )
)]
async fn cancel_pipeline_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalApiJson(request): OptionalApiJson<CancelRequest>,
) -> Result<Json<PipelineRunCancelled>, ApiError> {
    let run_id: PipelineRunId = id
        .parse()
        .map_err(|e: crate::ids::InvalidId| ApiError::invalid("id", e.to_string()))?;
    let cancelled_by = optional_text("cancelledBy", request.cancelled_by, 200)?
        .unwrap_or_else(|| "api".to_owned());
    let reason = optional_text("reason", request.reason, 500)?;
    let outcome = crate::queue::cancel_pipeline_run(
        &state.pool,
        run_id.0,
        &cancelled_by,
        reason.as_deref(),
        Utc::now(),
    )
    .await?
    .ok_or(ApiError::NotFound {
        what: "pipeline run",
        id: run_id.to_string(),
    })?;
    if outcome.previous != PipelineRunState::Running {
        return Err(ApiError::Conflict(format!(
            "pipeline run {run_id} has already ended: it is {}",
            state_name(outcome.previous)
        )));
    }
    let mut cancelled_task_runs = Vec::new();
    for task_run in outcome.task_runs.into_iter().filter(|t| t.cancelled) {
        let task_run_id = RunId(task_run.run_id);
        if task_run.previous == RunState::Running {
            state.metrics.attempt_ended("cancelled", "cancelled");
            // Its slot at the target is free: claim again now.
            state.wake_scheduler.notify_one();
            if let (Some(target), Some(token)) = (task_run.target, task_run.attempt_token) {
                let notice = CancelNotice {
                    attempt: u32::try_from(task_run.attempt).unwrap_or(0),
                    attempt_token: token.to_string(),
                };
                tokio::spawn(tell_host(state.clone(), target, task_run_id, notice));
            }
        }
        cancelled_task_runs.push(CancelledTaskRun {
            run_id: task_run_id,
            previous_status: task_run.previous,
        });
    }
    tracing::info!(pipeline_run = %run_id, task_runs = cancelled_task_runs.len(), %cancelled_by, "pipeline run cancelled");
    Ok(Json(PipelineRunCancelled {
        pipeline_run_id: run_id,
        status: PipelineRunState::Cancelled,
        previous_status: PipelineRunState::Running,
        cancelled_by,
        reason,
        cancelled_task_runs,
    }))
}
