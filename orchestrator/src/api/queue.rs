//! The task queue API of the spec: enqueue one run or many, queue
//! statistics, queue items with filters, and one run in full.
//!
//! - `POST /api/queue/task`, `POST /api/queue/batch`
//! - `GET /api/queue/status`, `GET /api/queue/items`
//! - `GET /api/task-runs/:id`
//!
//! A batch is all or nothing: one bad item fails the request with the
//! item's path (`tasks[3].priority`) and writes no row.
//!
//! An input larger than [`INLINE_LIMIT_BYTES`] of JSON is written to the
//! default storage backend at `standalone/{runId}/input.json` before its
//! row, and the row keeps only the path (the spec's `inputPath`); hosts
//! and workers read it through their storage token. Objects written for
//! runs that end up not enqueued (a duplicate, an unknown task, a failed
//! insert) are deleted again.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use pipeweave_protocol::wire::INLINE_LIMIT_BYTES;
use pipeweave_storage::object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, BadRequest, NotFound};
use super::json::ApiJson;
use super::runs_view::{DuplicateRun, RunDetail, RunSummary};
use super::{AppState, parse_run_id};
use crate::RunId;
use crate::storage::runs::Enqueued;
use crate::storage::{self, RunState};

/// Most runs in one batch request.
const MAX_BATCH: usize = 10_000;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(queue_task))
        .routes(routes!(queue_batch))
        .routes(routes!(queue_status))
        .routes(routes!(queue_items))
        .routes(routes!(task_run))
}

/// One run to enqueue, as the spec's `POST /api/queue/task` takes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QueueTask {
    /// The task to run; it must be registered.
    task_id: String,
    /// The task's input; `null` when left out.
    #[serde(default)]
    input: Value,
    /// Overrides the task's default priority: 0 to 2147483647, lower runs
    /// first.
    #[schema(minimum = 0, maximum = 2147483647)]
    priority: Option<i64>,
    /// The caller's own data, kept with the run and shown with it.
    metadata: Option<Value>,
    /// Do not start before this many milliseconds from now.
    delay_ms: Option<u64>,
    /// Do not start before this instant (RFC 3339).
    scheduled_at: Option<DateTime<Utc>>,
    /// While a run of this task with this key is live (its TTL has not
    /// passed and it has not ended dead or cancelled), enqueuing again
    /// returns that run instead of a new one.
    #[schema(min_length = 1, max_length = 256)]
    idempotency_key: Option<String>,
}

/// Runs to enqueue together: all of them or, if one is bad, none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct QueueBatch {
    /// 1 to 10,000 runs.
    tasks: Vec<QueueTask>,
}

/// A run just enqueued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct QueuedRun {
    /// The new run.
    run_id: RunId,
    /// Always `queued`.
    status: RunState,
    /// Its task.
    task_id: String,
    /// Its priority: the request's, or the task's default.
    priority: i32,
    /// Not started before this.
    scheduled_at: DateTime<Utc>,
    /// Where its input is stored, when it was too large to keep inline
    /// (over 64 KiB of JSON); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_path: Option<String>,
}

/// What became of each run of a batch, in order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum BatchItem {
    /// A new run.
    Queued(QueuedRun),
    /// The run that already holds this idempotency key.
    Duplicate(Box<DuplicateRun>),
}

/// The answer to a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct BatchQueued {
    /// How many new runs were enqueued (duplicates are not counted).
    queued: usize,
    /// One item per run of the request, in order.
    results: Vec<BatchItem>,
}

/// Runs ready to insert, and the inputs to store first.
struct Prepared {
    runs: Vec<storage::runs::NewRun>,
    /// `(index in runs, serialized input)` of inputs stored by reference.
    large_inputs: Vec<(usize, PutPayload)>,
}

/// Checks the items and turns them into rows; `path` prefixes field names.
/// Inputs over [`INLINE_LIMIT_BYTES`] get a path on `backend_id`.
fn prepare(
    items: Vec<(String, QueueTask)>,
    now: DateTime<Utc>,
    backend_id: &str,
) -> Result<Prepared, ApiError> {
    let mut runs = Vec::with_capacity(items.len());
    let mut large_inputs = Vec::new();
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
        let id = RunId::new();
        let serialized = serde_json::to_vec(&item.input)
            .map_err(|error| ApiError::invalid(format!("{path}input"), error.to_string()))?;
        let by_reference = serialized.len() > INLINE_LIMIT_BYTES;
        if by_reference {
            large_inputs.push((runs.len(), PutPayload::from(serialized)));
        }
        runs.push(storage::runs::NewRun {
            id: id.0,
            task_id: item.task_id,
            priority,
            scheduled_at,
            input: item.input,
            input_path: by_reference
                .then(|| pipeweave_storage::layout::standalone_input(&id.to_string())),
            backend_id: by_reference.then(|| backend_id.to_owned()),
            metadata: item.metadata,
            idempotency_key: item.idempotency_key,
        });
    }
    Ok(Prepared { runs, large_inputs })
}

/// How many inputs are written to storage at once.
const INPUT_WRITES_IN_FLIGHT: usize = 8;

/// Writes the large inputs to `store`; if one fails, deletes the others
/// and fails.
async fn store_inputs(store: &Arc<dyn ObjectStore>, prepared: &Prepared) -> Result<(), ApiError> {
    let mut writes = Vec::with_capacity(prepared.large_inputs.len());
    for (index, payload) in &prepared.large_inputs {
        let Some(path) = prepared.runs[*index].input_path.clone() else {
            continue;
        };
        let (store, payload) = (store.clone(), payload.clone());
        writes.push(async move {
            let outcome = store.put(&path.as_str().into(), payload).await.map(drop);
            (path, outcome)
        });
    }
    let outcomes: Vec<_> = futures::stream::iter(writes)
        .buffer_unordered(INPUT_WRITES_IN_FLIGHT)
        .collect()
        .await;
    let mut written = Vec::new();
    let mut failure = None;
    for (path, outcome) in outcomes {
        match outcome {
            Ok(()) => written.push(path),
            Err(error) => {
                tracing::warn!(%path, %error, "cannot store an input");
                failure.get_or_insert(error);
            }
        }
    }
    match failure {
        None => Ok(()),
        Some(error) => {
            delete_inputs(store, written.iter()).await;
            Err(ApiError::Storage(error.into()))
        }
    }
}

/// Deletes stored inputs of runs that were not enqueued; a failure is
/// logged, since the enqueue's answer does not depend on it.
async fn delete_inputs(store: &Arc<dyn ObjectStore>, paths: impl Iterator<Item = &String>) {
    for path in paths {
        if let Err(error) = store.delete(&path.as_str().into()).await {
            tracing::warn!(%path, %error, "cannot delete the stored input of a run not enqueued");
        }
    }
}

/// Inserts the runs (all or none) and wakes this orchestrator's scheduler
/// at once (other replicas hear the NOTIFY). Returns what happened to each
/// run, in order: new, or a duplicate of the run holding its idempotency
/// key.
async fn enqueue(
    state: &AppState,
    prepared: &Prepared,
    now: DateTime<Utc>,
) -> Result<Vec<Enqueued>, ApiError> {
    let (_, store) = state.stores.default_store();
    store_inputs(store, prepared).await?;
    let stored_inputs = || prepared.runs.iter().filter_map(|r| r.input_path.as_ref());
    let runs = &prepared.runs;
    let default_ttl = i64::try_from(state.config.idempotency_ttl.as_secs()).unwrap_or(i64::MAX);
    let outcomes = match storage::runs::enqueue(&state.pool, runs, now, default_ttl).await {
        Ok(outcomes) => outcomes,
        Err(error) => {
            delete_inputs(store, stored_inputs()).await;
            return Err(error.into());
        }
    };
    if outcomes.len() != runs.len() {
        delete_inputs(store, stored_inputs()).await;
        let mut ids: Vec<String> = runs.iter().map(|r| r.task_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let unknown = storage::tasks::unknown(&state.pool, &ids).await?;
        let id = unknown.into_iter().next().unwrap_or_default();
        return Err(ApiError::NotFound { what: "task", id });
    }
    let duplicates_inputs = runs
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| matches!(outcome, Enqueued::Duplicate { .. }))
        .filter_map(|(run, _)| run.input_path.as_ref());
    delete_inputs(store, duplicates_inputs).await;
    if outcomes.iter().any(|o| matches!(o, Enqueued::New { .. })) {
        state.wake_scheduler.notify_one();
    }
    Ok(outcomes)
}

/// A duplicate's answer: the run that holds the key, as it is now, with
/// its result if it has one.
async fn duplicate(state: &AppState, run_id: uuid::Uuid) -> Result<Box<DuplicateRun>, ApiError> {
    let run = storage::runs::get(&state.pool, run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "task run",
            id: RunId(run_id).to_string(),
        })?;
    Ok(Box::new(DuplicateRun::of(&run)))
}

/// The answer to a single enqueue: a new run (201) or the run holding its
/// idempotency key (200).
enum Enqueue {
    Queued(QueuedRun),
    Duplicate(Box<DuplicateRun>),
}

impl axum::response::IntoResponse for Enqueue {
    fn into_response(self) -> axum::response::Response {
        match self {
            Self::Queued(run) => (StatusCode::CREATED, Json(run)).into_response(),
            Self::Duplicate(run) => (StatusCode::OK, Json(run)).into_response(),
        }
    }
}

/// `POST /api/queue/task`: enqueues one run.
#[utoipa::path(
    post,
    path = "/api/queue/task",
    tag = "queue",
    request_body = QueueTask,
    responses(
        (status = 201, description = "A new run was enqueued", body = QueuedRun, links(
            ("GetRun" = (operation_id = "task_run", parameters(("id" = "$response.body#/runId")))),
            ("CancelRun" = (operation_id = "cancel", parameters(("id" = "$response.body#/runId")))),
        )),
        (status = 200, description = "A live run of this task holds the idempotency key: that run, with its result if it has one", body = DuplicateRun),
        BadRequest,
        (status = 404, description = "The task is not registered", body = super::error::ErrorBody),
    )
)]
async fn queue_task(
    State(state): State<AppState>,
    ApiJson(item): ApiJson<QueueTask>,
) -> Result<Enqueue, ApiError> {
    let now = Utc::now();
    let prepared = prepare(vec![(String::new(), item)], now, default_backend_id(&state))?;
    let outcomes = enqueue(&state, &prepared, now).await?;
    let run = &prepared.runs[0];
    match outcomes.first() {
        Some(Enqueued::Duplicate { run_id }) => {
            Ok(Enqueue::Duplicate(duplicate(&state, *run_id).await?))
        }
        Some(&Enqueued::New { priority }) => Ok(Enqueue::Queued(QueuedRun::new(run, priority))),
        None => Err(ApiError::NotFound {
            what: "task",
            id: run.task_id.clone(),
        }),
    }
}

impl QueuedRun {
    fn new(run: &storage::runs::NewRun, priority: i32) -> Self {
        Self {
            run_id: RunId(run.id),
            status: RunState::Queued,
            task_id: run.task_id.clone(),
            priority,
            scheduled_at: run.scheduled_at,
            input_path: run.input_path.clone(),
        }
    }
}

fn default_backend_id(state: &AppState) -> &str {
    &state.stores.default_store().0.id
}

/// `POST /api/queue/batch`: enqueues many runs in one transaction.
#[utoipa::path(
    post,
    path = "/api/queue/batch",
    tag = "queue",
    request_body = QueueBatch,
    responses(
        (status = 201, description = "Every run was enqueued, or found as a duplicate", body = BatchQueued),
        BadRequest,
        (status = 404, description = "A task is not registered; nothing was enqueued", body = super::error::ErrorBody),
    )
)]
async fn queue_batch(
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<QueueBatch>,
) -> Result<(StatusCode, Json<BatchQueued>), ApiError> {
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
    let prepared = prepare(items, now, default_backend_id(&state))?;
    let outcomes = enqueue(&state, &prepared, now).await?;
    let mut results = Vec::with_capacity(prepared.runs.len());
    let mut queued = 0;
    for (run, outcome) in prepared.runs.iter().zip(&outcomes) {
        results.push(match *outcome {
            Enqueued::New { priority } => {
                queued += 1;
                BatchItem::Queued(QueuedRun::new(run, priority))
            }
            Enqueued::Duplicate { run_id } => {
                BatchItem::Duplicate(duplicate(&state, run_id).await?)
            }
        });
    }
    Ok((StatusCode::CREATED, Json(BatchQueued { queued, results })))
}

/// Runs by state, with the spec's names.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct QueueCounts {
    /// Queued and due.
    pending: i64,
    /// Running.
    running: i64,
    /// Queued for later (a delay or a scheduled time).
    waiting: i64,
    /// Succeeded.
    completed: i64,
    /// Failed, another attempt scheduled.
    failed: i64,
    /// Dead: in the dead-letter queue.
    dlq: i64,
    /// Cancelled.
    cancelled: i64,
    /// When the oldest due run became due.
    oldest_pending: Option<DateTime<Utc>>,
}

impl From<&storage::runs::Counts> for QueueCounts {
    fn from(counts: &storage::runs::Counts) -> Self {
        Self {
            pending: counts.pending,
            running: counts.running,
            waiting: counts.waiting,
            completed: counts.succeeded,
            failed: counts.awaiting_retry,
            dlq: counts.dead,
            cancelled: counts.cancelled,
            oldest_pending: counts.oldest_pending,
        }
    }
}

/// `GET /api/queue/status`: the spec's counters. `pending` is queued and
/// due, `waiting` is queued for later, `failed` is waiting for a retry,
/// `dlq` is dead; `cancelled` is added.
#[utoipa::path(
    get,
    path = "/api/queue/status",
    tag = "queue",
    responses((status = 200, description = "Runs by state", body = QueueCounts))
)]
async fn queue_status(State(state): State<AppState>) -> Result<Json<QueueCounts>, ApiError> {
    let counts = storage::runs::counts(&state.pool, Utc::now()).await?;
    Ok(Json(QueueCounts::from(&counts)))
}

/// Which runs `GET /api/queue/items` lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ItemsQuery {
    /// Comma-separated states: queued, running, awaiting_retry, succeeded,
    /// dead, cancelled (or the spec's pending, completed, failed, dlq).
    status: Option<String>,
    /// Only runs of this task.
    task_id: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// 1 to 1000; 50 when left out.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// 0 or more; 0 when left out.
    #[param(minimum = 0)]
    offset: Option<i64>,
}

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Page<T> {
    /// This page.
    pub(super) items: Vec<T>,
    /// How many match in all.
    pub(super) total: i64,
    /// The page size asked for.
    pub(super) limit: i64,
    /// How many were skipped.
    pub(super) offset: i64,
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

/// `GET /api/queue/items`: runs, newest first, with filters.
#[utoipa::path(
    get,
    path = "/api/queue/items",
    tag = "queue",
    params(ItemsQuery),
    responses(
        (status = 200, description = "A page of runs, newest first", body = Page<RunSummary>),
        BadRequest,
    )
)]
async fn queue_items(
    State(state): State<AppState>,
    query: Result<Query<ItemsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<RunSummary>>, ApiError> {
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
    Ok(Json(Page {
        items: rows.iter().map(RunSummary::of).collect(),
        total,
        limit,
        offset,
    }))
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

/// `GET /api/task-runs/{id}`: one run with its input, result and every
/// attempt.
#[utoipa::path(
    get,
    path = "/api/task-runs/{id}",
    tag = "queue",
    params(("id" = RunId, Path, description = "The run")),
    responses(
        (status = 200, description = "The run", body = RunDetail),
        BadRequest,
        NotFound,
    )
)]
async fn task_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    let run_id = parse_run_id("id", &id)?;
    let run = storage::runs::get(&state.pool, run_id.0)
        .await?
        .ok_or(ApiError::NotFound {
            what: "task run",
            id,
        })?;
    let attempts = storage::attempts::of_runs(&state.pool, &[run_id.0]).await?;
    Ok(Json(RunDetail::of(&run, &attempts)))
}
