//! The dead-letter queue: dead runs themselves, not copies. A retry
//! enqueues a new run pointing back at the dead one (`retry_of`, unique, so
//! a dead run is retried once); a purge deletes dead runs past an age.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::RunState;
use super::runs::RunRow;

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    /// Only runs of this task.
    pub task_id: Option<String>,
    /// Only runs that died at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Only runs that died before this.
    pub until: Option<DateTime<Utc>>,
    /// Only task runs of this pipeline's runs.
    pub pipeline_id: Option<String>,
}

/// Dead runs not retried yet, the most recent death first, and how many
/// match in all.
pub async fn list(
    pool: &PgPool,
    filter: &DlqFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<RunRow>, i64)> {
    let rows = sqlx::query_as!(
        RunRow,
        r#"select id, task_id, state as "state: RunState", priority, scheduled_at, input, input_path,
                  backend_id, logs_path, pipeline_run_id, metadata,
                  created_at, attempt, target, code_version, code_hash, started_at, heartbeat_at,
                  progress, progress_message, finished_at, result, error, cancelled_by,
                  cancel_reason
           from runs
           where state = 'dead'
             and ($1::text is null or task_id = $1)
             and ($2::timestamptz is null or finished_at >= $2)
             and ($3::timestamptz is null or finished_at < $3)
             and not exists (select from runs retry where retry.retry_of = runs.id)
             and ($6::text is null or pipeline_run_id in (
                     select id from pipeline_runs where pipeline_id = $6))
           order by finished_at desc, id desc
           limit $4 offset $5"#,
        filter.task_id.as_deref(),
        filter.since,
        filter.until,
        limit,
        offset,
        filter.pipeline_id.as_deref()
    )
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar!(
        r#"select count(*) as "count!" from runs
           where state = 'dead'
             and ($1::text is null or task_id = $1)
             and ($2::timestamptz is null or finished_at >= $2)
             and ($3::timestamptz is null or finished_at < $3)
             and not exists (select from runs retry where retry.retry_of = runs.id)
             and ($4::text is null or pipeline_run_id in (
                     select id from pipeline_runs where pipeline_id = $4))"#,
        filter.task_id.as_deref(),
        filter.since,
        filter.until,
        filter.pipeline_id.as_deref()
    )
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// The run that retried `dead_id`, if any.
pub async fn retried_as(pool: &PgPool, dead_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!("select id from runs where retry_of = $1", dead_id)
        .fetch_optional(pool)
        .await
}

/// A retry that was enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// The dead run.
    pub dead_id: Uuid,
    /// The new run.
    pub run_id: Uuid,
    /// The code version it will run: pinned, or `None` for whatever the
    /// task's current code is when it is claimed.
    pub pinned_code_version: Option<i32>,
}

/// Enqueues a new run for each dead run in `retries` (dead id, new id), at
/// `now`, with the same task, input, metadata and priority; `pin` keeps the
/// code of the failed attempt instead of the task's current code. Dead runs
/// that are gone, not dead or already retried are skipped (the unique
/// `retry_of` decides between concurrent retries). Returns what was
/// enqueued.
///
/// A dead task run of a pipeline resumes its pipeline run: the retry joins
/// it, the pipeline run is running again if it had ended, and in fail-fast
/// mode the task runs that the death cancelled are enqueued again too (as
/// retries of the cancelled ones); completions then go on from there. The
/// pipeline runs are locked first, as every completion does.
pub async fn retry(
    pool: &PgPool,
    retries: &[(Uuid, Uuid)],
    pin: bool,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Retry>> {
    let dead_ids: Vec<Uuid> = retries.iter().map(|r| r.0).collect();
    let new_ids: Vec<Uuid> = retries.iter().map(|r| r.1).collect();
    let mut tx = pool.begin().await?;
    // Locked for the whole transaction; the rows themselves are not needed.
    let pipeline_runs = sqlx::query_scalar!(
        r#"select id from pipeline_runs
           where id in (select pipeline_run_id from runs where id = any($1) and state = 'dead')
           order by id
           for update"#,
        &dead_ids
    )
    .fetch_all(&mut *tx)
    .await?;
    let retried = sqlx::query_as!(
        Retry,
        r#"insert into runs (id, task_id, priority, scheduled_at, input, input_path, backend_id,
                             metadata, created_at, retry_of, pinned_code_version,
                             pinned_code_hash, pipeline_run_id)
           select wanted.new_id, dead.task_id, dead.priority, $3, dead.input, dead.input_path,
                  dead.backend_id, dead.metadata, $3,
                  dead.id, case when $4 then dead.code_version end,
                  case when $4 then dead.code_hash end, dead.pipeline_run_id
           from unnest($1::uuid[], $2::uuid[]) as wanted (dead_id, new_id)
           join runs dead on dead.id = wanted.dead_id and dead.state = 'dead'
           order by wanted.new_id
           on conflict (retry_of) where retry_of is not null do nothing
           returning retry_of as "dead_id!", id as run_id, pinned_code_version"#,
        &dead_ids,
        &new_ids,
        now,
        pin
    )
    .fetch_all(&mut *tx)
    .await?;
    if !retried.is_empty() && !pipeline_runs.is_empty() {
        sqlx::query!(
            r#"with resumed as (
                   update pipeline_runs set state = 'running', finished_at = null
                   where id in (select pipeline_run_id from runs where id = any($1))
                     and state in ('failed', 'partial')
                   returning id, failure_mode
               )
               insert into runs (id, task_id, priority, scheduled_at, input, input_path,
                                 backend_id, metadata, created_at, retry_of,
                                 pinned_code_version, pinned_code_hash, pipeline_run_id)
               select pipeweave_uuid_v7(), cancelled.task_id, cancelled.priority, $2,
                      cancelled.input, cancelled.input_path, cancelled.backend_id,
                      cancelled.metadata, $2, cancelled.id, cancelled.pinned_code_version,
                      cancelled.pinned_code_hash, cancelled.pipeline_run_id
               from runs cancelled
               join resumed on resumed.id = cancelled.pipeline_run_id
               where resumed.failure_mode = 'fail-fast'
                 and cancelled.state = 'cancelled' and cancelled.cancelled_by = 'pipeline'
                 and not exists (select from runs retry where retry.retry_of = cancelled.id)
               on conflict do nothing"#,
            &retried.iter().map(|r| r.run_id).collect::<Vec<_>>(),
            now
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(retried)
}

/// Up to `limit` dead runs not retried yet, oldest death first, of one
/// task or of all.
pub async fn unretried(
    pool: &PgPool,
    task_id: Option<&str>,
    pipeline_id: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"select id from runs
           where state = 'dead' and ($1::text is null or task_id = $1)
             and not exists (select from runs retry where retry.retry_of = runs.id)
             and ($3::text is null or pipeline_run_id in (
                     select id from pipeline_runs where pipeline_id = $3))
           order by finished_at, id
           limit $2"#,
        task_id,
        limit,
        pipeline_id
    )
    .fetch_all(pool)
    .await
}

/// Deletes dead runs that died before `before`, with their attempts, and
/// clears the pointers of the runs that retried them. Returns how many.
pub async fn purge(pool: &PgPool, before: DateTime<Utc>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"with doomed as (
               select id from runs where state = 'dead' and finished_at < $1
           ),
           unlinked as (
               update runs set retry_of = null
               where retry_of in (select id from doomed) and id not in (select id from doomed)
           ),
           attempts_gone as (
               delete from attempts where run_id in (select id from doomed)
           ),
           -- A key frees only on evidence about its holder; a purged holder
           -- leaves none, so its keys go with it.
           keys_gone as (
               delete from idempotency_keys where run_id in (select id from doomed)
           ),
           gone as (
               delete from runs where id in (select id from doomed) returning 1
           )
           select count(*) as "count!" from gone"#,
        before
    )
    .fetch_one(pool)
    .await
}
