//! What an operator asks of a running orchestrator: `GET /health`,
//! `GET /api/info`, `GET /metrics`, and maintenance mode (`GET /api/maintenance`,
//! `POST /api/maintenance/enter`, `POST /api/maintenance/exit`).
//!
//! Maintenance mode is a row in the database, so it holds for every
//! replica and for serverless ticks: while it is on, claims find nothing,
//! running attempts finish (heartbeats, callbacks and retries' bookkeeping
//! go on), and enqueued runs wait. Leaving it wakes the scheduler.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, BadRequest};
use super::json::OptionalApiJson;
use super::queue::QueueCounts;
use super::{AppState, optional_text};
use crate::config::Mode;
use crate::storage;
use crate::storage::maintenance::Maintenance;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(info))
        .routes(routes!(metrics))
        .routes(routes!(maintenance_status))
        .routes(routes!(enter_maintenance))
        .routes(routes!(exit_maintenance))
}

/// Whether the API and its database answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Health {
    /// `ok` or `unavailable`.
    #[schema(example = "ok")]
    status: &'static str,
    /// `ok` or `unreachable`.
    #[schema(example = "ok")]
    database: &'static str,
    /// Whether maintenance mode is on; absent when the database is
    /// unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance: Option<bool>,
}

/// `GET /health`: the API answers and the database is reachable; also
/// says whether maintenance mode is on.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "The API and its database answer", body = Health),
        (status = 503, description = "The database is unreachable", body = Health),
    )
)]
async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    match storage::maintenance::current(&state.pool).await {
        Ok(maintenance) => (
            StatusCode::OK,
            Json(Health {
                status: "ok",
                database: "ok",
                maintenance: Some(maintenance.is_some()),
            }),
        ),
        Err(error) => {
            tracing::warn!(%error, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable",
                    database: "unreachable",
                    maintenance: None,
                }),
            )
        }
    }
}

/// What this orchestrator is and how its queue stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Info {
    /// Always `pipeweave-orchestrator`.
    name: &'static str,
    /// The orchestrator's version.
    version: &'static str,
    /// Standalone (a background scheduler) or serverless (`POST /api/tick`).
    mode: Mode,
    /// When this process started.
    started_at: DateTime<Utc>,
    /// Seconds since then.
    uptime_seconds: f64,
    /// Maintenance mode.
    maintenance: MaintenanceState,
    /// Runs by state, as `GET /api/queue/status` counts them.
    queue: QueueCounts,
}

/// `GET /api/info`: version, mode, uptime, maintenance and queue counts.
#[utoipa::path(
    get,
    path = "/api/info",
    tag = "operations",
    responses((status = 200, description = "This orchestrator", body = Info))
)]
async fn info(State(state): State<AppState>) -> Result<Json<Info>, ApiError> {
    let now = Utc::now();
    let maintenance = storage::maintenance::current(&state.pool).await?;
    let counts = storage::runs::counts(&state.pool, now).await?;
    let uptime = now - state.started_at;
    Ok(Json(Info {
        name: "pipeweave-orchestrator",
        version: env!("CARGO_PKG_VERSION"),
        mode: state.config.mode,
        started_at: state.started_at,
        uptime_seconds: uptime.num_milliseconds().max(0) as f64 / 1000.0,
        maintenance: MaintenanceState::from(maintenance),
        queue: QueueCounts::from(&counts),
    }))
}

/// `GET /metrics`: Prometheus text exposition (see [`crate::metrics`]).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((
        status = 200,
        description = "Runs by state, claims, dispatches and attempts, in the OpenMetrics text format",
        content_type = "application/openmetrics-text",
        body = String
    ))
)]
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

/// Whether maintenance mode is on, since when and why.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MaintenanceState {
    /// Whether claiming is stopped.
    enabled: bool,
    /// Why, as given when it was entered.
    reason: Option<String>,
    /// When it was entered.
    since: Option<DateTime<Utc>>,
}

impl From<Option<Maintenance>> for MaintenanceState {
    fn from(maintenance: Option<Maintenance>) -> Self {
        match maintenance {
            Some(m) => Self {
                enabled: true,
                reason: m.reason,
                since: Some(m.since),
            },
            None => Self {
                enabled: false,
                reason: None,
                since: None,
            },
        }
    }
}

/// Maintenance mode and the attempts still running, which an operator
/// waits for before taking things down.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct MaintenanceStatus {
    #[serde(flatten)]
    maintenance: MaintenanceState,
    /// Attempts running now.
    running_attempts: i64,
}

async fn status(state: &AppState) -> Result<Json<MaintenanceStatus>, ApiError> {
    let maintenance = storage::maintenance::current(&state.pool).await?;
    let counts = storage::runs::counts(&state.pool, Utc::now()).await?;
    Ok(Json(MaintenanceStatus {
        maintenance: MaintenanceState::from(maintenance),
        running_attempts: counts.running,
    }))
}

/// `GET /api/maintenance`.
#[utoipa::path(
    get,
    path = "/api/maintenance",
    tag = "operations",
    responses((status = 200, description = "Maintenance mode", body = MaintenanceStatus))
)]
async fn maintenance_status(
    State(state): State<AppState>,
) -> Result<Json<MaintenanceStatus>, ApiError> {
    status(&state).await
}

/// The body of `POST /api/maintenance/enter`; the body itself is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnterRequest {
    /// Why, shown by `/api/info` and the status; at most 500 characters.
    reason: Option<String>,
}

/// `POST /api/maintenance/enter`: stops claiming on every replica.
/// Entering again changes nothing (the first reason and time stay).
#[utoipa::path(
    post,
    path = "/api/maintenance/enter",
    tag = "operations",
    request_body(content = Option<EnterRequest>, description = "Optional"),
    responses(
        (status = 200, description = "Maintenance mode is on", body = MaintenanceStatus),
        BadRequest,
    )
)]
async fn enter_maintenance(
    State(state): State<AppState>,
    OptionalApiJson(request): OptionalApiJson<EnterRequest>,
) -> Result<Json<MaintenanceStatus>, ApiError> {
    let reason = optional_text("reason", request.reason, 500)?;
    let entered = storage::maintenance::enter(&state.pool, reason.as_deref(), Utc::now()).await?;
    tracing::warn!(
        reason = entered.reason.as_deref().unwrap_or(""),
        since = %entered.since,
        "maintenance mode on: no new attempts start; running ones finish"
    );
    status(&state).await
}

/// `POST /api/maintenance/exit`: claiming resumes at once.
#[utoipa::path(
    post,
    path = "/api/maintenance/exit",
    tag = "operations",
    responses((status = 200, description = "Maintenance mode is off", body = MaintenanceStatus))
)]
async fn exit_maintenance(
    State(state): State<AppState>,
) -> Result<Json<MaintenanceStatus>, ApiError> {
    if storage::maintenance::exit(&state.pool).await? {
        tracing::warn!("maintenance mode off: claiming resumes");
    }
    state.wake_scheduler.notify_one();
    status(&state).await
}
