//! All SQL of the orchestrator, one file per table, one function per
//! statement. Queries are checked against the schema at compile time
//! (`sqlx::query!`); the offline data lives in `.sqlx/` at the workspace
//! root and `scripts/sqlx-prepare` regenerates it.
//!
//! Functions take the current time as a parameter instead of calling
//! `now()`, so the scheduler's notion of time is the only one.

pub mod attempts;
pub mod dlq;
pub mod history;
pub mod hosts;
pub mod maintenance;
pub mod modules;
pub mod pipelines;
pub mod runs;
pub mod schedules;
pub mod schema;
pub mod secrets;
pub mod services;
pub mod tasks;

/// Applies the migrations in `migrations/` that this database lacks.
pub async fn migrate(pool: &sqlx::PgPool) -> crate::Result<()> {
    sqlx::migrate!("../migrations").run(pool).await?;
    Ok(())
}

/// A run's state, as the `run_state` enum stores it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    sqlx::Type,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "run_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting to be claimed.
    Queued,
    /// One attempt in flight.
    Running,
    /// Failed; another attempt is scheduled.
    AwaitingRetry,
    /// Done with a result.
    Succeeded,
    /// Failed for good.
    Dead,
    /// Cancelled.
    Cancelled,
}

impl RunState {
    /// The name in JSON and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::AwaitingRetry => "awaiting_retry",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    /// Every state, for parsing filters.
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::AwaitingRetry,
        Self::Succeeded,
        Self::Dead,
        Self::Cancelled,
    ];
}

/// Where a service's tasks run, as `service_runtime` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize, utoipa::ToSchema)]
#[sqlx(type_name = "service_runtime", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// A plain HTTP worker.
    Http,
    /// WebAssembly components on PipeWeave hosts.
    Wasm,
}

/// How an attempt without a result ended, as `attempt_outcome` stores it
/// (a successful attempt is the run row itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "attempt_outcome", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// It failed.
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl AttemptOutcome {
    /// The name in JSON and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}
