//! The `runs` table, which is the queue: enqueue, claim, heartbeat, finish
//! an attempt, and read runs back for the API.
//!
//! Every statement that ends an attempt matches the run's current attempt
//! number and token while it is `running`, so a message from a superseded
//! attempt finds no row and changes nothing. Ending an attempt also lowers
//! its task's concurrency counter and records the attempt, in the same
//! statement.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::RunState;

/// A run to enqueue.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id.
    pub id: Uuid,
    /// Its task.
    pub task_id: String,
    /// Lower runs first; `None` takes the task's default.
    pub priority: Option<i32>,
    /// Not claimed before this.
    pub scheduled_at: DateTime<Utc>,
    /// Its input. A derived idempotency key reads it even when the row
    /// keeps only `input_path`.
    pub input: Value,
    /// Where the input is stored when it is too large to keep in the row.
    pub input_path: Option<String>,
    /// The backend holding `input_path`.
    pub backend_id: Option<String>,
    /// The caller's own data.
    pub metadata: Option<Value>,
    /// The caller's idempotency key, if given (else the task's descriptor
    /// may derive one).
    pub idempotency_key: Option<String>,
}

/// What [`enqueue`] did with one run, in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Inserted, with this priority.
    New {
        /// The run's priority (its own or the task's default).
        priority: i32,
    },
    /// Not inserted: this earlier run holds the idempotency key.
    Duplicate {
        /// The run that holds the key.
        run_id: Uuid,
    },
}

/// Inserts runs in one statement, all or none: if any names a task that
/// does not exist, nothing is inserted and the answer is empty. One
/// statement means one round trip and one notification for the schedulers.
///
/// A run with an idempotency key (its own `idempotency_key`, or one derived
/// as its task's descriptor says) is inserted only if it can take the key:
/// nobody holds it, the holder's TTL has passed, or the holder ended dead
/// or cancelled. Otherwise the holder is returned as a duplicate. The key's
/// primary key decides between concurrent duplicates, so they make one run;
/// the loser waits for the winner's commit and gets its run.
pub async fn enqueue<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    runs: &[NewRun],
    now: DateTime<Utc>,
    default_key_ttl_secs: i64,
) -> sqlx::Result<Vec<Enqueued>> {
    let ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
    let task_ids: Vec<String> = runs.iter().map(|r| r.task_id.clone()).collect();
    let priorities: Vec<Option<i32>> = runs.iter().map(|r| r.priority).collect();
    let scheduled: Vec<DateTime<Utc>> = runs.iter().map(|r| r.scheduled_at).collect();
    let inputs: Vec<Value> = runs.iter().map(|r| r.input.clone()).collect();
    let metadata: Vec<Value> = runs
        .iter()
        .map(|r| r.metadata.clone().unwrap_or(Value::Null))
        .collect();
    let keys: Vec<Option<String>> = runs.iter().map(|r| r.idempotency_key.clone()).collect();
    let input_paths: Vec<Option<String>> = runs.iter().map(|r| r.input_path.clone()).collect();
    let backend_ids: Vec<Option<String>> = runs.iter().map(|r| r.backend_id.clone()).collect();
    let rows = sqlx::query!(
        r#"with new as (
               select * from unnest($1::uuid[], $2::text[], $3::integer[], $4::timestamptz[],
                                    $5::jsonb[], $6::jsonb[], $8::text[], $10::text[], $11::text[])
                   with ordinality
                   as new (id, task_id, priority, scheduled_at, input, metadata, given_key,
                           input_path, backend_id, position)
           ),
           known as (
               select new.*, tasks.priority as default_priority,
                      case
                          when new.given_key is not null then 'key:' || new.given_key
                          when jsonb_typeof(tasks.descriptor -> 'idempotency') = 'object' then
                              'derived:' || encode(sha256(convert_to(
                                  case when jsonb_array_length(coalesce(
                                           tasks.descriptor -> 'idempotency' -> 'inputFields', '[]')) = 0
                                       then new.input
                                       else (select jsonb_agg(new.input #> array(
                                                 select replace(replace(part, '~1', '/'), '~0', '~')
                                                 from unnest(string_to_array(substr(pointer, 2), '/')) part))
                                             from jsonb_array_elements_text(
                                                 tasks.descriptor -> 'idempotency' -> 'inputFields') pointer)
                                  end::text
                                  || case when coalesce((tasks.descriptor -> 'idempotency'
                                                         ->> 'includeCodeVersion')::boolean, true)
                                          then ' @v' || tasks.code_version else '' end,
                                  'UTF8')), 'hex')
                      end as idempotency_key,
                      coalesce((tasks.descriptor -> 'idempotency' ->> 'ttlSecs')::bigint, $9)
                          as key_ttl_secs
               from new join tasks on tasks.id = new.task_id and tasks.removed_in_version is null
           ),
           complete as (
               select (select count(*) from known) = (select count(*) from new) as ok
           ),
           keyed as (
               insert into idempotency_keys (task_id, key, run_id, expires_at)
               select distinct on (task_id, idempotency_key)
                      task_id, idempotency_key, id, $7::timestamptz + key_ttl_secs * interval '1 second'
               from known
               where idempotency_key is not null and (select ok from complete)
               order by task_id, idempotency_key, position
               -- Always "update", so RETURNING names the holder even when
               -- it is a concurrent enqueue's run, committed after this
               -- statement's snapshot (the conflicting row is the latest
               -- version). The key changes hands only on positive evidence
               -- that it is free: expired, or its holder ended dead or
               -- cancelled. A holder this snapshot cannot see keeps it.
               on conflict (task_id, key) do update
                   set (run_id, expires_at) = (
                       select case when free then excluded.run_id else idempotency_keys.run_id end,
                              case when free then excluded.expires_at
                                   else idempotency_keys.expires_at end
                       from (select idempotency_keys.expires_at <= $7
                                    or exists (
                                        select from runs holder
                                        where holder.id = idempotency_keys.run_id
                                          and holder.state in ('dead', 'cancelled')) as free) decided)
               returning task_id, key, run_id
           ),
           inserted as (
               insert into runs (id, task_id, priority, scheduled_at, input, input_path,
                                 backend_id, metadata, created_at)
               select id, task_id, coalesce(priority, default_priority), scheduled_at,
                      case when input_path is null then input end, input_path, backend_id,
                      nullif(metadata, 'null'::jsonb), $7
               from known
               where (select ok from complete)
                 and (idempotency_key is null or id in (select run_id from keyed))
               returning id, priority
           )
           -- `inserted` runs to completion though nothing reads it (a
           -- data-modifying CTE always does); the priority comes from
           -- `known` under the insert's own condition. Joining `inserted`
           -- back by id was a nested loop in the cached generic plan,
           -- which expects ten rows from each unnest: a million
           -- comparisons for a batch of 1,000.
           select known.id as "id!",
                  case when known.idempotency_key is null or known.id in (select run_id from keyed)
                       then coalesce(known.priority, known.default_priority) end as "priority?",
                  keyed.run_id as "holder?"
           from known
           left join keyed
               on keyed.task_id = known.task_id and keyed.key = known.idempotency_key
           where (select ok from complete)
           order by known.position"#,
        &ids,
        &task_ids,
        &priorities as &[Option<i32>],
        &scheduled,
        &inputs,
        &metadata,
        now,
        &keys as &[Option<String>],
        default_key_ttl_secs,
        &input_paths as &[Option<String>],
        &backend_ids as &[Option<String>]
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| match (row.priority, row.holder) {
            (Some(priority), _) => Enqueued::New { priority },
            (None, Some(run_id)) => Enqueued::Duplicate { run_id },
            // Not inserted and no holder: cannot happen inside one
            // statement; treat it as a duplicate of itself so the caller
            // shows the run id it asked for.
            (None, None) => Enqueued::Duplicate { run_id: row.id },
        })
        .collect())
}

/// A run claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The run.
    pub id: Uuid,
    /// Its task.
    pub task_id: String,
    /// The attempt number.
    pub attempt: i32,
    /// The attempt's token.
    pub attempt_token: Uuid,
    /// The run's input, when the row keeps it.
    pub input: Option<Value>,
    /// Where the input is stored otherwise.
    pub input_path: Option<String>,
    /// The backend holding the run's data; the default when `None`.
    pub backend_id: Option<String>,
    /// The pipeline run it belongs to, if any.
    pub pipeline_run_id: Option<Uuid>,
    /// The code version the attempt runs: the task's now, or the one a
    /// dead-letter retry pinned.
    pub code_version: i32,
    /// The code hash the attempt runs.
    pub code_hash: String,
    /// The task's timeout.
    pub timeout_ms: i64,
    /// The task's heartbeat interval.
    pub heartbeat_interval_ms: i64,
    /// The task's descriptor names secrets, so its dispatch carries them.
    pub declares_secrets: bool,
}

/// Claims up to `limit` due runs of the tasks in `task_ids` for `target`,
/// in priority order (lower first, then earliest scheduled), and starts an
/// attempt of each, so that `target` has at most `capacity` attempts
/// running. One statement:
///
/// - the target's running attempts are counted in the statement, so the
///   caller needs no query of its own before claiming;
/// - tasks with a concurrency limit are locked `skip locked`; a task that
///   another replica is claiming right now is left alone this round, and a
///   task at its limit is skipped, so its runs never crowd out others;
/// - due runs are locked `skip locked` in the order of the `runs_claimable`
///   index, then trimmed to each limited task's free slots;
/// - the limited tasks' counters rise by what was claimed, and each run
///   gets its attempt number, token, deadline and the task's current code.
pub async fn claim(
    pool: &PgPool,
    task_ids: &[String],
    limit: i64,
    now: DateTime<Utc>,
    target: &str,
    capacity: i64,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_file_as!(
        Claimed,
        "queries/claim.sql",
        task_ids,
        limit,
        now,
        target,
        capacity
    )
    .fetch_all(pool)
    .await
}

/// A successful attempt to record.
#[derive(Debug, Clone)]
pub struct Success {
    /// The run.
    pub run_id: Uuid,
    /// The attempt reporting.
    pub attempt: i32,
    /// Its token.
    pub attempt_token: Uuid,
    /// Its output and assets (a `ResultRef`).
    pub result: Value,
    /// Where its worker stored its log.
    pub logs_path: Option<String>,
}

/// Marks runs outside pipelines succeeded, for the attempts that are still
/// current; returns the runs that changed. Many at once, in one statement.
/// A pipeline's task run is left alone: see [`succeed_in_pipeline`].
///
/// Run it on [`crate::scheduler::completions_pool`]: with its fixed-plan
/// settings both statements (one for a single run, `queries/succeed.sql`
/// for several) are planned once per connection, as primary-key lookups,
/// whatever the table's statistics say. Planning `queries/succeed.sql` at
/// every execution instead cost about 0.5 ms per batch of 100.
pub async fn succeed(
    pool: &PgPool,
    successes: &[Success],
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Uuid>> {
    if let [success] = successes {
        return succeed_one(pool, success, now).await;
    }
    let ids: Vec<Uuid> = successes.iter().map(|s| s.run_id).collect();
    let attempts: Vec<i32> = successes.iter().map(|s| s.attempt).collect();
    let tokens: Vec<Uuid> = successes.iter().map(|s| s.attempt_token).collect();
    let results: Vec<Value> = successes.iter().map(|s| s.result.clone()).collect();
    let logs: Vec<Option<String>> = successes.iter().map(|s| s.logs_path.clone()).collect();
    sqlx::query_file_scalar!(
        "queries/succeed.sql",
        &ids,
        &attempts,
        &tokens,
        &results,
        now,
        &logs as &[Option<String>]
    )
    .fetch_all(pool)
    .await
}

/// [`succeed`] for one run.
async fn succeed_one(
    pool: &PgPool,
    success: &Success,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"with finished as (
               update runs set state = 'succeeded', finished_at = $5, result = $4, error = null,
                   attempt_token = null, logs_path = $6
               where id = $1 and attempt = $2 and attempt_token = $3
                 and pipeline_run_id is null
               returning id, task_id
           ),
           released as (
               update tasks set running_count = greatest(tasks.running_count - 1, 0)
               from finished
               where tasks.id = finished.task_id and tasks.concurrency > 0
           )
           select id as "id!" from finished"#,
        success.run_id,
        success.attempt,
        success.attempt_token,
        success.result,
        now,
        success.logs_path,
    )
    .fetch_all(pool)
    .await
}

/// Marks a pipeline's task run succeeded with what it selected to run next,
/// if its attempt is still current; returns whether it was. The caller
/// holds its pipeline run's lock and decides what runs next in the same
/// transaction (`queue::succeed_in_pipeline`).
pub async fn succeed_in_pipeline(
    conn: &mut PgConnection,
    success: &Success,
    selected_next: &[String],
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let finished = sqlx::query!(
        r#"with finished as (
               update runs set state = 'succeeded', finished_at = $5, result = $4, error = null,
                   attempt_token = null, logs_path = $6, selected_next = $7
               where id = $1 and attempt = $2 and attempt_token = $3
                 and pipeline_run_id is not null
               returning task_id
           ),
           released as (
               update tasks set running_count = greatest(tasks.running_count - 1, 0)
               from finished
               where tasks.id = finished.task_id and tasks.concurrency > 0
           )
           select count(*) as "finished!" from finished"#,
        success.run_id,
        success.attempt,
        success.attempt_token,
        success.result,
        now,
        success.logs_path,
        selected_next
    )
    .fetch_one(conn)
    .await?;
    Ok(finished.finished == 1)
}

/// The task of a run.
pub async fn task_of(conn: &mut PgConnection, run_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("select task_id from runs where id = $1", run_id)
        .fetch_optional(conn)
        .await
}

/// A running attempt, locked, with what deciding its failure needs.
#[derive(Debug, Clone)]
pub struct RunningAttempt {
    /// The run.
    pub id: Uuid,
    /// Its task.
    pub task_id: String,
    /// The attempt.
    pub attempt: i32,
    /// Its token.
    pub attempt_token: Uuid,
    /// The task's descriptor now (its retry policy).
    pub descriptor: Value,
}

/// Locks a run's current attempt if the run is running.
pub async fn lock_running(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> sqlx::Result<Option<RunningAttempt>> {
    sqlx::query_as!(
        RunningAttempt,
        r#"select runs.id, runs.task_id, runs.attempt, runs.attempt_token as "attempt_token!", tasks.descriptor
           from runs join tasks on tasks.id = runs.task_id
           where runs.id = $1 and runs.state = 'running'
           for update of runs"#,
        run_id
    )
    .fetch_optional(conn)
    .await
}

/// Ends the current attempt of a run locked with [`lock_running`] as
/// failed, with its error and, if its worker stored one, its log: the run
/// goes to `next` (`awaiting_retry` at `retry_at`, or `dead`). Returns
/// whether the attempt was still current.
pub async fn fail(
    conn: &mut PgConnection,
    run: &RunningAttempt,
    error: &Value,
    logs_path: Option<&str>,
    next: RunState,
    retry_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let finished_at = (next != RunState::AwaitingRetry).then_some(now);
    let recorded = sqlx::query!(
        r#"with failed as (
               update runs set state = $4, scheduled_at = coalesce($5, runs.scheduled_at),
                   error = $6, finished_at = $7, attempt_token = null
               where runs.id = $1 and runs.state = 'running'
                 and runs.attempt = $2 and runs.attempt_token = $3
               returning runs.id, runs.task_id, runs.attempt, runs.target, runs.code_version,
                         runs.code_hash, runs.started_at
           ),
           released as (
               update tasks set running_count = greatest(tasks.running_count - 1, 0)
               from failed
               where tasks.id = failed.task_id and tasks.concurrency > 0
           )
           insert into attempts (run_id, attempt, outcome, target, code_version, code_hash,
                                 started_at, finished_at, error, logs_path)
           select id, attempt, 'failed', target, code_version, code_hash, started_at, $8, $6, $9
           from failed"#,
        run.id,
        run.attempt,
        run.attempt_token,
        next as RunState,
        retry_at,
        error,
        finished_at,
        now,
        logs_path
    )
    .execute(conn)
    .await?;
    Ok(recorded.rows_affected() == 1)
}

/// What [`cancel`] did to one run.
#[derive(Debug, Clone)]
pub struct Cancelled {
    /// The run.
    pub run_id: Uuid,
    /// The state the run was in.
    pub previous: RunState,
    /// Its current (or last) attempt.
    pub attempt: i32,
    /// Whether this call cancelled it (false: it had already ended).
    pub cancelled: bool,
    /// The token of the attempt that was running, for telling its host.
    pub attempt_token: Option<Uuid>,
    /// Where that attempt ran.
    pub target: Option<String>,
}

/// Cancels runs that have not ended, in one statement: a queued or
/// retry-waiting run simply ends; a running one ends too, its attempt is
/// recorded as cancelled (its token is cleared, so its heartbeats and
/// callback change nothing from now on), and its task's running count
/// drops. Returns one row per run found, in id order.
pub async fn cancel(
    conn: &mut PgConnection,
    run_ids: &[Uuid],
    cancelled_by: &str,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Cancelled>> {
    sqlx::query_as!(
        Cancelled,
        r#"with current as (
               select id, task_id, state, attempt, attempt_token, target, code_version,
                      code_hash, started_at
               from runs where id = any($1)
               order by id
               for update
           ),
           ended as (
               update runs set state = 'cancelled', finished_at = $4, attempt_token = null,
                   cancelled_by = $2, cancel_reason = $3
               from current
               where runs.id = current.id
                 and current.state in ('queued', 'awaiting_retry', 'running')
               returning runs.id
           ),
           interrupted as (
               insert into attempts (run_id, attempt, outcome, target, code_version, code_hash,
                                     started_at, finished_at, error)
               select id, attempt, 'cancelled', target, code_version, code_hash, started_at, $4,
                      jsonb_build_object('message', 'cancelled by ' || $2, 'reason', 'cancelled',
                                         'retryable', false)
               from current where state = 'running'
           ),
           released as (
               update tasks set running_count = greatest(tasks.running_count - per_task.running, 0)
               from (select task_id, count(*)::integer as running from current
                     where state = 'running' group by task_id) per_task
               where tasks.id = per_task.task_id and tasks.concurrency > 0
           )
           select id as run_id, state as "previous: RunState", attempt,
                  exists (select from ended where ended.id = current.id) as "cancelled!",
                  attempt_token, target
           from current
           order by id"#,
        run_ids,
        cancelled_by,
        reason,
        now
    )
    .fetch_all(conn)
    .await
}

/// A heartbeat of a run's current attempt.
#[derive(Debug, Clone, Copy)]
pub struct Beat<'a> {
    /// The run.
    pub run_id: Uuid,
    /// The attempt that sent it.
    pub attempt: i32,
    /// Its token.
    pub attempt_token: Uuid,
    /// Progress, 0 to 100, if given.
    pub progress: Option<i16>,
    /// What the task is doing now, if given.
    pub message: Option<&'a str>,
    /// The attempt waited on its host for a slot and starts now: its
    /// timeout counts from `now` (`started_at` moves to `now`, and the
    /// deadline with it). Honoured only for an attempt on a PipeWeave
    /// host, which shares the deployment's secret and sends it once; a
    /// plain HTTP worker could otherwise keep pushing its deadline back.
    pub started: bool,
}

/// Records a heartbeat (and progress, if given) of a run's current
/// attempt at `now`. Returns whether the attempt was current.
pub async fn heartbeat(pool: &PgPool, beat: Beat<'_>, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        "update runs set heartbeat_at = $4, progress = coalesce($5, progress),
             progress_message = coalesce($6, progress_message),
             deadline_at = case when $7::boolean and target in (select id from hosts)
                                then $4::timestamptz + (deadline_at - started_at)
                                else deadline_at end,
             started_at = case when $7::boolean and target in (select id from hosts)
                               then $4::timestamptz else started_at end
         where id = $1 and state = 'running' and attempt = $2 and attempt_token = $3",
        beat.run_id,
        beat.attempt,
        beat.attempt_token,
        now,
        beat.progress,
        beat.message,
        beat.started
    )
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// A run's state and current attempt, to explain why a message was
/// refused.
#[derive(Debug, Clone)]
pub struct AttemptState {
    /// The run's state.
    pub state: RunState,
    /// Its current attempt.
    pub attempt: i32,
}

/// A run's state and current attempt.
pub async fn attempt_state(pool: &PgPool, run_id: Uuid) -> sqlx::Result<Option<AttemptState>> {
    sqlx::query_as!(
        AttemptState,
        r#"select state as "state: RunState", attempt from runs where id = $1"#,
        run_id
    )
    .fetch_optional(pool)
    .await
}

/// A running attempt that went silent or overran.
#[derive(Debug, Clone)]
pub struct Overdue {
    /// The run.
    pub id: Uuid,
    /// The attempt.
    pub attempt: i32,
    /// Its token.
    pub attempt_token: Uuid,
    /// Whether it overran its deadline (else its heartbeat went silent).
    pub past_deadline: bool,
    /// Its target.
    pub target: Option<String>,
}

/// Running attempts whose heartbeat is older than twice their interval, or
/// whose deadline plus `grace` has passed. Heartbeats older than
/// `watching_since` count from then: after a restart, hosts get a full
/// interval to reach this orchestrator again before their attempts are
/// given up.
pub async fn overdue(
    pool: &PgPool,
    now: DateTime<Utc>,
    watching_since: DateTime<Utc>,
    grace_ms: i64,
    limit: i64,
) -> sqlx::Result<Vec<Overdue>> {
    sqlx::query_as!(
        Overdue,
        r#"select id, attempt, attempt_token as "attempt_token!", (deadline_at + $3::bigint * interval '1 millisecond' < $1) as "past_deadline!", target
           from runs
           where state = 'running'
             and (greatest(heartbeat_at, $2) + 2 * heartbeat_interval_ms * interval '1 millisecond' < $1
                  or deadline_at + $3 * interval '1 millisecond' < $1)
           order by started_at
           limit $4"#,
        now,
        watching_since,
        grace_ms,
        limit
    )
    .fetch_all(pool)
    .await
}

/// A run as the API shows it.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// Its id.
    pub id: Uuid,
    /// Its task.
    pub task_id: String,
    /// Its state.
    pub state: RunState,
    /// Its priority.
    pub priority: i32,
    /// Not claimed before this.
    pub scheduled_at: DateTime<Utc>,
    /// Its input, when the row keeps it.
    pub input: Option<Value>,
    /// Where the input is stored otherwise.
    pub input_path: Option<String>,
    /// The backend holding the run's data; the default when `None`.
    pub backend_id: Option<String>,
    /// The log of the successful attempt, when its worker stored one.
    pub logs_path: Option<String>,
    /// The pipeline run it belongs to, if any.
    pub pipeline_run_id: Option<Uuid>,
    /// The caller's data.
    pub metadata: Option<Value>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// Current or last attempt.
    pub attempt: i32,
    /// Where that attempt went.
    pub target: Option<String>,
    /// Its code version.
    pub code_version: Option<i32>,
    /// Its code hash.
    pub code_hash: Option<String>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// Its last heartbeat.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Its progress.
    pub progress: Option<i16>,
    /// Its progress message.
    pub progress_message: Option<String>,
    /// When the run ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Output and assets.
    pub result: Option<Value>,
    /// The last error.
    pub error: Option<Value>,
    /// Who cancelled it, if it was cancelled.
    pub cancelled_by: Option<String>,
    /// Why, if they said.
    pub cancel_reason: Option<String>,
}

/// One run.
pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as!(
        RunRow,
        r#"select id, task_id, state as "state: RunState", priority, scheduled_at, input, input_path,
                  backend_id, logs_path, pipeline_run_id, metadata, created_at, attempt, target, code_version, code_hash, started_at, heartbeat_at,
                  progress, progress_message, finished_at, result, error, cancelled_by,
                  cancel_reason
           from runs where id = $1"#,
        id
    )
    .fetch_optional(pool)
    .await
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only runs in these states (all when empty).
    pub states: Vec<RunState>,
    /// Only runs of this task.
    pub task_id: Option<String>,
    /// Only runs created at or after this.
    pub created_after: Option<DateTime<Utc>>,
    /// Only runs created before this.
    pub created_before: Option<DateTime<Utc>>,
}

/// A page of runs, newest first, and how many match in all.
pub async fn list(
    pool: &PgPool,
    filter: &ListFilter,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<RunRow>, i64)> {
    let states: Vec<RunState> = if filter.states.is_empty() {
        RunState::ALL.to_vec()
    } else {
        filter.states.clone()
    };
    let rows = sqlx::query_as!(
        RunRow,
        r#"select id, task_id, state as "state: RunState", priority, scheduled_at, input, input_path,
                  backend_id, logs_path, pipeline_run_id, metadata, created_at, attempt, target, code_version, code_hash, started_at, heartbeat_at,
                  progress, progress_message, finished_at, result, error, cancelled_by,
                  cancel_reason
           from runs
           where state = any($1::run_state[])
             and ($2::text is null or task_id = $2)
             and ($3::timestamptz is null or created_at >= $3)
             and ($4::timestamptz is null or created_at < $4)
           order by id desc
           limit $5 offset $6"#,
        &states as &[RunState],
        filter.task_id.as_deref(),
        filter.created_after,
        filter.created_before,
        limit,
        offset
    )
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar!(
        r#"select count(*) as "count!" from runs
           where state = any($1::run_state[])
             and ($2::text is null or task_id = $2)
             and ($3::timestamptz is null or created_at >= $3)
             and ($4::timestamptz is null or created_at < $4)"#,
        &states as &[RunState],
        filter.task_id.as_deref(),
        filter.created_after,
        filter.created_before
    )
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// Queue statistics.
#[derive(Debug, Clone)]
pub struct Counts {
    /// Queued and due.
    pub pending: i64,
    /// Queued for later (delayed).
    pub waiting: i64,
    /// Running.
    pub running: i64,
    /// Failed, another attempt scheduled.
    pub awaiting_retry: i64,
    /// Succeeded.
    pub succeeded: i64,
    /// Dead.
    pub dead: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// When the oldest due run was scheduled.
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// Counts runs by state.
pub async fn counts(pool: &PgPool, now: DateTime<Utc>) -> sqlx::Result<Counts> {
    sqlx::query_as!(
        Counts,
        r#"select
               count(*) filter (where state = 'queued' and scheduled_at <= $1) as "pending!",
               count(*) filter (where state = 'queued' and scheduled_at > $1) as "waiting!",
               count(*) filter (where state = 'running') as "running!",
               count(*) filter (where state = 'awaiting_retry') as "awaiting_retry!",
               count(*) filter (where state = 'succeeded') as "succeeded!",
               count(*) filter (where state = 'dead') as "dead!",
               count(*) filter (where state = 'cancelled') as "cancelled!",
               min(scheduled_at) filter (where state = 'queued' and scheduled_at <= $1) as oldest_pending
           from runs"#,
        now
    )
    .fetch_one(pool)
    .await
}
