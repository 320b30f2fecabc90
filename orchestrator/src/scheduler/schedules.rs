//! Firing cron schedules. Each round locks the schedules that are due
//! (`for update skip locked`, so replicas share them without firing one
//! twice), fires each in a savepoint (a task schedule enqueues a run with
//! the idempotency key `schedule:{id}:{tick}`, a pipeline schedule
//! triggers a run), and moves it to its next tick, all in one transaction.
//!
//! Missed ticks: a tick fired more than [`MISSED_AFTER`] late was missed
//! (no orchestrator ran, or none could reach the database). Under the
//! `run-once` policy, the default, the schedule fires once for all the
//! ticks it missed and then keeps to its times; under `skip` it fires
//! nothing until its next tick. Either way it never fires a burst.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::Scheduler;
use crate::queue::{self, PipelineInput};
use crate::storage::runs::{Enqueued, NewRun};
use crate::storage::schedules::{MissedTicks, ScheduleRow};
use crate::{PipelineRunId, RunId, storage};

/// How late a tick may fire and still count as on time.
pub const MISSED_AFTER: Duration = Duration::from_secs(60);

/// Most schedules fired per round.
const SCHEDULE_BATCH: i64 = 100;

/// Parses a cron expression: five fields (minute granularity) or six (with
/// seconds first), aliases such as `@hourly`, in UTC.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(text)
        .map_err(|error| error.to_string())
}

/// The first tick of `cron` strictly after `after`.
pub fn next_tick(cron: &croner::Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after, false).ok()
}

/// Fires the schedules due at `now`; returns how many fired.
pub async fn schedule_round(scheduler: &Scheduler, now: DateTime<Utc>) -> crate::Result<usize> {
    let state = &scheduler.state;
    let mut tx = state.pool.begin().await?;
    let due = storage::schedules::lock_due(&mut tx, now, SCHEDULE_BATCH).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let default_ttl = i64::try_from(state.config.idempotency_ttl.as_secs()).unwrap_or(i64::MAX);
    let mut fired = 0;
    for schedule in due {
        let tick = schedule.next_fire_at;
        let next = parse_cron(&schedule.cron)
            .ok()
            .and_then(|cron| next_tick(&cron, now))
            // A schedule whose expression no longer parses (or never fires
            // again) waits a year rather than spinning.
            .unwrap_or(now + chrono::Duration::days(365));
        let late = (now - tick).to_std().unwrap_or_default();
        if late > MISSED_AFTER && schedule.missed == MissedTicks::Skip {
            tracing::info!(schedule = %schedule.id, %tick, "missed tick skipped");
            storage::schedules::advance(&mut tx, &schedule.id, next, None, None, None).await?;
            continue;
        }
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        match fire(&mut savepoint, &schedule, tick, now, default_ttl).await {
            Ok(run_id) => {
                savepoint.commit().await?;
                storage::schedules::advance(
                    &mut tx,
                    &schedule.id,
                    next,
                    Some(tick),
                    Some(run_id),
                    None,
                )
                .await?;
                fired += 1;
                tracing::info!(schedule = %schedule.id, %tick, "schedule fired");
            }
            Err(message) => {
                savepoint.rollback().await?;
                tracing::warn!(schedule = %schedule.id, %tick, "schedule did not fire: {message}");
                storage::schedules::advance(
                    &mut tx,
                    &schedule.id,
                    next,
                    None,
                    None,
                    Some(&message),
                )
                .await?;
            }
        }
    }
    tx.commit().await?;
    if fired > 0 {
        state.wake_scheduler.notify_one();
    }
    Ok(fired)
}

/// Fires one tick; returns the task run or pipeline run it made, or why it
/// made none.
async fn fire(
    conn: &mut sqlx::PgConnection,
    schedule: &ScheduleRow,
    tick: DateTime<Utc>,
    now: DateTime<Utc>,
    default_ttl: i64,
) -> Result<uuid::Uuid, String> {
    let metadata = json!({ "scheduleId": schedule.id, "scheduledFor": tick });
    if let Some(task_id) = &schedule.task_id {
        let run = NewRun {
            id: RunId::new().0,
            task_id: task_id.clone(),
            priority: None,
            scheduled_at: now,
            input: schedule.input.clone(),
            input_path: None,
            backend_id: None,
            metadata: Some(metadata),
            idempotency_key: Some(format!("schedule:{}:{}", schedule.id, tick.to_rfc3339())),
        };
        let outcome =
            storage::runs::enqueue(&mut *conn, std::slice::from_ref(&run), now, default_ttl)
                .await
                .map_err(|error| format!("cannot enqueue: {error}"))?;
        return match outcome.first() {
            Some(Enqueued::New { .. }) => Ok(run.id),
            Some(Enqueued::Duplicate { run_id }) => Ok(*run_id),
            None => Err(format!("task {task_id:?} is not registered")),
        };
    }
    let pipeline_id = schedule.pipeline_id.as_deref().unwrap_or_default();
    let run_id = PipelineRunId::new();
    queue::trigger_pipeline(
        conn,
        pipeline_id,
        run_id,
        PipelineInput::Inline(schedule.input.clone()),
        None,
        Some(metadata),
        now,
    )
    .await
    .map_err(|error| error.to_string())?;
    Ok(run_id.0)
}
