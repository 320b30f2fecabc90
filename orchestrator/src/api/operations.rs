//! What an operator asks of a running orchestrator: `GET /health`,
//! `GET /api/info`, `GET /metrics`, and maintenance mode (`GET /api/maintenance`,
//! `POST /api/maintenance/enter`, `POST /api/maintenance/exit`).
//!
//! Maintenance mode is a row in the database, so it holds for every
//! replica and for serverless ticks: while it is on, claims find nothing,
//! running attempts finish (heartbeats, callbacks and retries' bookkeeping
//! go on), and enqueued runs wait. Leaving it wakes the scheduler.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::json::OptionalApiJson;
use super::{AppState, optional_text};
use crate::config::Mode;
use crate::storage;
use crate::storage::maintenance::Maintenance;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/api/info", get(info))
        .route("/metrics", get(metrics))
        .route("/api/maintenance", get(maintenance_status))
        .route("/api/maintenance/enter", post(enter_maintenance))
        .route("/api/maintenance/exit", post(exit_maintenance))
}

/// `GET /health`: the API answers and the database is reachable; also
/// says whether maintenance mode is on.
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match storage::maintenance::current(&state.pool).await {
        Ok(maintenance) => (
            StatusCode::OK,
            Json(json!({
                "status": "ok",
                "database": "ok",
                "maintenance": maintenance.is_some(),
            })),
        ),
        Err(error) => {
            tracing::warn!(%error, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "database": "unreachable" })),
            )
        }
    }
}

/// `GET /api/info`: version, mode, uptime, maintenance and queue counts.
async fn info(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let maintenance = storage::maintenance::current(&state.pool).await?;
    let counts = storage::runs::counts(&state.pool, now).await?;
    let uptime = now - state.started_at;
    Ok(Json(json!({
        "name": "pipeweave-orchestrator",
        "version": env!("CARGO_PKG_VERSION"),
        "mode": match state.config.mode {
            Mode::Standalone => "standalone",
            Mode::Serverless => "serverless",
        },
        "startedAt": state.started_at,
        "uptimeSeconds": uptime.num_milliseconds().max(0) as f64 / 1000.0,
        "maintenance": maintenance_json(maintenance.as_ref()),
        "queue": super::queue::counts_json(&counts),
    })))
}

/// `GET /metrics`: Prometheus text exposition (see [`crate::metrics`]).
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = storage::runs::counts(&state.pool, Utc::now()).await?;
    let text = state
        .metrics
        .render(&counts)
        .map_err(|_| ApiError::Internal(crate::Error::Metrics))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `{ "enabled": bool, "reason": …, "since": … }`.
fn maintenance_json(maintenance: Option<&Maintenance>) -> Value {
    match maintenance {
        Some(m) => json!({ "enabled": true, "reason": m.reason, "since": m.since }),
        None => json!({ "enabled": false, "reason": null, "since": null }),
    }
}

/// Maintenance status plus the attempts still running, which an operator
/// waits for before taking things down.
async fn status_json(state: &AppState) -> Result<Json<Value>, ApiError> {
    let maintenance = storage::maintenance::current(&state.pool).await?;
    let counts = storage::runs::counts(&state.pool, Utc::now()).await?;
    let mut answer = maintenance_json(maintenance.as_ref());
    answer["runningAttempts"] = json!(counts.running);
    Ok(Json(answer))
}

/// `GET /api/maintenance`.
async fn maintenance_status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    status_json(&state).await
}

/// The body of `POST /api/maintenance/enter`; the body itself is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnterRequest {
    /// Why, shown by `/api/info` and the status.
    reason: Option<String>,
}

/// `POST /api/maintenance/enter`: stops claiming on every replica.
/// Entering again changes nothing (the first reason and time stay).
async fn enter_maintenance(
    State(state): State<AppState>,
    OptionalApiJson(request): OptionalApiJson<EnterRequest>,
) -> Result<Json<Value>, ApiError> {
    let reason = optional_text("reason", request.reason, 500)?;
    let entered = storage::maintenance::enter(&state.pool, reason.as_deref(), Utc::now()).await?;
    tracing::warn!(
        reason = entered.reason.as_deref().unwrap_or(""),
        since = %entered.since,
        "maintenance mode on: no new attempts start; running ones finish"
    );
    status_json(&state).await
}

/// `POST /api/maintenance/exit`: claiming resumes at once.
async fn exit_maintenance(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if storage::maintenance::exit(&state.pool).await? {
        tracing::warn!("maintenance mode off: claiming resumes");
    }
    state.wake_scheduler.notify_one();
    status_json(&state).await
}
