//! The maintenance switch (`maintenance` table): while it is on, claims
//! find nothing, so running attempts finish and nothing new starts.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Maintenance mode as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// Why, as given when it was entered.
    pub reason: Option<String>,
    /// When it was entered.
    pub since: DateTime<Utc>,
}

/// Maintenance mode if it is on.
pub async fn current(pool: &PgPool) -> sqlx::Result<Option<Maintenance>> {
    sqlx::query_as!(Maintenance, "select reason, since from maintenance")
        .fetch_optional(pool)
        .await
}

/// Turns maintenance mode on at `now`, or leaves it as it is if it is on
/// already (its reason and start stay the first ones). Returns it.
pub async fn enter(
    pool: &PgPool,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> sqlx::Result<Maintenance> {
    sqlx::query_as!(
        Maintenance,
        r#"with entered as (
               insert into maintenance (reason, since) values ($1, $2)
               on conflict (singleton) do nothing
               returning reason, since
           )
           select reason, since as "since!" from entered
           union all
           select reason, since from maintenance where not exists (select from entered)"#,
        reason,
        now
    )
    .fetch_one(pool)
    .await
}

/// Turns maintenance mode off; returns whether it was on.
pub async fn exit(pool: &PgPool) -> sqlx::Result<bool> {
    let deleted = sqlx::query!("delete from maintenance")
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() > 0)
}
