//! The schema itself, for `pipeweave db`: which migrations a database has
//! and which it lacks, how many runs it holds by state, and a reset that
//! drops everything PipeWeave owns (and nothing else) before migrating
//! again.
//!
//! [`OWNED_TABLES`], [`OWNED_TYPES`] and [`OWNED_FUNCTIONS`] list every
//! object `migrations/` creates (indexes and triggers go with their
//! tables); a test drops them from a migrated database and checks that
//! nothing is left, so a migration that adds an object must add it here.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgPool};

use super::pipelines::PipelineRunState;

/// The tables the migrations create, and sqlx's record of the migrations.
pub const OWNED_TABLES: &[&str] = &[
    "secrets",
    "schedules",
    "idempotency_keys",
    "maintenance",
    "attempts",
    "runs",
    "pipeline_runs",
    "pipelines",
    "task_code_history",
    "tasks",
    "modules",
    "hosts",
    "services",
    "_sqlx_migrations",
];

/// The types the migrations create.
pub const OWNED_TYPES: &[&str] = &[
    "missed_ticks",
    "pipeline_run_state",
    "failure_mode",
    "attempt_outcome",
    "run_state",
    "service_runtime",
];

/// The functions the migrations create.
pub const OWNED_FUNCTIONS: &[&str] = &["notify_runs_enqueued()", "pipeweave_uuid_v7()"];

/// One migration, as this build knows it and as the database has it.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Its version (the file name's number).
    pub version: i64,
    /// What it does (the rest of the file name).
    pub description: String,
    /// When the database applied it; `None` while it is pending.
    pub applied_at: Option<DateTime<Utc>>,
    /// Whether the database applied a different text under this version
    /// (a migration edited after it ran), which `migrate` refuses.
    pub checksum_differs: bool,
    /// Whether this build knows it: `false` for a migration a newer
    /// PipeWeave applied.
    pub known: bool,
}

/// The migrations of this build and of the database, by version.
pub async fn migrations(pool: &PgPool) -> crate::Result<Vec<Migration>> {
    let migrator = sqlx::migrate!("../migrations");
    let applied: Vec<(i64, DateTime<Utc>, Vec<u8>)> = if has_migrations_table(pool).await? {
        sqlx::query_as(
            "select version, installed_on, checksum from _sqlx_migrations
             where success order by version",
        )
        .fetch_all(pool)
        .await?
    } else {
        Vec::new()
    };
    let mut list: Vec<Migration> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| {
            let found = applied.iter().find(|(version, ..)| *version == m.version);
            Migration {
                version: m.version,
                description: m.description.to_string(),
                applied_at: found.map(|(_, at, _)| *at),
                checksum_differs: found.is_some_and(|(_, _, sum)| sum[..] != m.checksum[..]),
                known: true,
            }
        })
        .collect();
    for (version, at, _) in &applied {
        if !list.iter().any(|m| m.version == *version) {
            list.push(Migration {
                version: *version,
                description: String::new(),
                applied_at: Some(*at),
                checksum_differs: false,
                known: false,
            });
        }
    }
    list.sort_by_key(|m| m.version);
    Ok(list)
}

/// Whether sqlx's record of applied migrations exists: false on a database
/// PipeWeave never migrated.
pub async fn has_migrations_table(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar::<_, bool>("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(pool)
        .await
}

/// Which of the tables PipeWeave owns exist in the database.
pub async fn existing_tables(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    let names: Vec<String> = OWNED_TABLES.iter().map(|t| (*t).to_owned()).collect();
    sqlx::query_scalar::<_, String>(
        "select name from unnest($1::text[]) as name where to_regclass(name) is not null",
    )
    .bind(&names)
    .fetch_all(pool)
    .await
}

/// Pipeline runs by state.
pub async fn pipeline_run_counts(pool: &PgPool) -> sqlx::Result<Vec<(PipelineRunState, i64)>> {
    let rows = sqlx::query!(
        r#"select state as "state: PipelineRunState", count(*) as "count!"
           from pipeline_runs group by state order by state"#
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|row| (row.state, row.count)).collect())
}

/// Drops every object PipeWeave owns, in one transaction: its data is
/// gone. Objects of other applications in the same database stay.
pub async fn drop_all(pool: &PgPool) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    for table in OWNED_TABLES {
        sqlx::query(AssertSqlSafe(format!(
            "drop table if exists {table} cascade"
        )))
        .execute(&mut *tx)
        .await?;
    }
    for function in OWNED_FUNCTIONS {
        sqlx::query(AssertSqlSafe(format!(
            "drop function if exists {function} cascade"
        )))
        .execute(&mut *tx)
        .await?;
    }
    for kind in OWNED_TYPES {
        sqlx::query(AssertSqlSafe(format!("drop type if exists {kind} cascade")))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}
