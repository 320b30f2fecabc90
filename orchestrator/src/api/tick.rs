//! `POST /api/tick`: one bounded round of the scheduler's work — fail
//! overdue attempts, purge the dead-letter queue past its retention, then
//! claim and dispatch what is due — for serverless
//! mode, where a cron job calls it instead of a background loop. It works
//! in standalone mode too. Several ticks at once are safe: claims skip each
//! other's rows. In maintenance mode a tick still fails overdue attempts
//! but claims nothing, and says so (`"maintenance": true`).

use std::time::Instant;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::scheduler::{self, Scheduler};
use crate::storage;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/tick", post(tick))
}

async fn tick(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let scheduler = Scheduler::new(state);
    let failed_overdue = scheduler::watch_round(&scheduler, chrono::Utc::now()).await?;
    let dlq_purged = scheduler::purge_round(&scheduler, chrono::Utc::now()).await?;
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
    let duration_ms = started.elapsed().as_millis();
    tracing::info!(
        claimed,
        dispatched = report.dispatched,
        failed_overdue,
        duration_ms,
        "tick"
    );
    Ok(Json(json!({
        "claimed": claimed,
        "dispatched": report.dispatched,
        "dispatchFailed": report.failed,
        "overdueFailed": failed_overdue,
        "dlqPurged": dlq_purged,
        "maintenance": maintenance.is_some(),
        "durationMs": duration_ms,
    })))
}
