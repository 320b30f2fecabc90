//! The `hosts` table: PipeWeave hosts and when each last pinged.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Records a host's registration or ping.
pub async fn upsert(
    pool: &PgPool,
    id: &str,
    url: &str,
    capacity: i32,
    prefetch: i32,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into hosts (id, url, capacity, prefetch, registered_at, last_seen_at)
         values ($1, $2, $3, $4, $5, $5)
         on conflict (id) do update set url = excluded.url, capacity = excluded.capacity,
             prefetch = excluded.prefetch, last_seen_at = excluded.last_seen_at",
        id,
        url,
        capacity,
        prefetch,
        now
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A host the scheduler may dispatch to.
#[derive(Debug, Clone)]
pub struct LiveHost {
    /// Its id.
    pub id: String,
    /// Where it listens.
    pub url: String,
    /// Attempts it runs at once.
    pub capacity: i32,
    /// Dispatches it holds beyond `capacity` until a slot frees.
    pub prefetch: i32,
}

impl LiveHost {
    /// The most attempts it may have at once: running or held.
    pub fn accepts(&self) -> i64 {
        i64::from(self.capacity) + i64::from(self.prefetch)
    }
}

/// Hosts heard from since `since`.
pub async fn live(pool: &PgPool, since: DateTime<Utc>) -> sqlx::Result<Vec<LiveHost>> {
    sqlx::query_as!(
        LiveHost,
        "select h.id, h.url, h.capacity, h.prefetch from hosts h where h.last_seen_at >= $1 order by h.id",
        since
    )
    .fetch_all(pool)
    .await
}

/// Where a host receives requests, if `id` is a host.
pub async fn url(pool: &PgPool, id: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("select url from hosts where id = $1", id)
        .fetch_optional(pool)
        .await
}

/// Takes a host out of rotation until its next ping: a dispatch to it
/// could not connect.
pub async fn mark_unreachable(pool: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "update hosts set last_seen_at = '-infinity' where id = $1",
        id
    )
    .execute(pool)
    .await?;
    Ok(())
}
