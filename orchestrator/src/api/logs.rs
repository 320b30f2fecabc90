//! `GET /api/task-runs/{id}/logs`: a task run's attempt logs, parsed.
//!
//! A host stores each attempt's log as JSON lines at
//! `runs/{runId}/logs/{taskRunId}/{attempt}.jsonl` (`runId` is the pipeline
//! run's id for a task run of a pipeline, see `pipeweave_storage::layout`),
//! and rewrites it with the log so far at every heartbeat while the attempt
//! runs. This answers, for every attempt, its log's lines: finished
//! attempts from the path their host recorded, the running one (and any
//! attempt whose host recorded none) from the path the layout gives. An
//! attempt whose log does not exist (yet) has no lines, which is not an
//! error, so `pipeweave logs -f` can poll this until the run ends and print
//! the lines it has not printed.

use axum::Json;
use axum::extract::{Path, State};
use pipeweave_storage::object_store::{self, ObjectStoreExt as _};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, BadRequest, NotFound};
use super::{AppState, parse_run_id};
use crate::storage::runs::RunRow;
use crate::storage::{self, RunState};
use crate::{PipelineRunId, RunId};

/// The most of one attempt's log that is answered; a host's log budget is
/// far below it (1 MiB by default). Past it, `truncated` is set and the
/// whole log is at `GET /api/storage/{logsPath}?raw=true`.
const MAX_LOG_BYTES: u64 = 16 << 20;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(run_logs))
}

/// A task run's logs, attempt by attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RunLogs {
    /// The task run.
    run_id: RunId,
    /// Its task.
    task_id: String,
    /// Its pipeline run, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_run_id: Option<PipelineRunId>,
    /// The run's state now: while it is `running`, its current attempt's
    /// log grows at every heartbeat.
    status: RunState,
    /// Every attempt that started, oldest first.
    attempts: Vec<AttemptLog>,
}

/// One attempt's log.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AttemptLog {
    /// Its number, from 1.
    attempt: i32,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(example = "failed")]
    status: &'static str,
    /// Where its log is (or will be) stored: read the raw JSON lines with
    /// `GET /api/storage/{logsPath}?raw=true`.
    logs_path: String,
    /// Its log lines, oldest first, each a JSON object as the host wrote
    /// it: `{timestampMs, level, message}` for a log call, `{timestampMs,
    /// stream: "stdout"|"stderr", message}` for a line of output, `{timestampMs,
    /// asset, size}` for an asset; a line that is not JSON is a string.
    /// Empty while nothing was stored.
    lines: Vec<Value>,
    /// Whether the log was longer than this answer holds (16 MiB).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// `GET /api/task-runs/{id}/logs`: every attempt's log lines.
#[utoipa::path(
    get,
    path = "/api/task-runs/{id}/logs",
    tag = "queue",
    params(("id" = RunId, Path, description = "The task run")),
    responses(
        (status = 200, description = "Each attempt's log lines; an attempt without a stored log has none", body = RunLogs),
        BadRequest,
        NotFound,
        (status = 502, description = "The storage backend failed", body = super::error::ErrorBody),
    )
)]
async fn run_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunLogs>, ApiError> {
    let run_id = parse_run_id("id", &id)?;
    let run = storage::runs::get(&state.pool, run_id.0)
        .await?
        .ok_or(ApiError::NotFound {
            what: "task run",
            id,
        })?;
    let finished = storage::attempts::of_runs(&state.pool, &[run_id.0]).await?;
    let mut attempts: Vec<(i32, &'static str, Option<String>)> = finished
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str(), a.logs_path.clone()))
        .collect();
    match run.state {
        RunState::Succeeded => attempts.push((run.attempt, "succeeded", run.logs_path.clone())),
        RunState::Running => attempts.push((run.attempt, "running", None)),
        _ => {}
    }
    let mut logs = Vec::with_capacity(attempts.len());
    for (attempt, status, recorded) in attempts {
        let logs_path = recorded.unwrap_or_else(|| layout_path(&run, attempt));
        let (lines, truncated) = read_log(&state, &run, &logs_path).await?;
        logs.push(AttemptLog {
            attempt,
            status,
            logs_path,
            lines,
            truncated,
        });
    }
    Ok(Json(RunLogs {
        run_id,
        task_id: run.task_id.clone(),
        pipeline_run_id: run.pipeline_run_id.map(PipelineRunId),
        status: run.state,
        attempts: logs,
    }))
}

/// Where the layout puts an attempt's log.
fn layout_path(run: &RunRow, attempt: i32) -> String {
    let task_run = RunId(run.id).to_string();
    let prefix = run
        .pipeline_run_id
        .map_or_else(|| task_run.clone(), |p| PipelineRunId(p).to_string());
    pipeweave_storage::layout::logs(&prefix, &task_run, u32::try_from(attempt).unwrap_or(0))
}

/// Reads and parses one log from the run's backend (the default one unless
/// its data is stored elsewhere); a log that does not exist has no lines.
async fn read_log(
    state: &AppState,
    run: &RunRow,
    logs_path: &str,
) -> Result<(Vec<Value>, bool), ApiError> {
    let (_, store) = match &run.backend_id {
        None => state.stores.default_store(),
        Some(id) => state.stores.get(id).ok_or_else(|| {
            ApiError::Internal(crate::Error::Storage(
                pipeweave_storage::ConfigError::Open {
                    id: id.clone(),
                    reason: format!(
                        "run {}'s data is on backend {id:?}, which STORAGE_BACKENDS no longer has",
                        RunId(run.id)
                    ),
                },
            ))
        })?,
    };
    let path = match pipeweave_storage::scope::parse_path(logs_path) {
        Ok(path) => path,
        Err(error) => {
            // A worker recorded a path no object can have: nothing to read.
            tracing::warn!(run_id = %RunId(run.id), %error, "a recorded log path is not an object path");
            return Ok((Vec::new(), false));
        }
    };
    let found = match store.get(&path).await {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => return Ok((Vec::new(), false)),
        Err(error) => return Err(ApiError::Storage(error.into())),
    };
    let truncated = found.meta.size > MAX_LOG_BYTES;
    let bytes = if truncated {
        drop(found);
        store.get_range(&path, 0..MAX_LOG_BYTES).await
    } else {
        found.bytes().await
    };
    let bytes = match bytes {
        Ok(bytes) => bytes,
        // Deleted between the two calls (a retention purge).
        Err(object_store::Error::NotFound { .. }) => return Ok((Vec::new(), false)),
        Err(error) => return Err(ApiError::Storage(error.into())),
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if truncated && !text.ends_with('\n') {
        // The cut left half a line.
        lines.pop();
    }
    let parsed = lines
        .into_iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_owned())))
        .collect();
    Ok((parsed, truncated))
}
