//! Cron schedules of pipelines and standalone tasks:
//!
//! - `POST /api/schedules` creates one: `{"id"?, "pipelineId" | "taskId",
//!   "cron", "input"?, "missed"?, "enabled"?}`;
//! - `GET /api/schedules`, `GET /api/schedules/{id}` show them with their
//!   next fire times;
//! - `DELETE /api/schedules/{id}` removes one.
//!
//! Cron expressions have five fields (minute first) or six (seconds
//! first), or an alias such as `@hourly`, and are read in UTC. Firing is
//! `scheduler::schedule_round`: once per tick across every replica, with
//! the missed-ticks policy of the schedule after downtime.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use pipeweave_protocol::wire::INLINE_LIMIT_BYTES;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, BadRequest, Conflict, NotFound};
use super::json::ApiJson;
use crate::scheduler::{next_tick, parse_cron};
use crate::storage;
use crate::storage::schedules::{MissedTicks, ScheduleRow};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_schedule, list_schedules))
        .routes(routes!(get_schedule, delete_schedule))
}

/// A schedule to create: exactly one of `pipelineId` and `taskId`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewSchedule {
    /// Its id; `sch_` and random hex digits when left out.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")]
    id: Option<String>,
    /// The pipeline it triggers.
    pipeline_id: Option<String>,
    /// The standalone task it enqueues.
    task_id: Option<String>,
    /// When: five fields (`0 9 * * *`), six with seconds first, or an alias
    /// (`@hourly`), in UTC.
    #[schema(example = "0 9 * * *", max_length = 200)]
    cron: String,
    /// The input of each run (at most 64 KiB of JSON); `null` when left
    /// out.
    #[serde(default)]
    input: Value,
    /// After downtime: `run-once` (the default) fires once for the ticks
    /// missed, `skip` fires nothing for them.
    missed: Option<MissedTicks>,
    /// Whether it fires; `true` when left out.
    enabled: Option<bool>,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ScheduleView {
    /// Its id.
    id: String,
    /// The pipeline it triggers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_id: Option<String>,
    /// The task it enqueues.
    #[serde(skip_serializing_if = "Option::is_none")]
    task_id: Option<String>,
    /// Its cron expression.
    cron: String,
    /// The input of each run.
    input: Value,
    /// Its missed-ticks policy.
    missed: MissedTicks,
    /// Whether it fires.
    enabled: bool,
    /// Its next tick.
    next_fire_at: DateTime<Utc>,
    /// Its last fired tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_fired_at: Option<DateTime<Utc>>,
    /// The task run (`trun_…`) or pipeline run (`prun_…`) that tick made.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_run_id: Option<String>,
    /// Why the last due tick made nothing, if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// When it was created.
    created_at: DateTime<Utc>,
}

impl ScheduleView {
    fn of(row: ScheduleRow) -> Self {
        let last_run_id = row.last_run_id.map(|id| {
            if row.pipeline_id.is_some() {
                crate::PipelineRunId(id).to_string()
            } else {
                crate::RunId(id).to_string()
            }
        });
        Self {
            id: row.id,
            pipeline_id: row.pipeline_id,
            task_id: row.task_id,
            cron: row.cron,
            input: row.input,
            missed: row.missed,
            enabled: row.enabled,
            next_fire_at: row.next_fire_at,
            last_fired_at: row.last_fired_at,
            last_run_id,
            last_error: row.last_error,
            created_at: row.created_at,
        }
    }
}

/// `POST /api/schedules`: creates a schedule.
#[utoipa::path(
    post,
    path = "/api/schedules",
    tag = "schedules",
    request_body = NewSchedule,
    responses(
        (status = 201, description = "Created, with its next fire time", body = ScheduleView),
        BadRequest,
        (status = 404, description = "The pipeline or task does not exist", body = super::error::ErrorBody),
        Conflict,
    )
)]
async fn create_schedule(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<NewSchedule>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let id = request
        .id
        .unwrap_or_else(|| format!("sch_{}", uuid::Uuid::new_v4().simple()));
    super::check_id("id", &id)?;
    match (&request.pipeline_id, &request.task_id) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::invalid(
                "pipelineId",
                "give exactly one of pipelineId and taskId",
            ));
        }
        (Some(pipeline), None) => {
            if storage::pipelines::get(&state.pool, pipeline)
                .await?
                .is_none()
            {
                return Err(ApiError::NotFound {
                    what: "pipeline",
                    id: pipeline.clone(),
                });
            }
        }
        (None, Some(task)) => {
            if !storage::tasks::unknown(&state.pool, std::slice::from_ref(task))
                .await?
                .is_empty()
            {
                return Err(ApiError::NotFound {
                    what: "task",
                    id: task.clone(),
                });
            }
        }
    }
    if request.cron.chars().count() > 200 {
        return Err(ApiError::invalid("cron", "must be at most 200 characters"));
    }
    let cron = parse_cron(&request.cron).map_err(|reason| {
        ApiError::invalid(
            "cron",
            format!("{reason}; use five fields (`0 9 * * *`), six with seconds first, or an alias such as `@hourly`"),
        )
    })?;
    let now = Utc::now();
    let next_fire_at =
        next_tick(&cron, now).ok_or_else(|| ApiError::invalid("cron", "never fires after now"))?;
    let input_bytes = serde_json::to_vec(&request.input).map_or(0, |bytes| bytes.len());
    if input_bytes > INLINE_LIMIT_BYTES {
        return Err(ApiError::invalid(
            "input",
            format!(
                "is {input_bytes} bytes of JSON; a schedule's input is at most {INLINE_LIMIT_BYTES}"
            ),
        ));
    }
    let row = ScheduleRow {
        id,
        pipeline_id: request.pipeline_id,
        task_id: request.task_id,
        cron: request.cron,
        input: request.input,
        missed: request.missed.unwrap_or_default(),
        enabled: request.enabled.unwrap_or(true),
        next_fire_at,
        last_fired_at: None,
        last_run_id: None,
        last_error: None,
        created_at: now,
    };
    if !storage::schedules::insert(&state.pool, &row).await? {
        return Err(ApiError::Conflict(format!(
            "schedule {:?} already exists; delete it first to change it",
            row.id
        )));
    }
    tracing::info!(schedule = %row.id, cron = %row.cron, next = %row.next_fire_at, "schedule created");
    Ok((StatusCode::CREATED, Json(ScheduleView::of(row))))
}

/// `GET /api/schedules`: every schedule, by id.
#[utoipa::path(
    get,
    path = "/api/schedules",
    tag = "schedules",
    responses((status = 200, description = "The schedules", body = Vec<ScheduleView>))
)]
async fn list_schedules(
    State(state): State<AppState>,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    let rows = storage::schedules::list(&state.pool).await?;
    Ok(Json(rows.into_iter().map(ScheduleView::of).collect()))
}

/// `GET /api/schedules/{id}`: one schedule.
#[utoipa::path(
    get,
    path = "/api/schedules/{id}",
    tag = "schedules",
    params(("id" = String, Path, description = "The schedule")),
    responses((status = 200, description = "The schedule", body = ScheduleView), NotFound)
)]
async fn get_schedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    storage::schedules::get(&state.pool, &id)
        .await?
        .map(|row| Json(ScheduleView::of(row)))
        .ok_or(ApiError::NotFound {
            what: "schedule",
            id,
        })
}

/// `DELETE /api/schedules/{id}`: removes a schedule; runs it made stay.
#[utoipa::path(
    delete,
    path = "/api/schedules/{id}",
    tag = "schedules",
    params(("id" = String, Path, description = "The schedule")),
    responses((status = 204, description = "Deleted"), NotFound)
)]
async fn delete_schedule(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if storage::schedules::delete(&state.pool, &id).await? {
        tracing::info!(schedule = %id, "schedule deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            what: "schedule",
            id,
        })
    }
}
