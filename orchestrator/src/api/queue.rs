//! The task queue API of the spec: enqueue one run or many, queue
//! statistics, queue items with filters, and one run in full.
//!
//! - `POST /api/queue/task`, `POST /api/queue/batch`
//! - `GET /api/queue/status`, `GET /api/queue/items`
//! - `GET /api/task-runs/:id`
//!
//! A batch is all or nothing: one bad item fails the request with the
//! item's path (`tasks[3].priority`) and writes no row.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::json::ApiJson;
use super::runs_view;
use super::{AppState, parse_run_id};
use crate::RunId;
use crate::storage::runs::Enqueued;
use crate::storage::{self, RunState};

/// Most runs in one batch request.
const MAX_BATCH: usize = 10_000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/queue/task", post(queue_task))
        .route("/api/queue/batch", post(queue_batch))
        .route("/api/queue/status", get(queue_status))
        .route("/api/queue/items", get(queue_items))
        .route("/api/task-runs/{id}", get(task_run))
}

/// One run to enqueue, as the spec's `POST /api/queue/task` takes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QueueTask {
    task_id: String,
    #[serde(default)]
    input: Value,
    /// Overrides the task's default priority; lower runs first.
    priority: Option<i64>,
    metadata: Option<Value>,
    /// Do not start before this many milliseconds from now.
    delay_ms: Option<u64>,
    /// Do not start before this instant (RFC 3339).
    scheduled_at: Option<DateTime<Utc>>,
    /// While a run of this task with this key is live (its TTL has not
    /// passed and it has not ended dead or cancelled), enqueuing again
    /// returns that run instead of a new one.
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueBatch {
    tasks: Vec<QueueTask>,
}

/// Checks the items and turns them into rows; `path` prefixes field names.
fn prepare(
    items: Vec<(String, QueueTask)>,
    now: DateTime<Utc>,
) -> Result<Vec<storage::runs::NewRun>, ApiError> {
    let mut runs = Vec::with_capacity(items.len());
    for (path, item) in items {
        let priority = item
            .priority
            .map(|p| {
                i32::try_from(p).ok().filter(|p| *p >= 0).ok_or_else(|| {
                    ApiError::invalid(
                        format!("{path}priority"),
                        format!("{p} is out of range; use 0 to 2147483647 (lower runs first)"),
                    )
                })
            })
            .transpose()?;
        let scheduled_at = match (item.delay_ms, item.scheduled_at) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    format!("{path}delayMs"),
                    "give delayMs or scheduledAt, not both",
                ));
            }
            (Some(delay), None) => i64::try_from(delay)
                .ok()
                .and_then(chrono::Duration::try_milliseconds)
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| ApiError::invalid(format!("{path}delayMs"), "is too large"))?,
            (None, Some(at)) => at.max(now),
            (None, None) => now,
        };
        if let Some(key) = &item.idempotency_key
            && (key.is_empty() || key.chars().count() > 256)
        {
            return Err(ApiError::invalid(
                format!("{path}idempotencyKey"),
                "must be 1 to 256 characters",
            ));
        }
        runs.push(storage::runs::NewRun {
            id: RunId::new().0,
            task_id: item.task_id,
            priority,
            scheduled_at,
            input: item.input,
            metadata: item.metadata,
            idempotency_key: item.idempotency_key,
        });
    }
    Ok(runs)
}

/// Inserts the runs (all or none) and wakes this orchestrator's scheduler
/// at once (other replicas hear the NOTIFY). Returns what happened to each
/// run, in order: new, or a duplicate of the run holding its idempotency
/// key.
async fn enqueue(
    state: &AppState,
    runs: &[storage::runs::NewRun],
    now: DateTime<Utc>,
) -> Result<Vec<Enqueued>, ApiError> {
    let default_ttl = i64::try_from(state.config.idempotency_ttl.as_secs()).unwrap_or(i64::MAX);
    let outcomes = storage::runs::enqueue(&state.pool, runs, now, default_ttl).await?;
    if outcomes.len() != runs.len() {
        let mut ids: Vec<String> = runs.iter().map(|r| r.task_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let unknown = storage::tasks::unknown(&state.pool, &ids).await?;
        let id = unknown.into_iter().next().unwrap_or_default();
        return Err(ApiError::NotFound { what: "task", id });
    }
    if outcomes.iter().any(|o| matches!(o, Enqueued::New { .. })) {
        state.wake_scheduler.notify_one();
    }
    Ok(outcomes)
}

/// A duplicate's answer: the run that holds the key, as it is now, with
/// its result if it has one.
async fn duplicate_view(state: &AppState, run_id: uuid::Uuid) -> Result<Value, ApiError> {
    let run = storage::runs::get(&state.pool, run_id).await?;
    let mut view = match &run {
        Some(run) => {
            let mut view = runs_view::summary(run);
            if let Some(Value::Object(result)) = &run.result {
                view.extend(result.clone());
            }
            Value::Object(view)
        }
        None => json!({ "runId": RunId(run_id) }),
    };
    view["duplicate"] = json!(true);
    Ok(view)
}

async fn queue_task(
    State(state): State<AppState>,
    ApiJson(item): ApiJson<QueueTask>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = Utc::now();
    let runs = prepare(vec![(String::new(), item)], now)?;
    let outcomes = enqueue(&state, &runs, now).await?;
    let run = &runs[0];
    match outcomes.first() {
        Some(Enqueued::Duplicate { run_id }) => {
            Ok((StatusCode::OK, Json(duplicate_view(&state, *run_id).await?)))
        }
        Some(Enqueued::New { priority }) => Ok((
            StatusCode::CREATED,
            Json(json!({
                "runId": RunId(run.id),
                "status": RunState::Queued.as_str(),
                "taskId": run.task_id,
                "priority": priority,
                "scheduledAt": run.scheduled_at,
            })),
        )),
        None => Err(ApiError::NotFound {
            what: "task",
            id: run.task_id.clone(),
        }),
    }
}

async fn queue_batch(
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<QueueBatch>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if batch.tasks.is_empty() {
        return Err(ApiError::invalid(
            "tasks",
            "is empty; give at least one task",
        ));
    }
    if batch.tasks.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "tasks",
            format!(
                "has {} items; at most {MAX_BATCH} per request",
                batch.tasks.len()
            ),
        ));
    }
    let now = Utc::now();
    let items = batch
        .tasks
        .into_iter()
        .enumerate()
        .map(|(index, item)| (format!("tasks[{index}]."), item))
        .collect();
    let runs = prepare(items, now)?;
    let outcomes = enqueue(&state, &runs, now).await?;
    let mut results = Vec::with_capacity(runs.len());
    let mut queued = 0;
    for (run, outcome) in runs.iter().zip(&outcomes) {
        results.push(match outcome {
            Enqueued::New { .. } => {
                queued += 1;
                json!({ "runId": RunId(run.id), "taskId": run.task_id, "status": RunState::Queued.as_str() })
            }
            Enqueued::Duplicate { run_id } => duplicate_view(&state, *run_id).await?,
        });
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "queued": queued, "results": results })),
    ))
}

/// `GET /api/queue/status`: the spec's counters. `pending` is queued and
/// due, `waiting` is queued for later, `failed` is waiting for a retry,
/// `dlq` is dead; `cancelled` is added.
async fn queue_status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let counts = storage::runs::counts(&state.pool, Utc::now()).await?;
    Ok(Json(counts_json(&counts)))
}

/// The spec's queue statistics (`GET /api/queue/status`).
pub(super) fn counts_json(counts: &storage::runs::Counts) -> Value {
    json!({
        "pending": counts.pending,
        "running": counts.running,
        "waiting": counts.waiting,
        "completed": counts.succeeded,
        "failed": counts.awaiting_retry,
        "dlq": counts.dead,
        "cancelled": counts.cancelled,
        "oldestPending": counts.oldest_pending,
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ItemsQuery {
    /// Comma-separated states.
    status: Option<String>,
    task_id: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    until: Option<DateTime<Utc>>,
    limit: Option<i64>,
    offset: Option<i64>,
}

fn parse_states(text: &str) -> Result<Vec<RunState>, ApiError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| match name {
            // The spec's queue-status names, accepted as aliases.
            "pending" => Ok(RunState::Queued),
            "completed" => Ok(RunState::Succeeded),
            "failed" => Ok(RunState::AwaitingRetry),
            "dlq" => Ok(RunState::Dead),
            _ => RunState::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!("{name:?} is not a state; use queued, running, awaiting_retry, succeeded, dead or cancelled"),
                )
            }),
        })
        .collect()
}

async fn queue_items(
    State(state): State<AppState>,
    query: Result<Query<ItemsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let (limit, offset) = page(query.limit, query.offset)?;
    let filter = storage::runs::ListFilter {
        states: query
            .status
            .as_deref()
            .map(parse_states)
            .transpose()?
            .unwrap_or_default(),
        task_id: query.task_id,
        created_after: query.since,
        created_before: query.until,
    };
    let (rows, total) = storage::runs::list(&state.pool, &filter, limit, offset).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|run| Value::Object(runs_view::summary(run)))
        .collect();
    Ok(Json(
        json!({ "items": items, "total": total, "limit": limit, "offset": offset }),
    ))
}

/// A query string that does not parse, as a 400.
pub(super) fn query_error(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::MalformedJson {
        field: None,
        message: format!("query string: {}", rejection.body_text()),
    }
}

/// Checks `limit` (1–1000, default 50) and `offset` (0 or more, default 0).
pub(super) fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::invalid("offset", "must be 0 or more"));
    }
    Ok((limit, offset))
}

async fn task_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run_id = parse_run_id("id", &id)?;
    let run = storage::runs::get(&state.pool, run_id.0)
        .await?
        .ok_or(ApiError::NotFound {
            what: "task run",
            id,
        })?;
    let attempts = storage::attempts::of_runs(&state.pool, &[run_id.0]).await?;
    Ok(Json(runs_view::detail(&run, &attempts)))
}
