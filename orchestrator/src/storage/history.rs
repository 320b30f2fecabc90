//! The `task_code_history` table: one row per code version of a task.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// One code version, as `GET /api/tasks/:id/history` shows it (the spec
/// uses snake_case here).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct HistoryRow {
    /// The version number.
    pub code_version: i32,
    /// The code hash of that version.
    pub code_hash: String,
    /// The service version that registered it.
    pub service_version: String,
    /// When it was registered.
    pub recorded_at: DateTime<Utc>,
}

/// Records a task's new code version.
pub async fn record(
    conn: &mut PgConnection,
    task_id: &str,
    code_version: i32,
    code_hash: &str,
    service_version: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into task_code_history (task_id, code_version, code_hash, service_version, recorded_at)
         values ($1, $2, $3, $4, $5)",
        task_id,
        code_version,
        code_hash,
        service_version,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A task's code versions, newest first.
pub async fn list(pool: &PgPool, task_id: &str) -> sqlx::Result<Vec<HistoryRow>> {
    sqlx::query_as!(
        HistoryRow,
        "select code_version, code_hash, service_version, recorded_at
         from task_code_history where task_id = $1 order by code_version desc",
        task_id
    )
    .fetch_all(pool)
    .await
}
