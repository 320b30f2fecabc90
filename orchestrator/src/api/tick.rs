//! `POST /api/tick`: one bounded round of the scheduler's work — fail
//! overdue attempts, purge the dead-letter queue past its retention, then
//! claim and dispatch what is due — for serverless
//! mode, where a cron job calls it instead of a background loop. It works
//! in standalone mode too. Several ticks at once are safe: claims skip each
//! other's rows. In maintenance mode a tick still fails overdue attempts
//! but claims nothing, and says so (`"maintenance": true`).

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ApiError;
use crate::scheduler::{self, Scheduler};
use crate::storage;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(tick))
}

/// What one tick did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct TickReport {
    /// Runs claimed.
    claimed: usize,
    /// Attempts handed to a host or worker.
    dispatched: usize,
    /// Attempts whose dispatch failed (they are retried or dead-lettered).
    dispatch_failed: usize,
    /// Running attempts failed for a timeout or lost heartbeats.
    overdue_failed: usize,
    /// Dead runs purged past the retention.
    dlq_purged: i64,
    /// Cron schedules fired.
    schedules_fired: usize,
    /// Whether maintenance mode is on (then nothing is claimed).
    maintenance: bool,
    /// How long the tick took.
    duration_ms: u64,
}

/// `POST /api/tick`: one bounded round of scheduling.
#[utoipa::path(
    post,
    path = "/api/tick",
    tag = "operations",
    responses((status = 200, description = "What the round did", body = TickReport))
)]
async fn tick(State(state): State<AppState>) -> Result<Json<TickReport>, ApiError> {
    let started = Instant::now();
    let scheduler = Scheduler::new(state);
    let failed_overdue = scheduler::watch_round(&scheduler, chrono::Utc::now()).await?;
    let dlq_purged = scheduler::purge_round(&scheduler, chrono::Utc::now()).await?;
    let schedules_fired = scheduler::schedule_round(&scheduler, chrono::Utc::now()).await?;
    let maintenance = storage::maintenance::current(&scheduler.state.pool).await?;
    if let Some(maintenance) = &maintenance {
        // Overdue attempts are still failed above; nothing new is claimed.
        tracing::warn!(
            reason = maintenance.reason.as_deref().unwrap_or(""),
            failed_overdue,
            "tick skipped claiming: maintenance mode is on"
        );
    }
    let (claimed, report) = if maintenance.is_none() {
        let round = scheduler::dispatch_round(&scheduler).await?;
        let claimed = round.claimed;
        (claimed, round.finish().await)
    } else {
        (0, scheduler::RoundReport::default())
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        claimed,
        dispatched = report.dispatched,
        failed_overdue,
        duration_ms,
        "tick"
    );
    Ok(Json(TickReport {
        claimed,
        dispatched: report.dispatched,
        dispatch_failed: report.failed,
        overdue_failed: failed_overdue,
        dlq_purged,
        schedules_fired,
        maintenance: maintenance.is_some(),
        duration_ms,
    }))
}
