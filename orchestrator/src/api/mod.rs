//! The HTTP API: one module per resource, each with its own `router()`.
//! Paths and JSON shapes follow the spec; additions are optional fields and
//! new paths, never renames.

mod auth;
mod cancel;
mod dlq;
pub mod error;
pub mod json;
mod logs;
mod objects;
mod openapi;
mod operations;
mod pipeline_cancel;
mod pipelines;
mod queue;
mod register;
mod runs_view;
mod schedules;
mod secrets;
mod services;
pub use services::HOST_PING_INTERVAL_MS;
mod tick;
mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::config::Config;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// Connections for claims only, which commit without waiting for the
    /// WAL flush ([`crate::scheduler::claims_pool`]).
    pub claims: PgPool,
    /// Connections for completions, with plans fixed whatever the
    /// statistics say ([`crate::scheduler::completions_pool`]).
    pub completions: PgPool,
    /// The configuration.
    pub config: Arc<Config>,
    /// Wakes the scheduler when capacity appears (a host registers).
    pub wake_scheduler: Arc<Notify>,
    /// When this orchestrator started; heartbeats older than this count
    /// from then, so hosts get time to reach it after a restart.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Counts changes to where runs can go (registrations, host pings,
    /// unreachable targets) recorded by this orchestrator; the scheduler
    /// reads its targets again when it moves.
    pub targets_changed: Arc<AtomicU64>,
    /// This orchestrator's metrics (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The client for calls to hosts and workers (dispatches, cancel
    /// notices); each call sets its own timeout.
    pub http: reqwest::Client,
    /// The storage backends, opened.
    pub stores: Arc<pipeweave_storage::Stores>,
    /// Seals the storage token of each dispatch.
    pub sealer: pipeweave_storage::Sealer,
    /// Seals task secrets at rest and in each dispatch.
    pub secret_box: pipeweave_storage::SecretBox,
}

impl AppState {
    /// Tells the scheduler that its targets changed, and wakes it: there
    /// may be new capacity.
    pub fn note_targets_changed(&self) {
        self.targets_changed.fetch_add(1, Ordering::Release);
        self.wake_scheduler.notify_one();
    }
}

/// An optional free-text field, trimmed: blank means absent, and more than
/// `max` characters is a 400 naming `field`.
fn optional_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, error::ApiError> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if value.as_ref().is_some_and(|v| v.chars().count() > max) {
        return Err(error::ApiError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(value)
}

/// Checks the id of something the caller names (a pipeline, a schedule):
/// 1 to 200 ASCII letters, digits, '.', '_' or '-', starting with a letter
/// or digit, as the tables' `*_id_format` constraints require.
fn check_id(field: &str, id: &str) -> Result<(), error::ApiError> {
    let valid = id.len() <= 200
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(error::ApiError::invalid(
            field,
            "must be 1 to 200 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ))
    }
}

/// Reads a run id (`trun_…`) from `field`, or a 400 naming it.
fn parse_run_id(field: &str, text: &str) -> Result<crate::RunId, error::ApiError> {
    text.parse()
        .map_err(|e: crate::ids::InvalidId| error::ApiError::invalid(field, e.to_string()))
}

/// Every route of the API with its OpenAPI description, before the state
/// and the middleware are attached.
fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::with_openapi(openapi::base())
        .merge(operations::router())
        .merge(cancel::router())
        .merge(dlq::router())
        .merge(register::router())
        .merge(services::router())
        .merge(queue::router())
        .merge(pipelines::router())
        .merge(pipeline_cancel::router())
        .merge(logs::router())
        .merge(schedules::router())
        .merge(secrets::router())
        .merge(workers::router())
        .merge(tick::router())
        .merge(objects::router())
        .merge(openapi::router())
}

/// The OpenAPI 3.1 document of the API, as `GET /api/openapi.json` serves
/// it: generated from the handlers' own request and response types.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut document = routes().into_openapi();
    openapi::finish(&mut document);
    document
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let router: Router<AppState> = routes().into();
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ))
        .with_state(state)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}
