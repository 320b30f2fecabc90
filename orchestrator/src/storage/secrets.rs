//! The `secrets` table: task secrets, sealed (see
//! `pipeweave_storage::secret_box`). Names and times are in the clear; a
//! value is only ever read to be sealed again for a dispatch.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A secret's name and when it was set, never its value.
#[derive(Debug, Clone)]
pub struct SecretName {
    /// Its name.
    pub name: String,
    /// When it was first set.
    pub created_at: DateTime<Utc>,
    /// When its value last changed.
    pub updated_at: DateTime<Utc>,
}

/// Sets a secret's sealed value; returns its row (new when
/// `created_at == updated_at`).
pub async fn put(
    pool: &PgPool,
    name: &str,
    sealed: &[u8],
    now: DateTime<Utc>,
) -> sqlx::Result<SecretName> {
    sqlx::query_as!(
        SecretName,
        r#"insert into secrets (name, sealed, created_at, updated_at)
           values ($1, $2, $3, $3)
           on conflict (name) do update set sealed = excluded.sealed, updated_at = excluded.updated_at
           returning name, created_at, updated_at"#,
        name,
        sealed,
        now
    )
    .fetch_one(pool)
    .await
}

/// Every secret's name, in order.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<SecretName>> {
    sqlx::query_as!(
        SecretName,
        "select name, created_at, updated_at from secrets order by name"
    )
    .fetch_all(pool)
    .await
}

/// Deletes a secret; returns whether it existed.
pub async fn delete(pool: &PgPool, name: &str) -> sqlx::Result<bool> {
    let deleted = sqlx::query!("delete from secrets where name = $1", name)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

/// A secret one of the given tasks declares and the table holds.
#[derive(Debug, Clone)]
pub struct DeclaredSecret {
    /// The task that declares it.
    pub task_id: String,
    /// Its name.
    pub name: String,
    /// Its sealed value.
    pub sealed: Vec<u8>,
}

/// The sealed values of the secrets the tasks `task_ids` declare (their
/// descriptors' `secrets`) that the table holds: one statement for a whole
/// claimed batch.
pub async fn declared_by(pool: &PgPool, task_ids: &[String]) -> sqlx::Result<Vec<DeclaredSecret>> {
    sqlx::query_as!(
        DeclaredSecret,
        r#"select t.id as "task_id!", s.name as "name!", s.sealed as "sealed!"
           from tasks t
           cross join lateral jsonb_array_elements_text(
               case when jsonb_typeof(t.descriptor -> 'secrets') = 'array'
                    then t.descriptor -> 'secrets' else '[]'::jsonb end
           ) as declared (name)
           join secrets s on s.name = declared.name
           where t.id = any($1)"#,
        task_ids
    )
    .fetch_all(pool)
    .await
}
