//! The `services` table: who registered which tasks, and where to reach
//! them.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::Runtime;

/// A service as listed by the API.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRow {
    /// Its id.
    pub id: String,
    /// Its version string.
    pub version: String,
    /// Where its tasks run.
    pub runtime: Runtime,
    /// Where a plain HTTP worker listens.
    pub base_url: Option<String>,
    /// Attempts it takes at once, if it said.
    pub capacity: Option<i32>,
    /// How many tasks it has.
    pub task_count: i64,
    /// First registration.
    pub registered_at: DateTime<Utc>,
    /// Latest registration.
    pub updated_at: DateTime<Utc>,
}

/// Inserts or updates a service and returns the version it had before, if
/// it existed. Locks the row until the transaction ends, so concurrent
/// registrations of one service take turns.
pub async fn upsert(
    conn: &mut PgConnection,
    id: &str,
    version: &str,
    runtime: Runtime,
    base_url: Option<&str>,
    capacity: Option<i32>,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<String>> {
    let previous = sqlx::query_scalar!("select version from services where id = $1 for update", id)
        .fetch_optional(&mut *conn)
        .await?;
    sqlx::query!(
        r#"insert into services (id, version, runtime, base_url, capacity, registered_at, updated_at)
           values ($1, $2, $3, $4, $5, $6, $6)
           on conflict (id) do update set
               version = excluded.version, runtime = excluded.runtime,
               base_url = excluded.base_url, capacity = excluded.capacity,
               unreachable_until = null, updated_at = excluded.updated_at"#,
        id,
        version,
        runtime as Runtime,
        base_url,
        capacity,
        now
    )
    .execute(&mut *conn)
    .await?;
    Ok(previous)
}

/// Every service, by id.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<ServiceRow>> {
    sqlx::query_as!(
        ServiceRow,
        r#"select s.id, s.version, s.runtime as "runtime: Runtime", s.base_url, s.capacity,
                  (select count(*) from tasks t where t.service_id = s.id) as "task_count!",
                  s.registered_at, s.updated_at
           from services s order by s.id"#
    )
    .fetch_all(pool)
    .await
}

/// Whether a service exists.
pub async fn exists(pool: &PgPool, id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from services where id = $1) as "exists!""#,
        id
    )
    .fetch_one(pool)
    .await
}

/// A plain HTTP worker service the scheduler can dispatch to.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The service.
    pub id: String,
    /// Where it listens.
    pub base_url: String,
    /// Attempts it takes at once, if it said.
    pub capacity: Option<i32>,
    /// Its tasks.
    pub task_ids: Vec<String>,
}

/// The plain HTTP worker services reachable at `now`, with their tasks.
pub async fn http_targets(pool: &PgPool, now: DateTime<Utc>) -> sqlx::Result<Vec<HttpTarget>> {
    sqlx::query_as!(
        HttpTarget,
        r#"select s.id, s.base_url as "base_url!", s.capacity,
                  array(select t.id from tasks t
                        where t.service_id = s.id and t.removed_in_version is null) as "task_ids!"
           from services s
           where s.runtime = 'http' and (s.unreachable_until is null or s.unreachable_until <= $1)"#,
        now
    )
    .fetch_all(pool)
    .await
}

/// Takes a worker service out of rotation until `until` (or its next
/// registration): a dispatch to it could not connect.
pub async fn mark_unreachable(pool: &PgPool, id: &str, until: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query!(
        "update services set unreachable_until = $2 where id = $1",
        id,
        until
    )
    .execute(pool)
    .await?;
    Ok(())
}
