//! Pipelines: register one (`PUT /api/pipelines/{id}`), list and read them,
//! validate one without running it (`POST /api/pipelines/{id}/dry-run`),
//! trigger a run (`POST /api/pipelines/{id}/trigger`), and read pipeline
//! runs (`GET /api/runs`, `GET /api/runs/{id}`).
//!
//! A pipeline is the graph its entry tasks span through the tasks'
//! `allowedNext` (see `crate::pipeline`). The spec does not say how a
//! pipeline gets its id; here it is registered under one with its entry
//! tasks, after its tasks, and may list the tasks it should reach so that
//! registration catches a graph that drifted. A trigger validates it again
//! against the tasks registered now and snapshots its structure and code
//! hashes into the run.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use pipeweave_protocol::wire::{INLINE_LIMIT_BYTES, ResultRef};
use pipeweave_storage::object_store::{ObjectStoreExt as _, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, BadRequest, Conflict, NotFound};
use super::json::{ApiJson, OptionalApiJson};
use super::queue::{Page, page, query_error};
use super::runs_view::RunSummary;
use crate::pipeline::{self, Problem, Step, Structure, Validated};
use crate::storage::pipelines::{
    FailureMode, NewPipeline, PipelineRow, PipelineRunRow, PipelineRunState,
};
use crate::storage::runs::RunRow;
use crate::{PipelineRunId, RunId, queue, storage};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pipelines))
        .routes(routes!(register_pipeline, get_pipeline))
        .routes(routes!(dry_run))
        .routes(routes!(trigger))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
}

/// A pipeline to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PipelineDefinition {
    /// The tasks that start with the pipeline's input: 1 to 100.
    entry_tasks: Vec<String>,
    /// The tasks the entries should reach; if given, registration fails
    /// unless they are exactly those.
    tasks: Option<Vec<String>>,
    /// What a run does when a task dies, unless its trigger says:
    /// `fail-fast` (the default), `continue` or `partial-merge`.
    failure_mode: Option<FailureMode>,
    /// What the pipeline is for.
    #[schema(max_length = 1000)]
    description: Option<String>,
}

/// A pipeline as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PipelineView {
    /// Its id.
    id: String,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// Its entry tasks.
    entry_tasks: Vec<String>,
    /// The tasks it should reach, if listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<Vec<String>>,
    /// The default failure mode of its runs.
    failure_mode: FailureMode,
    /// Bumped by each registration that changes it.
    version: i32,
    /// First registered.
    created_at: DateTime<Utc>,
    /// Last registered.
    updated_at: DateTime<Utc>,
}

impl PipelineView {
    fn of(row: PipelineRow) -> Self {
        Self {
            id: row.id,
            description: row.description,
            entry_tasks: row.entry_tasks,
            tasks: row.tasks,
            failure_mode: row.failure_mode,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// A pipeline and how it checks against the tasks registered now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PipelineReport {
    #[serde(flatten)]
    pipeline: PipelineView,
    #[serde(flatten)]
    check: Check,
}

/// A pipeline's validation against the tasks registered now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Check {
    /// Whether it can run now.
    valid: bool,
    /// What stops it, by name (empty when valid).
    problems: Vec<ProblemView>,
    /// The execution plan (empty when invalid).
    plan: Vec<Step>,
    /// Things that do not stop a run but deserve a look.
    warnings: Vec<String>,
    /// The structure a run would snapshot now (absent when invalid).
    #[serde(skip_serializing_if = "Option::is_none")]
    structure: Option<Structure>,
}

/// One problem: what it is, for a program and for a person.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ProblemView {
    #[serde(flatten)]
    problem: Problem,
    /// The problem in words.
    message: String,
}

impl Check {
    fn of(outcome: Result<Validated, Vec<Problem>>) -> Self {
        match outcome {
            Ok(validated) => Self {
                valid: true,
                problems: Vec::new(),
                plan: validated.plan,
                warnings: validated.warnings,
                structure: Some(validated.structure),
            },
            Err(problems) => Self {
                valid: false,
                problems: problems
                    .into_iter()
                    .map(|problem| ProblemView {
                        message: problem.to_string(),
                        problem,
                    })
                    .collect(),
                plan: Vec::new(),
                warnings: Vec::new(),
                structure: None,
            },
        }
    }

    fn problems_text(&self) -> String {
        self.problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Validates a pipeline against the tasks registered now, with which of
/// them a live host or worker runs.
async fn check(
    state: &AppState,
    entry: &[String],
    listed: Option<&[String]>,
) -> Result<Check, ApiError> {
    let mut tasks = storage::pipelines::task_infos(&state.pool).await?;
    let runnable = crate::scheduler::runnable_tasks(state).await?;
    for (id, info) in &mut tasks {
        info.has_target = runnable.contains(id);
    }
    Ok(Check::of(pipeline::validate(entry, listed, &tasks)))
}

async fn find(state: &AppState, id: &str) -> Result<PipelineRow, ApiError> {
    storage::pipelines::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "pipeline",
            id: id.to_owned(),
        })
}

/// `PUT /api/pipelines/{id}`: registers a pipeline, or updates it.
#[utoipa::path(
    put,
    path = "/api/pipelines/{id}",
    tag = "pipelines",
    params(("id" = String, Path, description = "The pipeline's id")),
    request_body = PipelineDefinition,
    responses(
        (status = 200, description = "Registered, with its plan and warnings", body = PipelineReport),
        BadRequest,
    )
)]
async fn register_pipeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(definition): ApiJson<PipelineDefinition>,
) -> Result<Json<PipelineReport>, ApiError> {
    super::check_id("id", &id)?;
    if definition.entry_tasks.is_empty() || definition.entry_tasks.len() > 100 {
        return Err(ApiError::invalid("entryTasks", "must list 1 to 100 tasks"));
    }
    if definition
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1000)
    {
        return Err(ApiError::invalid(
            "description",
            "must be at most 1000 characters",
        ));
    }
    let outcome = check(&state, &definition.entry_tasks, definition.tasks.as_deref()).await?;
    if !outcome.valid {
        return Err(ApiError::invalid("entryTasks", outcome.problems_text()));
    }
    let row = storage::pipelines::upsert(
        &state.pool,
        &NewPipeline {
            id,
            description: definition.description,
            entry_tasks: definition.entry_tasks,
            tasks: definition.tasks,
            failure_mode: definition.failure_mode.unwrap_or_default(),
        },
        Utc::now(),
    )
    .await?;
    tracing::info!(pipeline = %row.id, version = row.version, "pipeline registered");
    Ok(Json(PipelineReport {
        pipeline: PipelineView::of(row),
        check: outcome,
    }))
}

/// `GET /api/pipelines`: every pipeline, by id.
#[utoipa::path(
    get,
    path = "/api/pipelines",
    tag = "pipelines",
    responses((status = 200, description = "The pipelines", body = Vec<PipelineView>))
)]
async fn list_pipelines(
    State(state): State<AppState>,
) -> Result<Json<Vec<PipelineView>>, ApiError> {
    let rows = storage::pipelines::list(&state.pool).await?;
    Ok(Json(rows.into_iter().map(PipelineView::of).collect()))
}

/// `GET /api/pipelines/{id}`: one pipeline, checked against the tasks
/// registered now.
#[utoipa::path(
    get,
    path = "/api/pipelines/{id}",
    tag = "pipelines",
    params(("id" = String, Path, description = "The pipeline")),
    responses(
        (status = 200, description = "The pipeline, its plan and whether it can run now", body = PipelineReport),
        NotFound,
    )
)]
async fn get_pipeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PipelineReport>, ApiError> {
    let row = find(&state, &id).await?;
    let outcome = check(&state, &row.entry_tasks, row.tasks.as_deref()).await?;
    Ok(Json(PipelineReport {
        pipeline: PipelineView::of(row),
        check: outcome,
    }))
}

/// The optional body of a dry run.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DryRunRequest {
    /// The input a run would get; only its size is checked.
    input: Option<Value>,
}

/// What a run would do, without running it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct DryRun {
    /// The pipeline.
    pipeline_id: String,
    #[serde(flatten)]
    check: Check,
    /// Whether the input would be stored (over 64 KiB of JSON) rather
    /// than travel inline.
    input_stored: bool,
    /// The report as the spec's `pipeweave dry-run` prints it.
    text: String,
}

/// `POST /api/pipelines/{id}/dry-run`: validates the pipeline against the
/// tasks and hosts registered now and returns its execution plan; runs
/// nothing.
#[utoipa::path(
    post,
    path = "/api/pipelines/{id}/dry-run",
    tag = "pipelines",
    params(("id" = String, Path, description = "The pipeline")),
    request_body(content = Option<DryRunRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The validation report; `valid` says whether it can run", body = DryRun),
        BadRequest,
        NotFound,
    )
)]
async fn dry_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalApiJson(request): OptionalApiJson<DryRunRequest>,
) -> Result<Json<DryRun>, ApiError> {
    let row = find(&state, &id).await?;
    let outcome = check(&state, &row.entry_tasks, row.tasks.as_deref()).await?;
    let input_stored = request
        .input
        .as_ref()
        .and_then(|input| serde_json::to_vec(input).ok())
        .is_some_and(|bytes| bytes.len() > INLINE_LIMIT_BYTES);
    let text = dry_run_text(&id, &outcome);
    Ok(Json(DryRun {
        pipeline_id: id,
        check: outcome,
        input_stored,
        text,
    }))
}

/// The spec's dry-run report.
fn dry_run_text(id: &str, check: &Check) -> String {
    let mut text = String::new();
    if check.valid {
        text.push_str(&format!("✓ Pipeline '{id}' validated\n\nExecution plan:\n"));
        for (index, step) in check.plan.iter().enumerate() {
            text.push_str(&format!("  {}. {}\n", index + 1, step.text));
        }
    } else {
        text.push_str(&format!("✗ Pipeline '{id}' is not valid\n\nProblems:\n"));
        for problem in &check.problems {
            text.push_str(&format!("  - {}\n", problem.message));
        }
    }
    if !check.warnings.is_empty() {
        text.push_str("\nWarnings:\n");
        for warning in &check.warnings {
            text.push_str(&format!("  - {warning}\n"));
        }
    }
    text
}

/// A trigger, in the spec's shape.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TriggerRequest {
    /// The input every task of the run receives; `null` when left out.
    #[serde(default)]
    input: Value,
    /// Overrides the pipeline's failure mode for this run.
    failure_mode: Option<FailureMode>,
    /// The caller's own data, kept with the run.
    metadata: Option<Value>,
}

/// A task run a trigger enqueued.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct EntryRun {
    /// The task run.
    run_id: RunId,
    /// Its task.
    task_id: String,
}

/// A pipeline run just triggered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Triggered {
    /// The pipeline run.
    pipeline_run_id: PipelineRunId,
    /// The pipeline.
    pipeline_id: String,
    /// The pipeline's version it runs.
    pipeline_version: i32,
    /// Always `running`.
    status: PipelineRunState,
    /// Its failure mode.
    failure_mode: FailureMode,
    /// The entry task runs, enqueued.
    entry_runs: Vec<EntryRun>,
    /// Where its input is stored, when over 64 KiB of JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_path: Option<String>,
}

/// `POST /api/pipelines/{id}/trigger`: starts a pipeline run. Its entry
/// tasks are enqueued at once with the input; each completion enqueues
/// what it selects.
#[utoipa::path(
    post,
    path = "/api/pipelines/{id}/trigger",
    tag = "pipelines",
    params(("id" = String, Path, description = "The pipeline")),
    request_body(content = Option<TriggerRequest>, description = "Optional"),
    responses(
        (status = 201, description = "The pipeline run was created and its entry tasks enqueued", body = Triggered, links(
            ("GetPipelineRun" = (operation_id = "get_run", parameters(("id" = "$response.body#/pipelineRunId")))),
        )),
        BadRequest,
        NotFound,
        Conflict,
    )
)]
async fn trigger(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalApiJson(request): OptionalApiJson<TriggerRequest>,
) -> Result<(StatusCode, Json<Triggered>), ApiError> {
    let run_id = PipelineRunId::new();
    let serialized = serde_json::to_vec(&request.input)
        .map_err(|error| ApiError::invalid("input", error.to_string()))?;
    let (backend, store) = state.stores.default_store();
    let input = if serialized.len() > INLINE_LIMIT_BYTES {
        let path = pipeweave_storage::layout::pipeline_input(&run_id.to_string());
        store
            .put(&path.as_str().into(), PutPayload::from(serialized))
            .await
            .map_err(|error| ApiError::Storage(error.into()))?;
        queue::PipelineInput::Stored {
            path,
            backend_id: backend.id.clone(),
        }
    } else {
        queue::PipelineInput::Inline(request.input)
    };
    let stored_path = match &input {
        queue::PipelineInput::Stored { path, .. } => Some(path.clone()),
        queue::PipelineInput::Inline(_) => None,
    };
    let started = async {
        let mut tx = state.pool.begin().await?;
        let started = queue::trigger_pipeline(
            &mut tx,
            &id,
            run_id,
            input,
            request.failure_mode,
            request.metadata,
            Utc::now(),
        )
        .await?;
        tx.commit().await?;
        Ok::<_, queue::TriggerError>(started)
    }
    .await;
    let started = match started {
        Ok(started) => started,
        Err(error) => {
            if let Some(path) = &stored_path {
                let _ = store.delete(&path.as_str().into()).await;
            }
            return Err(match error {
                queue::TriggerError::NoPipeline(id) => ApiError::NotFound {
                    what: "pipeline",
                    id,
                },
                invalid @ queue::TriggerError::Invalid { .. } => {
                    ApiError::Conflict(invalid.to_string())
                }
                queue::TriggerError::Storage(error) => error.into(),
            });
        }
    };
    state.wake_scheduler.notify_one();
    tracing::info!(pipeline = %id, pipeline_run = %run_id, "pipeline triggered");
    Ok((
        StatusCode::CREATED,
        Json(Triggered {
            pipeline_run_id: run_id,
            pipeline_id: started.pipeline.id,
            pipeline_version: started.pipeline.version,
            status: PipelineRunState::Running,
            failure_mode: started.failure_mode,
            entry_runs: started
                .entry
                .into_iter()
                .map(|(id, task_id)| EntryRun {
                    run_id: RunId(id),
                    task_id,
                })
                .collect(),
            input_path: stored_path,
        }),
    ))
}

/// A pipeline run as lists show it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PipelineRunSummary {
    /// The pipeline run.
    pipeline_run_id: PipelineRunId,
    /// The pipeline.
    pipeline_id: String,
    /// The pipeline's version it runs.
    pipeline_version: i32,
    /// Its state.
    status: PipelineRunState,
    /// Its failure mode.
    failure_mode: FailureMode,
    /// When it was triggered.
    created_at: DateTime<Utc>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<DateTime<Utc>>,
    /// The caller's data from the trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
}

impl PipelineRunSummary {
    fn of(row: &PipelineRunRow) -> Self {
        Self {
            pipeline_run_id: PipelineRunId(row.id),
            pipeline_id: row.pipeline_id.clone(),
            pipeline_version: row.pipeline_version,
            status: row.state,
            failure_mode: row.failure_mode,
            created_at: row.created_at,
            finished_at: row.finished_at,
            metadata: row.metadata.clone(),
        }
    }
}

/// Filters of `GET /api/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// Only runs of this pipeline.
    pipeline_id: Option<String>,
    /// Only runs in these states, comma-separated: `running`,
    /// `succeeded`, `failed`, `partial`, `cancelled`.
    status: Option<String>,
    /// 1 to 1000; 50 when left out.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// 0 or more; 0 when left out.
    #[param(minimum = 0)]
    offset: Option<i64>,
}

fn parse_pipeline_states(text: &str) -> Result<Vec<PipelineRunState>, ApiError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| match name {
            "running" => Ok(PipelineRunState::Running),
            "succeeded" => Ok(PipelineRunState::Succeeded),
            "failed" => Ok(PipelineRunState::Failed),
            "partial" => Ok(PipelineRunState::Partial),
            "cancelled" => Ok(PipelineRunState::Cancelled),
            _ => Err(ApiError::invalid(
                "status",
                format!(
                    "{name:?} is not a state; use running, succeeded, failed, partial or cancelled"
                ),
            )),
        })
        .collect()
}

/// `GET /api/runs`: pipeline runs, newest first.
#[utoipa::path(
    get,
    path = "/api/runs",
    tag = "pipelines",
    params(RunsQuery),
    responses(
        (status = 200, description = "A page of pipeline runs, newest first", body = Page<PipelineRunSummary>),
        BadRequest,
    )
)]
async fn list_runs(
    State(state): State<AppState>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<PipelineRunSummary>>, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let (limit, offset) = page(query.limit, query.offset)?;
    let states = query
        .status
        .as_deref()
        .map(parse_pipeline_states)
        .transpose()?
        .unwrap_or_default();
    let (rows, total) = storage::pipelines::list_runs(
        &state.pool,
        query.pipeline_id.as_deref(),
        &states,
        limit,
        offset,
    )
    .await?;
    Ok(Json(Page {
        items: rows.iter().map(PipelineRunSummary::of).collect(),
        total,
        limit,
        offset,
    }))
}

/// A task run of a pipeline run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PipelineTaskRun {
    #[serde(flatten)]
    run: RunSummary,
    #[serde(flatten)]
    result: ResultRef,
    /// The code hash its task had when the pipeline run was triggered.
    snapshot_code_hash: Option<String>,
    /// Whether the task's code changed since the trigger: the hash
    /// registered now differs from the snapshot's.
    code_changed: bool,
}

/// One pipeline run in full.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct PipelineRunDetail {
    #[serde(flatten)]
    run: PipelineRunSummary,
    /// Its input, when kept inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<Value>,
    /// Where its input is stored otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_path: Option<String>,
    /// Its structure at trigger time (the spec's `structureSnapshot`).
    structure_snapshot: Value,
    /// Its task runs, in the order they were enqueued.
    task_runs: Vec<PipelineTaskRun>,
    /// The tasks whose code changed since the trigger.
    code_changes: Vec<String>,
}

/// `GET /api/runs/{id}`: a pipeline run with every task run, its state,
/// code version and timing, and which tasks' code changed since the
/// trigger.
#[utoipa::path(
    get,
    path = "/api/runs/{id}",
    tag = "pipelines",
    params(("id" = PipelineRunId, Path, description = "The pipeline run")),
    responses(
        (status = 200, description = "The pipeline run", body = PipelineRunDetail),
        BadRequest,
        NotFound,
    )
)]
async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PipelineRunDetail>, ApiError> {
    let run_id: PipelineRunId = id
        .parse()
        .map_err(|e: crate::ids::InvalidId| ApiError::invalid("id", e.to_string()))?;
    let row = storage::pipelines::get_run(&state.pool, run_id.0)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "pipeline run",
            id: run_id.to_string(),
        })?;
    let task_runs = storage::pipelines::task_runs(&state.pool, run_id.0).await?;
    let current: BTreeMap<String, String> = storage::pipelines::task_infos(&state.pool)
        .await?
        .into_iter()
        .map(|(id, info)| (id, info.code_hash))
        .collect();
    let snapshot_hash = |task: &str| {
        row.structure["tasks"][task]["codeHash"]
            .as_str()
            .map(str::to_owned)
    };
    let mut code_changes: Vec<String> = row.structure["tasks"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(task, node)| {
            node["codeHash"].as_str() != current.get(task.as_str()).map(String::as_str)
        })
        .map(|(task, _)| task.clone())
        .collect();
    code_changes.sort();
    let task_runs = task_runs
        .iter()
        .map(|task_run: &RunRow| PipelineTaskRun {
            run: RunSummary::of(task_run),
            result: task_run
                .result
                .clone()
                .and_then(|result| serde_json::from_value(result).ok())
                .unwrap_or_default(),
            snapshot_code_hash: snapshot_hash(&task_run.task_id),
            code_changed: code_changes.contains(&task_run.task_id),
        })
        .collect();
    Ok(Json(PipelineRunDetail {
        run: PipelineRunSummary::of(&row),
        input: row.input.clone(),
        input_path: row.input_path.clone(),
        structure_snapshot: row.structure.clone(),
        task_runs,
        code_changes,
    }))
}
