//! The `pipelines` and `pipeline_runs` tables: pipeline definitions, their
//! runs with the structure snapshot, and the bookkeeping that decides what
//! runs next ([`advance`]), always under a lock on the pipeline run row
//! ([`lock_run`]) so that two completions on two replicas are decided one
//! after the other.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::RunState;
use super::runs::RunRow;
use crate::pipeline::TaskInfo;

/// What a pipeline run does when one of its task runs dies, as
/// `failure_mode` stores it (the spec's "Partial Pipeline Failures").
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    sqlx::Type,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "failure_mode", rename_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Cancel the rest of the run; it fails.
    #[default]
    FailFast,
    /// Other branches go on; a join that waits for a dead task does not
    /// run. The run fails.
    Continue,
    /// Other branches go on, and a join runs with the upstream outputs
    /// that exist. The run ends `partial`.
    PartialMerge,
}

/// A pipeline run's state, as `pipeline_run_state` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize, utoipa::ToSchema)]
#[sqlx(type_name = "pipeline_run_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum PipelineRunState {
    /// Some task run is queued, running or waiting for a retry.
    Running,
    /// Every task run that ran succeeded.
    Succeeded,
    /// A task run died (fail-fast, continue) or was cancelled.
    Failed,
    /// partial-merge: some task runs died, the others went on.
    Partial,
    /// Cancelled as a whole.
    Cancelled,
}

/// A pipeline definition.
#[derive(Debug, Clone)]
pub struct PipelineRow {
    /// Its id.
    pub id: String,
    /// What it is for.
    pub description: Option<String>,
    /// The tasks that start with its input.
    pub entry_tasks: Vec<String>,
    /// The tasks the author expects it to reach, if given.
    pub tasks: Option<Vec<String>>,
    /// The default failure mode of its runs.
    pub failure_mode: FailureMode,
    /// Bumped by each registration that changes it.
    pub version: i32,
    /// First registered.
    pub created_at: DateTime<Utc>,
    /// Last registered.
    pub updated_at: DateTime<Utc>,
}

/// A pipeline to register.
#[derive(Debug, Clone)]
pub struct NewPipeline {
    /// Its id.
    pub id: String,
    /// What it is for.
    pub description: Option<String>,
    /// Its entry tasks.
    pub entry_tasks: Vec<String>,
    /// The tasks it should reach, if the author lists them.
    pub tasks: Option<Vec<String>>,
    /// The default failure mode of its runs.
    pub failure_mode: FailureMode,
}

/// Registers a pipeline, or updates it; its version goes up when anything
/// but the time changed.
pub async fn upsert(
    pool: &PgPool,
    pipeline: &NewPipeline,
    now: DateTime<Utc>,
) -> sqlx::Result<PipelineRow> {
    sqlx::query_as!(
        PipelineRow,
        r#"insert into pipelines (id, description, entry_tasks, tasks, failure_mode, created_at,
                                  updated_at)
           values ($1, $2, $3, $4, $5, $6, $6)
           on conflict (id) do update set
               description = excluded.description,
               entry_tasks = excluded.entry_tasks,
               tasks = excluded.tasks,
               failure_mode = excluded.failure_mode,
               updated_at = excluded.updated_at,
               version = pipelines.version + case
                   when (pipelines.description, pipelines.entry_tasks, pipelines.tasks,
                         pipelines.failure_mode)
                        is distinct from (excluded.description, excluded.entry_tasks,
                                          excluded.tasks, excluded.failure_mode)
                   then 1 else 0 end
           returning id, description, entry_tasks, tasks,
                     failure_mode as "failure_mode: FailureMode", version, created_at,
                     updated_at"#,
        pipeline.id,
        pipeline.description,
        &pipeline.entry_tasks,
        pipeline.tasks.as_deref(),
        pipeline.failure_mode as FailureMode,
        now
    )
    .fetch_one(pool)
    .await
}

/// One pipeline.
pub async fn get<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: &str,
) -> sqlx::Result<Option<PipelineRow>> {
    sqlx::query_as!(
        PipelineRow,
        r#"select id, description, entry_tasks, tasks,
                  failure_mode as "failure_mode: FailureMode", version, created_at, updated_at
           from pipelines where id = $1"#,
        id
    )
    .fetch_optional(executor)
    .await
}

/// Every pipeline, by id.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<PipelineRow>> {
    sqlx::query_as!(
        PipelineRow,
        r#"select id, description, entry_tasks, tasks,
                  failure_mode as "failure_mode: FailureMode", version, created_at, updated_at
           from pipelines order by id"#
    )
    .fetch_all(pool)
    .await
}

/// What validation needs of every registered task; `has_target` is left
/// false for the caller to fill in.
pub async fn task_infos<'e>(
    executor: impl sqlx::PgExecutor<'e>,
) -> sqlx::Result<BTreeMap<String, TaskInfo>> {
    let rows = sqlx::query!(
        r#"select id, coalesce(array(select jsonb_array_elements_text(
                      coalesce(descriptor -> 'allowedNext', '[]'))), '{}') as "allowed_next!",
                  concurrency, code_hash, code_version
           from tasks where removed_in_version is null"#
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.id,
                TaskInfo {
                    allowed_next: row.allowed_next,
                    concurrency: row.concurrency,
                    code_hash: row.code_hash,
                    code_version: row.code_version,
                    has_target: false,
                },
            )
        })
        .collect())
}

/// A pipeline run to create.
#[derive(Debug, Clone)]
pub struct NewPipelineRun {
    /// Its id.
    pub id: Uuid,
    /// The pipeline.
    pub pipeline_id: String,
    /// The pipeline's version now.
    pub pipeline_version: i32,
    /// Its failure mode.
    pub failure_mode: FailureMode,
    /// Its input, when kept inline.
    pub input: Option<Value>,
    /// Where its input is stored otherwise.
    pub input_path: Option<String>,
    /// The backend holding `input_path`.
    pub backend_id: Option<String>,
    /// The structure snapshot (a [`crate::pipeline::Structure`]).
    pub structure: Value,
    /// The caller's own data.
    pub metadata: Option<Value>,
}

/// Creates a pipeline run and enqueues a run of each entry task, with the
/// ids given; the caller's transaction makes it all or nothing. Tasks of
/// WebAssembly services are pinned to the snapshot's code, as
/// `queries/advance.sql` does for the rest.
pub async fn trigger(
    conn: &mut PgConnection,
    run: &NewPipelineRun,
    entry: &[(Uuid, String)],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"insert into pipeline_runs (id, pipeline_id, pipeline_version, failure_mode, input,
                                      input_path, backend_id, structure, metadata, created_at)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
        run.id,
        run.pipeline_id,
        run.pipeline_version,
        run.failure_mode as FailureMode,
        run.input,
        run.input_path,
        run.backend_id,
        run.structure,
        run.metadata,
        now
    )
    .execute(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = entry.iter().map(|(id, _)| *id).collect();
    let tasks: Vec<String> = entry.iter().map(|(_, task)| task.clone()).collect();
    sqlx::query!(
        r#"insert into runs (id, task_id, pipeline_run_id, priority, scheduled_at, input,
                             input_path, backend_id, created_at, pinned_code_version,
                             pinned_code_hash)
           select entry.id, entry.task_id, $3, tasks.priority, $4, $5, $6, $7, $4,
                  case when services.runtime = 'wasm'
                       then ($8::jsonb -> 'tasks' -> entry.task_id ->> 'codeVersion')::integer end,
                  case when services.runtime = 'wasm'
                       then $8::jsonb -> 'tasks' -> entry.task_id ->> 'codeHash' end
           from unnest($1::uuid[], $2::text[]) as entry (id, task_id)
           join tasks on tasks.id = entry.task_id
           join services on services.id = tasks.service_id"#,
        &ids,
        &tasks,
        run.id,
        now,
        run.input,
        run.input_path,
        run.backend_id,
        run.structure
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The pipeline run a task run belongs to, if any. It never changes, so
/// reading it before taking locks is safe.
pub async fn of_task_run(conn: &mut PgConnection, run_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    Ok(
        sqlx::query_scalar!("select pipeline_run_id from runs where id = $1", run_id)
            .fetch_optional(conn)
            .await?
            .flatten(),
    )
}

/// A pipeline run locked for deciding what runs next.
#[derive(Debug, Clone)]
pub struct LockedRun {
    /// Its state.
    pub state: PipelineRunState,
    /// Its failure mode.
    pub failure_mode: FailureMode,
    /// Its structure snapshot.
    pub structure: Value,
}

/// Locks a pipeline run row until the transaction ends. Every transaction
/// that ends a task run of a pipeline takes this lock first, before any
/// lock on its task runs, so completions of one pipeline run are decided
/// one at a time and in one lock order.
pub async fn lock_run(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<LockedRun>> {
    sqlx::query_as!(
        LockedRun,
        r#"select state as "state: PipelineRunState",
                  failure_mode as "failure_mode: FailureMode", structure
           from pipeline_runs where id = $1 for update"#,
        id
    )
    .fetch_optional(conn)
    .await
}

/// What [`advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advanced {
    /// Task runs enqueued.
    pub enqueued: i64,
    /// The pipeline run's state if it just ended.
    pub ended: Option<PipelineRunState>,
}

/// Enqueues every task of a locked, running pipeline run that became
/// ready, and ends the run when nothing is left to do (see
/// `queries/advance.sql`).
pub async fn advance(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Advanced> {
    let row = sqlx::query_file!("queries/advance.sql", id, now)
        .fetch_one(conn)
        .await?;
    Ok(Advanced {
        enqueued: row.enqueued,
        ended: row.ended,
    })
}

/// Ends a locked pipeline run as `failed` and returns the ids of its task
/// runs that were still queued, running or waiting for a retry, for the
/// caller to cancel (fail-fast).
pub async fn fail(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query!(
        "update pipeline_runs set state = 'failed', finished_at = $2
         where id = $1 and state = 'running'",
        id,
        now
    )
    .execute(&mut *conn)
    .await?;
    live_task_runs(conn, id).await
}

/// Ends a locked, running pipeline run as `cancelled` (cancelled as a
/// whole, `POST /api/runs/{id}/cancel`) and returns the ids of its task
/// runs that were still queued, running or waiting for a retry, for the
/// caller to cancel in the same transaction.
pub async fn cancel(
    conn: &mut PgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query!(
        "update pipeline_runs set state = 'cancelled', finished_at = $2
         where id = $1 and state = 'running'",
        id,
        now
    )
    .execute(&mut *conn)
    .await?;
    live_task_runs(conn, id).await
}

/// The task runs of a pipeline run that have not ended.
async fn live_task_runs(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "select id from runs
         where pipeline_run_id = $1 and state in ('queued', 'running', 'awaiting_retry')",
        id
    )
    .fetch_all(conn)
    .await
}

/// A pipeline run as the API shows it.
#[derive(Debug, Clone)]
pub struct PipelineRunRow {
    /// Its id.
    pub id: Uuid,
    /// The pipeline.
    pub pipeline_id: String,
    /// The pipeline's version when it was triggered.
    pub pipeline_version: i32,
    /// Its state.
    pub state: PipelineRunState,
    /// Its failure mode.
    pub failure_mode: FailureMode,
    /// Its input, when kept inline.
    pub input: Option<Value>,
    /// Where its input is stored otherwise.
    pub input_path: Option<String>,
    /// The structure snapshot.
    pub structure: Value,
    /// The caller's data.
    pub metadata: Option<Value>,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One pipeline run.
pub async fn get_run(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<PipelineRunRow>> {
    sqlx::query_as!(
        PipelineRunRow,
        r#"select id, pipeline_id, pipeline_version, state as "state: PipelineRunState",
                  failure_mode as "failure_mode: FailureMode", input, input_path, structure,
                  metadata, created_at, finished_at
           from pipeline_runs where id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// A page of pipeline runs, newest first, optionally of one pipeline or in
/// some states, and how many match in all.
pub async fn list_runs(
    pool: &PgPool,
    pipeline_id: Option<&str>,
    states: &[PipelineRunState],
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<PipelineRunRow>, i64)> {
    let all = states.is_empty();
    let rows = sqlx::query_as!(
        PipelineRunRow,
        r#"select id, pipeline_id, pipeline_version, state as "state: PipelineRunState",
                  failure_mode as "failure_mode: FailureMode", input, input_path, structure,
                  metadata, created_at, finished_at
           from pipeline_runs
           where ($1::text is null or pipeline_id = $1)
             and ($2 or state = any($3::pipeline_run_state[]))
           order by id desc
           limit $4 offset $5"#,
        pipeline_id,
        all,
        states as &[PipelineRunState],
        limit,
        offset
    )
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar!(
        r#"select count(*) as "count!" from pipeline_runs
           where ($1::text is null or pipeline_id = $1)
             and ($2 or state = any($3::pipeline_run_state[]))"#,
        pipeline_id,
        all,
        states as &[PipelineRunState]
    )
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// The task runs of a pipeline run, in the order they were enqueued.
pub async fn task_runs(pool: &PgPool, id: Uuid) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as!(
        RunRow,
        r#"select id, task_id, state as "state: RunState", priority, scheduled_at, input, input_path,
                  backend_id, logs_path, pipeline_run_id, metadata, created_at, attempt, target,
                  code_version,
                  code_hash, started_at, heartbeat_at, progress, progress_message, finished_at,
                  result, error, cancelled_by, cancel_reason
           from runs where pipeline_run_id = $1 order by id"#,
        id
    )
    .fetch_all(pool)
    .await
}

/// A succeeded task run of a pipeline run, as its downstream tasks see it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The pipeline run.
    pub pipeline_run_id: Uuid,
    /// The task.
    pub task_id: String,
    /// What it selected to run next.
    pub selected_next: Vec<String>,
    /// Its output and assets (a `ResultRef`).
    pub result: Value,
}

/// The succeeded task runs of these pipeline runs: what a dispatch hands
/// downstream as `upstreamRefs`.
pub async fn succeeded(pool: &PgPool, pipeline_runs: &[Uuid]) -> sqlx::Result<Vec<Upstream>> {
    sqlx::query_as!(
        Upstream,
        r#"select pipeline_run_id as "pipeline_run_id!", task_id,
                  coalesce(selected_next, '{}') as "selected_next!", result as "result!"
           from runs
           where pipeline_run_id = any($1) and state = 'succeeded' and result is not null"#,
        pipeline_runs
    )
    .fetch_all(pool)
    .await
}

/// For each of these task runs, the direct upstream tasks (in its pipeline
/// run's snapshot) that died or were cancelled there and were not retried.
pub async fn failed_upstream(
    pool: &PgPool,
    task_runs: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, Vec<String>)>> {
    let rows = sqlx::query!(
        r#"select run.id, array(
                   select upstream from jsonb_array_elements_text(
                       pipeline_run.structure -> 'tasks' -> run.task_id -> 'predecessors') upstream
                   where exists (
                       select from runs failed
                       where failed.pipeline_run_id = run.pipeline_run_id
                         and failed.task_id = upstream
                         and failed.state in ('dead', 'cancelled')
                         and not exists (select from runs retry where retry.retry_of = failed.id))
                   order by upstream) as "failed!"
           from runs run
           join pipeline_runs pipeline_run on pipeline_run.id = run.pipeline_run_id
           where run.id = any($1)"#,
        task_runs
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.failed)).collect())
}
