//! The `tasks` table: each task's current code, options and concurrency
//! counter.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::Runtime;

/// What registration needs to know about a task that already exists.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The task.
    pub id: String,
    /// Its service.
    pub service_id: String,
    /// Its code hash now.
    pub code_hash: String,
    /// Its code version now.
    pub code_version: i32,
    /// Its concurrency limit now.
    pub concurrency: i32,
}

/// The tasks among `ids` that exist, locked until the transaction ends.
pub async fn lock_registered(
    conn: &mut PgConnection,
    ids: &[String],
) -> sqlx::Result<Vec<Registered>> {
    sqlx::query_as!(
        Registered,
        "select id, service_id, code_hash, code_version, concurrency
         from tasks where id = any($1) order by id for update",
        ids
    )
    .fetch_all(conn)
    .await
}

/// A task as registration writes it.
#[derive(Debug, Clone)]
pub struct Upsert<'a> {
    /// The task.
    pub id: &'a str,
    /// Its service.
    pub service_id: &'a str,
    /// Its code hash.
    pub code_hash: &'a str,
    /// Its code version.
    pub code_version: i32,
    /// The descriptor as registered.
    pub descriptor: Value,
    /// Default priority.
    pub priority: i32,
    /// Concurrency limit, 0 for none.
    pub concurrency: i32,
    /// Timeout.
    pub timeout_ms: i64,
    /// Heartbeat interval.
    pub heartbeat_interval_ms: i64,
}

/// Inserts a task or replaces its registration.
pub async fn upsert(
    conn: &mut PgConnection,
    task: &Upsert<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"insert into tasks (id, service_id, code_hash, code_version, descriptor, priority,
                              concurrency, timeout_ms, heartbeat_interval_ms, registered_at, updated_at)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
           on conflict (id) do update set
               service_id = excluded.service_id, code_hash = excluded.code_hash,
               code_version = excluded.code_version, descriptor = excluded.descriptor,
               priority = excluded.priority, concurrency = excluded.concurrency,
               timeout_ms = excluded.timeout_ms,
               heartbeat_interval_ms = excluded.heartbeat_interval_ms,
               removed_in_version = null, updated_at = excluded.updated_at"#,
        task.id,
        task.service_id,
        task.code_hash,
        task.code_version,
        task.descriptor,
        task.priority,
        task.concurrency,
        task.timeout_ms,
        task.heartbeat_interval_ms,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets a task's running counter from its running runs. Registration calls
/// it (with the task row locked) when a limit appears or changes, since
/// the counter is kept only while a limit exists.
pub async fn recount_running(conn: &mut PgConnection, id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "update tasks set running_count =
             (select count(*) from runs where runs.task_id = $1 and runs.state = 'running')
         where id = $1",
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A task as the API lists it.
#[derive(Debug, Clone)]
pub struct TaskRow {
    /// The task.
    pub id: String,
    /// Its service.
    pub service_id: String,
    /// Its code hash.
    pub code_hash: String,
    /// Its code version.
    pub code_version: i32,
    /// Its descriptor as registered.
    pub descriptor: Value,
    /// Attempts running now (counted only for tasks with a limit).
    pub running_count: i32,
    /// First registration.
    pub registered_at: DateTime<Utc>,
    /// Latest registration.
    pub updated_at: DateTime<Utc>,
}

/// The tasks of a service, by id.
pub async fn list_for_service(pool: &PgPool, service_id: &str) -> sqlx::Result<Vec<TaskRow>> {
    sqlx::query_as!(
        TaskRow,
        "select id, service_id, code_hash, code_version, descriptor, running_count, registered_at, updated_at
         from tasks where service_id = $1 order by id",
        service_id
    )
    .fetch_all(pool)
    .await
}

/// Which of `ids` name no task.
pub async fn unknown(pool: &PgPool, ids: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"select given.id as "id!" from unnest($1::text[]) as given (id)
           where not exists (select 1 from tasks t
                             where t.id = given.id and t.removed_in_version is null)"#,
        ids
    )
    .fetch_all(pool)
    .await
}

/// The tasks PipeWeave hosts run (those of wasm services).
pub async fn wasm_task_ids(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        "select t.id from tasks t join services s on s.id = t.service_id
         where s.runtime = 'wasm' and t.removed_in_version is null"
    )
    .fetch_all(pool)
    .await
}

/// Where a task runs: the runtime of its service.
pub async fn runtime(pool: &PgPool, id: &str) -> sqlx::Result<Option<Runtime>> {
    sqlx::query_scalar!(
        r#"select s.runtime as "runtime: Runtime"
           from tasks t join services s on s.id = t.service_id where t.id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// A task's current code version.
pub async fn code_version(pool: &PgPool, id: &str) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar!("select code_version from tasks where id = $1", id)
        .fetch_optional(pool)
        .await
}

/// Marks the tasks of `service_id` that are not in `kept` as removed in
/// `version`, and cancels their queued and retry-waiting runs (running
/// ones finish). Returns how many runs were cancelled.
pub async fn remove_orphans(
    conn: &mut PgConnection,
    service_id: &str,
    kept: &[String],
    version: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"with orphans as (
               update tasks set removed_in_version = $3, updated_at = $4
               where service_id = $1 and not (id = any($2)) and removed_in_version is null
               returning id
           ),
           cancelled as (
               update runs set state = 'cancelled', finished_at = $4,
                   cancelled_by = 'orphan cleanup',
                   cancel_reason = 'Task type removed in version ' || $3
               where task_id in (select id from orphans)
                 and state in ('queued', 'awaiting_retry')
               returning 1
           )
           select count(*) as "count!" from cancelled"#,
        service_id,
        kept,
        version,
        now
    )
    .fetch_one(conn)
    .await
}
