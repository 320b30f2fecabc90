//! The dead-letter queue API, on the dead runs themselves:
//!
//! - `GET /api/dlq` lists dead runs not retried yet (`taskId`,
//!   `pipelineId`, `since`, `until` on the time of death; `limit`,
//!   `offset`);
//! - `GET /api/dlq/{id}` shows one with its input and every attempt (error
//!   and code hash), and the run that retried it, if any;
//! - `POST /api/dlq/{id}/retry` enqueues a new run of it on the task's
//!   current code, as the spec says, or with `{"pinCodeHash": true}` on the
//!   code of the failed attempt (WebAssembly tasks: a host fetches that
//!   module by its hash);
//! - `POST /api/dlq/retry-all` retries every one, of a task, of a
//!   pipeline or of all;
//! - a retried task run of a pipeline resumes its pipeline run (see
//!   `storage::dlq::retry`);
//! - `POST /api/dlq/purge` deletes those that died before
//!   `{"olderThan": "7d"}`; the scheduler purges past `DLQ_RETENTION_DAYS`
//!   on its own.
//!
//! An entry's id is `dlq_` and the run's 32 hex digits; the run's own
//! `trun_` id is accepted too.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, BadRequest, Conflict, NotFound};
use super::json::{ApiJson, OptionalApiJson};
use super::queue::{Page, page, query_error};
use super::runs_view::{AttemptView, RunInput};
use crate::storage::runs::RunRow;
use crate::storage::{self, RunState, Runtime};
use crate::{PipelineRunId, RunId};

/// Most dead runs retried per statement by `retry-all`.
const RETRY_BATCH: i64 = 1000;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(retry_all))
        .routes(routes!(purge))
        .routes(routes!(show))
        .routes(routes!(retry))
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

/// A dead run as the spec lists it; `error` is the message, and the rest
/// of the error (code, reason) follows as extensions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DlqEntry {
    /// `dlq_` and the run's 32 hex digits.
    #[schema(example = "dlq_019ac2a1f3e27c55a1b2c3d4e5f60718")]
    id: String,
    /// The dead run.
    task_run_id: RunId,
    /// Its task.
    task_id: String,
    /// Its pipeline run, if it ran in one; retrying it resumes that run.
    pipeline_run_id: Option<PipelineRunId>,
    /// The code version of its last attempt.
    code_version: Option<i32>,
    /// The code hash of its last attempt.
    code_hash: Option<String>,
    /// The last attempt's error message.
    error: Option<Value>,
    /// The last attempt's error code (`TIMEOUT`, …).
    error_code: Option<Value>,
    /// Why the last attempt failed, when a PipeWeave host decided it.
    error_reason: Option<Value>,
    /// How many attempts it had.
    attempts: i32,
    /// When it died.
    failed_at: Option<DateTime<Utc>>,
    /// When it was enqueued.
    created_at: DateTime<Utc>,
    #[serde(flatten)]
    input: RunInput,
    /// The caller's data from the enqueue.
    metadata: Option<Value>,
}

impl DlqEntry {
    fn of(run: &RunRow) -> Self {
        let error = run.error.as_ref();
        let part = |key: &str| error.and_then(|e| e.get(key)).cloned();
        Self {
            id: entry_id(run.id),
            task_run_id: RunId(run.id),
            task_id: run.task_id.clone(),
            pipeline_run_id: run.pipeline_run_id.map(PipelineRunId),
            code_version: run.code_version,
            code_hash: run.code_hash.clone(),
            error: part("message"),
            error_code: part("code"),
            error_reason: part("reason"),
            attempts: run.attempt,
            failed_at: run.finished_at,
            created_at: run.created_at,
            input: RunInput::of(run),
            metadata: run.metadata.clone(),
        }
    }
}

/// A dead run with its whole error and every attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DlqEntryDetail {
    #[serde(flatten)]
    entry: DlqEntry,
    /// The last attempt's whole error.
    error_detail: Option<Value>,
    /// Every attempt, oldest first, with its error and code hash.
    attempt_history: Vec<AttemptView>,
    /// The run that retried it, if it was retried.
    retried_as: Option<RunId>,
}

/// Which dead runs `GET /api/dlq` lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only dead runs of this task.
    task_id: Option<String>,
    /// Only dead task runs of this pipeline's runs.
    pipeline_id: Option<String>,
    /// Died at or after (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Died before (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// 1 to 1000; 50 when left out.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// 0 or more; 0 when left out.
    #[param(minimum = 0)]
    offset: Option<i64>,
}

/// `GET /api/dlq`: dead runs not retried yet, latest death first.
#[utoipa::path(
    get,
    path = "/api/dlq",
    tag = "dlq",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of dead runs", body = Page<DlqEntry>),
        BadRequest,
    )
)]
async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<DlqEntry>>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let (limit, offset) = page(query.limit, query.offset)?;
    let filter = storage::dlq::DlqFilter {
        task_id: query.task_id,
        since: query.since,
        until: query.until,
        pipeline_id: query.pipeline_id,
    };
    let (rows, total) = storage::dlq::list(&state.pool, &filter, limit, offset).await?;
    Ok(Json(Page {
        items: rows.iter().map(DlqEntry::of).collect(),
        total,
        limit,
        offset,
    }))
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

/// `GET /api/dlq/{id}`: one dead run with its input and every attempt.
#[utoipa::path(
    get,
    path = "/api/dlq/{id}",
    tag = "dlq",
    params(("id" = String, Path, description = "The entry (`dlq_…`) or its run (`trun_…`)", pattern = "^(dlq|trun)_[0-9a-fA-F]{32}$")),
    responses(
        (status = 200, description = "The dead run", body = DlqEntryDetail),
        BadRequest,
        NotFound,
    )
)]
async fn show(
    State(state): State<AppState>,
    Path(text): Path<String>,
) -> Result<Json<DlqEntryDetail>, ApiError> {
    let id = parse_entry_id(&text)?;
    let run = dead_run(&state, id, &text).await?;
    let attempts = storage::attempts::of_runs(&state.pool, &[id]).await?;
    let retried_as = storage::dlq::retried_as(&state.pool, id).await?;
    Ok(Json(DlqEntryDetail {
        entry: DlqEntry::of(&run),
        error_detail: run.error.clone(),
        attempt_history: attempts.iter().map(AttemptView::of).collect(),
        retried_as: retried_as.map(RunId),
    }))
}

/// The optional body of `POST /api/dlq/{id}/retry`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryRequest {
    /// Run the code of the failed attempt instead of the task's current
    /// code.
    #[serde(default)]
    pin_code_hash: bool,
}

/// A dead run enqueued again.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Retried {
    /// The new run.
    new_run_id: RunId,
    /// Always `queued`.
    status: RunState,
    /// The code version it will run.
    code_version: Option<i32>,
    /// Whether it runs the failed attempt's code rather than the current.
    code_hash_pinned: bool,
}

/// `POST /api/dlq/{id}/retry`: enqueues the dead run again as a new run.
#[utoipa::path(
    post,
    path = "/api/dlq/{id}/retry",
    tag = "dlq",
    params(("id" = String, Path, description = "The entry (`dlq_…`) or its run (`trun_…`)", pattern = "^(dlq|trun)_[0-9a-fA-F]{32}$")),
    request_body(content = Option<RetryRequest>, description = "Optional"),
    responses(
        (status = 201, description = "A new run was enqueued", body = Retried, links(
            ("GetRun" = (operation_id = "task_run", parameters(("id" = "$response.body#/newRunId")))),
        )),
        BadRequest,
        NotFound,
        Conflict,
    )
)]
async fn retry(
    State(state): State<AppState>,
    Path(text): Path<String>,
    OptionalApiJson(request): OptionalApiJson<RetryRequest>,
) -> Result<(axum::http::StatusCode, Json<Retried>), ApiError> {
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
        Json(Retried {
            new_run_id: RunId(retried.run_id),
            status: RunState::Queued,
            code_version,
            code_hash_pinned: request.pin_code_hash,
        }),
    ))
}

/// The optional body of `POST /api/dlq/retry-all`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryAllRequest {
    /// Only dead runs of this task.
    task_id: Option<String>,
    /// Only dead task runs of this pipeline's runs; each resumes its
    /// pipeline run.
    pipeline_id: Option<String>,
}

/// What `retry-all` did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct RetriedAll {
    /// How many dead runs were enqueued again.
    retried: usize,
    /// The task asked for, if any.
    task_id: Option<String>,
    /// The pipeline asked for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_id: Option<String>,
}

/// `POST /api/dlq/retry-all`: enqueues every dead run not retried yet, of
/// one task or of all, on the current code.
#[utoipa::path(
    post,
    path = "/api/dlq/retry-all",
    tag = "dlq",
    request_body(content = Option<RetryAllRequest>, description = "Optional"),
    responses((status = 200, description = "The dead runs were enqueued again", body = RetriedAll))
)]
async fn retry_all(
    State(state): State<AppState>,
    OptionalApiJson(request): OptionalApiJson<RetryAllRequest>,
) -> Result<Json<RetriedAll>, ApiError> {
    let mut retried = 0usize;
    loop {
        let dead = storage::dlq::unretried(
            &state.pool,
            request.task_id.as_deref(),
            request.pipeline_id.as_deref(),
            RETRY_BATCH,
        )
        .await?;
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
    Ok(Json(RetriedAll {
        retried,
        task_id: request.task_id,
        pipeline_id: request.pipeline_id,
    }))
}

/// The body of `POST /api/dlq/purge`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PurgeRequest {
    /// Delete dead runs that died longer ago than this: `7d`, `12h`,
    /// `30m`, `1w`…
    #[schema(example = "7d")]
    older_than: String,
}

/// What a purge deleted.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Purged {
    /// How many dead runs were deleted.
    purged: i64,
    /// They died before this.
    before: DateTime<Utc>,
}

/// `POST /api/dlq/purge`: deletes dead runs older than a duration.
#[utoipa::path(
    post,
    path = "/api/dlq/purge",
    tag = "dlq",
    request_body = PurgeRequest,
    responses(
        (status = 200, description = "The old dead runs were deleted", body = Purged),
        BadRequest,
    )
)]
async fn purge(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PurgeRequest>,
) -> Result<Json<Purged>, ApiError> {
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
    Ok(Json(Purged { purged, before }))
}
