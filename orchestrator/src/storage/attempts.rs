//! The `attempts` table: finished attempts of each run.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::AttemptOutcome;

/// A finished attempt.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// Its run.
    pub run_id: Uuid,
    /// Its number.
    pub attempt: i32,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Where it ran.
    pub target: Option<String>,
    /// The code version it ran.
    pub code_version: i32,
    /// The code hash it ran.
    pub code_hash: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Its error, when it failed.
    pub error: Option<Value>,
    /// Its log, when its worker stored one.
    pub logs_path: Option<String>,
}

/// The finished attempts of runs, oldest first within each run.
pub async fn of_runs(pool: &PgPool, run_ids: &[Uuid]) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as!(
        AttemptRow,
        r#"select run_id, attempt, outcome as "outcome: AttemptOutcome", target, code_version, code_hash,
                  started_at, finished_at, error, logs_path
           from attempts where run_id = any($1) order by run_id, attempt"#,
        run_ids
    )
    .fetch_all(pool)
    .await
}
