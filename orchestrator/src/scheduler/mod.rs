//! The background work of a standalone orchestrator, also callable one
//! round at a time (tests, `POST /api/tick` later):
//!
//! - [`dispatch_round`] claims due runs for each target with free capacity
//!   (live PipeWeave hosts for WebAssembly tasks, plain HTTP worker
//!   services for theirs) and sends each attempt over HTTP;
//! - [`watch_round`] fails running attempts whose heartbeat went silent
//!   for twice its interval, or that overran their timeout;
//! - [`schedule_round`] fires the cron schedules that are due.
//!
//! Several orchestrators may run these against one database: claims skip
//! each other's locked rows, and every transition is guarded by the
//! attempt's token, so no attempt is dispatched or finished twice.

mod dispatch;
mod schedules;
pub(crate) use dispatch::runnable_tasks;
pub use schedules::{MISSED_AFTER, next_tick, parse_cron, schedule_round};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pipeweave_protocol::FailureReason;
use pipeweave_protocol::wire::AttemptError;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::api::AppState;
use crate::queue::{self, AttemptRef};
use crate::shutdown::Shutdown;
use crate::storage;

pub use dispatch::{
    DISPATCH_BATCH_BYTES, DISPATCH_TIMEOUT, Round, RoundReport, UNREACHABLE_BACKOFF, dispatch_round,
};

/// The plan settings of the connections that claim and complete runs
/// ([`claims_pool`], [`completions_pool`]): each of those statements gets
/// one plan, made once per connection, whatever the statistics say.
///
/// - No sequential or bitmap scans and no hash or merge joins: the claim
///   has one good plan whatever the table holds, an ordered scan of the
///   `runs_claimable` index that stops at the batch, and primary-key
///   lookups for the rows it updates; a completion looks its runs up by
///   primary key. The statistics of a queue table are nearly always wrong
///   (empty after install or truncation, a small queue before a burst),
///   and with them the planner chose plans whose cost grew with the table:
///   a bitmap scan of every queued run and a sort, to take ten (18–22 ms
///   per claim with 10,000 queued, before the table was analyzed), or a
///   hash join that read every run to update ten (5–6 ms with 10,000 runs,
///   after). With these settings the same claims took 0.6–1.5 ms. The
///   settings only make the other plans look expensive, so a statement
///   with no alternative still runs.
/// - `plan_cache_mode = force_generic_plan`: planned once per connection,
///   not at every execution. Left to choose, PostgreSQL kept planning the
///   claim afresh each time, because the generic plan's estimate (a limit
///   it cannot see) was higher than the custom plans', although with the
///   settings above both are the same plan. That planning took 0.4–0.8 ms
///   of every claim, on the path of every idle enqueue-to-start, and about
///   0.5 ms of every completion of 100 runs.
pub const FIXED_PLAN_SETTINGS: &[(&str, &str)] = &[
    ("enable_seqscan", "off"),
    ("enable_bitmapscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
    ("plan_cache_mode", "force_generic_plan"),
];

/// The session settings of the connections that claim: the
/// [`FIXED_PLAN_SETTINGS`] and `synchronous_commit = off`.
///
/// A claim is the one write on the path from enqueue to dispatch that the
/// client has not been promised anything about, so it does not wait for
/// its WAL flush (about 0.2 ms of the idle enqueue-to-start latency). The
/// commit is visible to every replica at once; only its durability is
/// deferred, by at most `wal_writer_delay`, and the next durable commit on
/// the server (an enqueue, a heartbeat, a callback) flushes it too. If the
/// database server crashes inside that window, the claim is undone: the
/// run is queued again and dispatched as the same attempt number with a
/// new token, and the lost attempt's heartbeats and callback get 409 — the
/// same outcome as an attempt whose worker went silent. Enqueues,
/// completions and every other write stay fully durable.
pub fn claim_session_settings() -> impl Iterator<Item = (&'static str, &'static str)> {
    std::iter::once(("synchronous_commit", "off")).chain(FIXED_PLAN_SETTINGS.iter().copied())
}

/// A pool of up to `connections` on the same database with the
/// [`claim_session_settings`], for claims only.
pub fn claims_pool(pool: &PgPool, connections: u32) -> PgPool {
    pool_with_settings(pool, connections, claim_session_settings())
}

/// A pool of up to `connections` on the same database with the
/// [`FIXED_PLAN_SETTINGS`] and durable commits, for completions
/// ([`storage::runs::succeed`]).
pub fn completions_pool(pool: &PgPool, connections: u32) -> PgPool {
    pool_with_settings(pool, connections, FIXED_PLAN_SETTINGS.iter().copied())
}

fn pool_with_settings(
    pool: &PgPool,
    connections: u32,
    settings: impl IntoIterator<Item = (&'static str, &'static str)>,
) -> PgPool {
    let options = pool.connect_options().as_ref().clone().options(settings);
    PgPoolOptions::new()
        .max_connections(connections)
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// Grace after an attempt's deadline before the orchestrator fails it
/// itself: a PipeWeave host enforces the timeout and reports it with more
/// detail, so it gets the chance first.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

// A host reports the real start of an attempt it held only after this long
// a wait; shorter waits must fit in the grace.
const _: () =
    assert!(TIMEOUT_GRACE.as_millis() > pipeweave_protocol::wire::START_REPORT_AFTER_MS as u128);

/// Most overdue attempts handled per watch round.
const WATCH_BATCH: i64 = 500;

/// The scheduler's shared state.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// The API state (pool, config, wake-ups).
    pub state: AppState,
    /// The targets as last read.
    targets: Arc<Mutex<dispatch::TargetCache>>,
}

impl Scheduler {
    /// A scheduler over `state`.
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            targets: Arc::default(),
        }
    }

    /// Claims and dispatches until shutdown: at once when runs are
    /// enqueued (LISTEN/NOTIFY) or capacity appears, and at least every
    /// poll interval.
    pub async fn run_dispatcher(self: Arc<Self>, shutdown: Shutdown) {
        let wake = self.state.wake_scheduler.clone();
        tokio::spawn(queue::notify::listen(
            self.state.pool.clone(),
            wake.clone(),
            shutdown.clone(),
        ));
        let poll = self.state.config.poll_interval;
        while !shutdown.is_stopping() {
            let busy = match dispatch_round(&self).await {
                Ok(round) => round.full,
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), "dispatch round failed");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Watches heartbeats and deadlines and fires due cron schedules until
    /// shutdown, and purges the dead-letter queue past its retention every
    /// [`PURGE_EVERY`].
    pub async fn run_watch(self: Arc<Self>, shutdown: Shutdown) {
        let every = self
            .state
            .config
            .poll_interval
            .min(Duration::from_millis(250));
        let mut last_purge: Option<std::time::Instant> = None;
        while !shutdown.is_stopping() {
            if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                last_purge = Some(std::time::Instant::now());
                if let Err(error) = purge_round(&self, Utc::now()).await {
                    tracing::warn!(error = %crate::error_chain(&error), "dead-letter purge failed");
                }
            }
            match watch_round(&self, Utc::now()).await {
                Ok(n) if n > 0 => self.state.wake_scheduler.notify_one(),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), "heartbeat watch failed")
                }
            }
            if let Err(error) = schedule_round(&self, Utc::now()).await {
                tracing::warn!(error = %crate::error_chain(&error), "schedule round failed");
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// How often a standalone orchestrator purges the dead-letter queue.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Deletes dead runs that died longer than `DLQ_RETENTION_DAYS` before
/// `now`; returns how many.
pub async fn purge_round(scheduler: &Scheduler, now: DateTime<Utc>) -> crate::Result<i64> {
    let retention = chrono::Duration::from_std(scheduler.state.config.dlq_retention)
        .unwrap_or(chrono::Duration::MAX);
    let Some(before) = now.checked_sub_signed(retention) else {
        return Ok(0);
    };
    let purged = storage::dlq::purge(&scheduler.state.pool, before).await?;
    if purged > 0 {
        tracing::info!(purged, %before, "dead-letter queue purged past its retention");
    }
    Ok(purged)
}

/// Fails every attempt that is overdue at `now`; returns how many.
pub async fn watch_round(scheduler: &Scheduler, now: DateTime<Utc>) -> crate::Result<usize> {
    let pool = &scheduler.state.pool;
    let grace = i64::try_from(TIMEOUT_GRACE.as_millis()).unwrap_or(i64::MAX);
    let overdue =
        storage::runs::overdue(pool, now, scheduler.state.started_at, grace, WATCH_BATCH).await?;
    let mut failed = 0;
    for run in overdue {
        let error = if run.past_deadline {
            AttemptError::decided(
                FailureReason::Timeout,
                "the attempt ran longer than its task's timeout",
            )
        } else {
            AttemptError::decided(
                FailureReason::HeartbeatTimeout,
                format!(
                    "no heartbeat for twice the heartbeat interval from {}",
                    run.target.as_deref().unwrap_or("its host or worker")
                ),
            )
        };
        if !run.past_deadline
            && let Some(target) = &run.target
        {
            // A silent host is probably gone: no more dispatches to it
            // until it pings again. (A no-op for worker services.)
            storage::hosts::mark_unreachable(pool, target).await?;
        }
        let reference = AttemptRef {
            run_id: run.id,
            attempt: run.attempt,
            attempt_token: run.attempt_token,
        };
        if queue::fail_attempt(pool, &scheduler.state.metrics, reference, &error, None, now)
            .await?
            .is_some()
        {
            failed += 1;
        }
    }
    Ok(failed)
}
