//! The `schedules` table: cron triggers of pipelines and standalone tasks.
//! A due schedule is locked `for update skip locked` by the replica that
//! fires it, in the transaction that moves `next_fire_at` on, so each tick
//! fires once (see `scheduler::schedule_round`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// What a schedule does about ticks missed while no orchestrator ran.
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
#[sqlx(type_name = "missed_ticks", rename_all = "kebab-case")]
#[serde(rename_all = "kebab-case")]
pub enum MissedTicks {
    /// Fire once for all of them, then keep to the schedule.
    #[default]
    RunOnce,
    /// Fire nothing for them.
    Skip,
}

/// A schedule.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    /// Its id.
    pub id: String,
    /// The pipeline it triggers, or
    pub pipeline_id: Option<String>,
    /// the task it enqueues.
    pub task_id: Option<String>,
    /// Its cron expression.
    pub cron: String,
    /// The input of what it fires.
    pub input: Value,
    /// Its missed-ticks policy.
    pub missed: MissedTicks,
    /// Whether it fires.
    pub enabled: bool,
    /// Its next tick.
    pub next_fire_at: DateTime<Utc>,
    /// Its last fired tick.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// What that tick made.
    pub last_run_id: Option<Uuid>,
    /// Why the last due tick made nothing.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Creates a schedule; `false` if the id is taken.
pub async fn insert(pool: &PgPool, schedule: &ScheduleRow) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        r#"insert into schedules (id, pipeline_id, task_id, cron, input, missed, enabled,
                                  next_fire_at, created_at)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           on conflict (id) do nothing"#,
        schedule.id,
        schedule.pipeline_id,
        schedule.task_id,
        schedule.cron,
        schedule.input,
        schedule.missed as MissedTicks,
        schedule.enabled,
        schedule.next_fire_at,
        schedule.created_at
    )
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Every schedule, by id.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        r#"select id, pipeline_id, task_id, cron, input, missed as "missed: MissedTicks", enabled,
                  next_fire_at, last_fired_at, last_run_id, last_error, created_at
           from schedules order by id"#
    )
    .fetch_all(pool)
    .await
}

/// One schedule.
pub async fn get(pool: &PgPool, id: &str) -> sqlx::Result<Option<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        r#"select id, pipeline_id, task_id, cron, input, missed as "missed: MissedTicks", enabled,
                  next_fire_at, last_fired_at, last_run_id, last_error, created_at
           from schedules where id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// Deletes a schedule; `false` if there was none.
pub async fn delete(pool: &PgPool, id: &str) -> sqlx::Result<bool> {
    let deleted = sqlx::query!("delete from schedules where id = $1", id)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Locks up to `limit` enabled schedules due at `now`, earliest first,
/// skipping those another replica is firing.
pub async fn lock_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as!(
        ScheduleRow,
        r#"select id, pipeline_id, task_id, cron, input, missed as "missed: MissedTicks", enabled,
                  next_fire_at, last_fired_at, last_run_id, last_error, created_at
           from schedules
           where enabled and next_fire_at <= $1
           order by next_fire_at
           limit $2
           for update skip locked"#,
        now,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Moves a locked schedule to its next tick, recording what the due tick
/// did: fired (`fired_at`, `run_id`), skipped, or failed (`error`).
pub async fn advance(
    conn: &mut PgConnection,
    id: &str,
    next_fire_at: DateTime<Utc>,
    fired_at: Option<DateTime<Utc>>,
    run_id: Option<Uuid>,
    error: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"update schedules set next_fire_at = $2,
               last_fired_at = coalesce($3, last_fired_at),
               last_run_id = coalesce($4, last_run_id),
               last_error = $5
           where id = $1"#,
        id,
        next_fire_at,
        fired_at,
        run_id,
        error
    )
    .execute(conn)
    .await?;
    Ok(())
}
