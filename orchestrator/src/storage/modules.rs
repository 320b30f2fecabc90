//! The `modules` table: uploaded WebAssembly components by code hash.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Stores a module; storing the same bytes again changes nothing.
pub async fn insert(
    pool: &PgPool,
    code_hash: &str,
    bytes: &[u8],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into modules (code_hash, bytes, uploaded_at) values ($1, $2, $3)
         on conflict (code_hash) do nothing",
        code_hash,
        bytes,
        now
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A module's bytes.
pub async fn get(pool: &PgPool, code_hash: &str) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar!("select bytes from modules where code_hash = $1", code_hash)
        .fetch_optional(pool)
        .await
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
