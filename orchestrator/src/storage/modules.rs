//! The `modules` table: what is known about each uploaded WebAssembly
//! component. The bytes are in object storage
//! ([`pipeweave_storage::layout::module`] on the backend `backend_id`), except for modules
//! uploaded before migration 0007, whose bytes are still in the row.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Records a module stored on `backend_id`; recording
/// the same module again changes nothing.
pub async fn insert(
    pool: &PgPool,
    code_hash: &str,
    size: i64,
    backend_id: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into modules (code_hash, size, backend_id, uploaded_at) values ($1, $2, $3, $4)
         on conflict (code_hash) do nothing",
        code_hash,
        size,
        backend_id,
        now
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Where a module's bytes are.
#[derive(Debug)]
pub enum Stored {
    /// In object storage, on this backend.
    Backend(String),
    /// In the row (uploaded before migration 0007).
    Inline(Vec<u8>),
}

/// Where a module is, if it was uploaded.
pub async fn get(pool: &PgPool, code_hash: &str) -> sqlx::Result<Option<Stored>> {
    let row = sqlx::query!(
        "select bytes, backend_id from modules where code_hash = $1",
        code_hash
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|row| match (row.backend_id, row.bytes) {
        (Some(backend), _) => Some(Stored::Backend(backend)),
        (None, Some(bytes)) => Some(Stored::Inline(bytes)),
        (None, None) => None,
    }))
}

/// Which of `hashes` have no uploaded module.
pub async fn missing(pool: &PgPool, hashes: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"select h as "h!" from unnest($1::text[]) h
           where not exists (select 1 from modules m where m.code_hash = h)"#,
        hashes
    )
    .fetch_all(pool)
    .await
}
