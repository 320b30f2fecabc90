//! The dead-letter queue API, on the dead runs themselves:
//!
//! - `GET /api/dlq` lists dead runs not retried yet (`taskId`, `since`,
//!   `until` on the time of death; `limit`, `offset`);
//! - `GET /api/dlq/{id}` shows one with its input and every attempt (error
//!   and code hash), and the run that retried it, if any;
//! - `POST /api/dlq/{id}/retry` enqueues a new run of it on the task's
//!   current code, as the spec says, or with `{"pinCodeHash": true}` on the
//!   code of the failed attempt (WebAssembly tasks: a host fetches that
//!   module by its hash);
//! - `POST /api/dlq/retry-all` retries every one, of a task or of all;
//! - `POST /api/dlq/purge` deletes those that died before
//!   `{"olderThan": "7d"}`; the scheduler purges past `DLQ_RETENTION_DAYS`
//!   on its own.
//!
//! An entry's id is `dlq_` and the run's 32 hex digits; the run's own
//! `trun_` id is accepted too.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::json::{ApiJson, OptionalApiJson};
use super::queue::{page, query_error};
use crate::RunId;
use crate::storage::attempts::AttemptRow;
use crate::storage::runs::RunRow;
use crate::storage::{self, Runtime};

/// Most dead runs retried per statement by `retry-all`.
const RETRY_BATCH: i64 = 1000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dlq", get(list))
        .route("/api/dlq/retry-all", post(retry_all))
        .route("/api/dlq/purge", post(purge))
        .route("/api/dlq/{id}", get(show))
        .route("/api/dlq/{id}/retry", post(retry))
}

/// `dlq_<hex>` for a dead run.
fn entry_id(run_id: Uuid) -> String {
    format!("dlq_{}", run_id.simple())
}

/// Reads `dlq_<hex>`, or a run id.
fn parse_entry_id(text: &str) -> Result<Uuid, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "id",
            format!("{text:?} is not a DLQ entry id (`dlq_` and 32 hex digits) or a run id"),
        )
    };
    match text.strip_prefix("dlq_") {
        Some(hex) if hex.len() == 32 => Uuid::try_parse(hex).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
        None => text.parse::<RunId>().map(|id| id.0).map_err(|_| invalid()),
    }
}

/// An entry as the spec lists it; `error` is the message, and the rest of
/// the error (code, reason, details) follows as extensions.
fn entry(run: &RunRow) -> Value {
    let error = run.error.clone().unwrap_or(Value::Null);
    json!({
        "id": entry_id(run.id),
        "taskRunId": RunId(run.id),
        "taskId": run.task_id,
        "pipelineRunId": null,
        "codeVersion": run.code_version,
        "codeHash": run.code_hash,
        "error": error.get("message").cloned().unwrap_or(Value::Null),
        "errorCode": error.get("code").cloned().unwrap_or(Value::Null),
        "errorReason": error.get("reason").cloned().unwrap_or(Value::Null),
        "attempts": run.attempt,
        "failedAt": run.finished_at,
        "createdAt": run.created_at,
        "input": run.input,
        "metadata": run.metadata,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    task_id: Option<String>,
    /// Died at or after (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Died before (RFC 3339).
    until: Option<DateTime<Utc>>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let (limit, offset) = page(query.limit, query.offset)?;
    let filter = storage::dlq::DlqFilter {
        task_id: query.task_id,
        since: query.since,
        until: query.until,
    };
    let (rows, total) = storage::dlq::list(&state.pool, &filter, limit, offset).await?;
    let items: Vec<Value> = rows.iter().map(entry).collect();
    Ok(Json(
        json!({ "items": items, "total": total, "limit": limit, "offset": offset }),
    ))
}

/// The dead run `id`, or 404.
async fn dead_run(state: &AppState, id: Uuid, text: &str) -> Result<RunRow, ApiError> {
    storage::runs::get(&state.pool, id)
        .await?
        .filter(|run| run.state == storage::RunState::Dead)
        .ok_or_else(|| ApiError::NotFound {
            what: "DLQ entry",
            id: text.to_owned(),
        })
}

fn attempt_json(attempt: &AttemptRow) -> Value {
    json!({
        "attempt": attempt.attempt,
        "outcome": attempt.outcome,
        "target": attempt.target,
        "codeVersion": attempt.code_version,
        "codeHash": attempt.code_hash,
        "startedAt": attempt.started_at,
        "finishedAt": attempt.finished_at,
        "error": attempt.error,
    })
}

async fn show(
    State(state): State<AppState>,
    Path(text): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_entry_id(&text)?;
    let run = dead_run(&state, id, &text).await?;
    let attempts = storage::attempts::of_runs(&state.pool, &[id]).await?;
    let retried_as = storage::dlq::retried_as(&state.pool, id).await?;
    let mut view = entry(&run);
    view["errorDetail"] = run.error.clone().unwrap_or(Value::Null);
    view["attemptHistory"] = attempts.iter().map(attempt_json).collect();
    view["retriedAs"] = json!(retried_as.map(RunId));
    Ok(Json(view))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryRequest {
    /// Run the code of the failed attempt instead of the task's current
    /// code.
    #[serde(default)]
    pin_code_hash: bool,
}

async fn retry(
    State(state): State<AppState>,
    Path(text): Path<String>,
    OptionalApiJson(request): OptionalApiJson<RetryRequest>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let id = parse_entry_id(&text)?;
    let run = dead_run(&state, id, &text).await?;
    if request.pin_code_hash {
        let runtime = storage::tasks::runtime(&state.pool, &run.task_id).await?;
        if runtime != Some(Runtime::Wasm) {
            return Err(ApiError::invalid(
                "pinCodeHash",
                format!(
                    "task {:?} runs on a plain HTTP worker, which runs only its current code; retry without pinCodeHash",
                    run.task_id
                ),
            ));
        }
    }
    let new_id = RunId::new().0;
    let retried = storage::dlq::retry(
        &state.pool,
        &[(id, new_id)],
        request.pin_code_hash,
        Utc::now(),
    )
    .await?;
    let Some(retried) = retried.into_iter().next() else {
        // Retried before (perhaps a moment ago by another request).
        let existing = storage::dlq::retried_as(&state.pool, id).await?;
        return Err(ApiError::Conflict(match existing {
            Some(run_id) => format!("{text} was already retried as {}", RunId(run_id)),
            None => format!("{text} is no longer in the dead-letter queue"),
        }));
    };
    state.wake_scheduler.notify_one();
    let code_version = match retried.pinned_code_version {
        Some(version) => Some(version),
        None => storage::tasks::code_version(&state.pool, &run.task_id).await?,
    };
    tracing::info!(dead = %RunId(id), run_id = %RunId(retried.run_id), pinned = request.pin_code_hash, "dead run retried");
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({
            "newRunId": RunId(retried.run_id),
            "status": "queued",
            "codeVersion": code_version,
            "codeHashPinned": request.pin_code_hash,
        })),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryAllRequest {
    /// Only dead runs of this task.
    task_id: Option<String>,
}

async fn retry_all(
    State(state): State<AppState>,
    OptionalApiJson(request): OptionalApiJson<RetryAllRequest>,
) -> Result<Json<Value>, ApiError> {
    let mut retried = 0usize;
    loop {
        let dead =
            storage::dlq::unretried(&state.pool, request.task_id.as_deref(), RETRY_BATCH).await?;
        if dead.is_empty() {
            break;
        }
        let pairs: Vec<(Uuid, Uuid)> = dead.iter().map(|&id| (id, RunId::new().0)).collect();
        let done = storage::dlq::retry(&state.pool, &pairs, false, Utc::now()).await?;
        retried += done.len();
        if done.is_empty() || dead.len() < RETRY_BATCH as usize {
            break;
        }
    }
    if retried > 0 {
        state.wake_scheduler.notify_one();
    }
    tracing::info!(
        retried,
        task_id = request.task_id.as_deref().unwrap_or("*"),
        "dead runs retried"
    );
    Ok(Json(
        json!({ "retried": retried, "taskId": request.task_id }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PurgeRequest {
    /// `7d`, `12h`, `30m`, `1w`…
    older_than: String,
}

async fn purge(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PurgeRequest>,
) -> Result<Json<Value>, ApiError> {
    let age = humantime::parse_duration(request.older_than.trim()).map_err(|error| {
        ApiError::invalid(
            "olderThan",
            format!(
                "{:?} is not a duration ({error}); use e.g. 7d, 12h or 30m",
                request.older_than
            ),
        )
    })?;
    let before = chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(|| ApiError::invalid("olderThan", "is too long"))?;
    let purged = storage::dlq::purge(&state.pool, before).await?;
    tracing::info!(purged, %before, "dead-letter queue purged");
    Ok(Json(json!({ "purged": purged, "before": before })))
}
