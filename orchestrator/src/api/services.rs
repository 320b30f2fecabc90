//! Services, their tasks and code history; PipeWeave hosts and the modules
//! they fetch.
//!
//! - `GET /api/services`, `GET /api/services/:id/tasks`,
//!   `GET /api/tasks/:id/history` (the spec's)
//! - `POST /api/hosts`: a host registers and pings
//! - `PUT /api/modules/:codeHash`, `GET /api/modules/:codeHash`: module
//!   upload (the orchestrator recomputes the SHA-256) and download

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pipeweave_protocol::CodeHash;
use pipeweave_protocol::wire::{HostRegistration, HostRegistrationResponse, ModuleUploaded};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::json::{ApiJson, read_body};
use crate::storage;

/// How often hosts ping; one silent for three intervals gets no dispatches.
pub const HOST_PING_INTERVAL_MS: u64 = 2_000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/services", get(list_services))
        .route("/api/services/{id}/tasks", get(service_tasks))
        .route("/api/tasks/{id}/history", get(task_history))
        .route("/api/hosts", post(register_host))
        .route(
            "/api/modules/{code_hash}",
            get(download_module).put(upload_module),
        )
}

async fn list_services(
    State(state): State<AppState>,
) -> Result<Json<Vec<storage::services::ServiceRow>>, ApiError> {
    Ok(Json(storage::services::list(&state.pool).await?))
}

async fn service_tasks(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let tasks = storage::tasks::list_for_service(&state.pool, &id).await?;
    if tasks.is_empty() && !storage::services::exists(&state.pool, &id).await? {
        return Err(ApiError::NotFound {
            what: "service",
            id,
        });
    }
    let tasks = tasks
        .into_iter()
        .map(|task| {
            let mut view = task.descriptor;
            if let Some(object) = view.as_object_mut() {
                object.insert("serviceId".into(), json!(task.service_id));
                object.insert("codeHash".into(), json!(task.code_hash));
                object.insert("codeVersion".into(), json!(task.code_version));
                object.insert("runningCount".into(), json!(task.running_count));
                object.insert("registeredAt".into(), json!(task.registered_at));
                object.insert("updatedAt".into(), json!(task.updated_at));
            }
            view
        })
        .collect();
    Ok(Json(tasks))
}

async fn task_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<storage::history::HistoryRow>>, ApiError> {
    let history = storage::history::list(&state.pool, &id).await?;
    if history.is_empty() {
        return Err(ApiError::NotFound { what: "task", id });
    }
    Ok(Json(history))
}

async fn register_host(
    State(state): State<AppState>,
    ApiJson(host): ApiJson<HostRegistration>,
) -> Result<Json<HostRegistrationResponse>, ApiError> {
    if host.host_id.trim().is_empty() || host.host_id.len() > 200 {
        return Err(ApiError::invalid("hostId", "must be 1 to 200 characters"));
    }
    if !(host.url.starts_with("http://") || host.url.starts_with("https://")) {
        return Err(ApiError::invalid(
            "url",
            format!("{:?} is not an http:// or https:// URL", host.url),
        ));
    }
    let capacity = i32::try_from(host.capacity)
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| ApiError::invalid("capacity", "must be between 1 and 2147483647"))?;
    let url = host.url.trim_end_matches('/');
    storage::hosts::upsert(
        &state.pool,
        &host.host_id,
        url,
        capacity,
        chrono::Utc::now(),
    )
    .await?;
    state.note_targets_changed();
    Ok(Json(HostRegistrationResponse {
        ping_interval_ms: HOST_PING_INTERVAL_MS,
    }))
}

fn parse_code_hash(text: &str) -> Result<CodeHash, ApiError> {
    text.parse().map_err(|_| {
        ApiError::invalid(
            "codeHash",
            "expected the module's SHA-256: 64 lowercase hex digits",
        )
    })
}

async fn upload_module(
    State(state): State<AppState>,
    Path(code_hash): Path<String>,
    request: Request,
) -> Result<(StatusCode, Json<ModuleUploaded>), ApiError> {
    let claimed = parse_code_hash(&code_hash)?;
    let bytes = read_body(request, state.config.max_module_bytes).await?;
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "the module is empty; send the component's bytes",
        ));
    }
    let actual = CodeHash::of(&bytes);
    if actual != claimed {
        return Err(ApiError::invalid(
            "codeHash",
            format!(
                "digest mismatch: the uploaded bytes hash to {actual}, not {claimed}; \
                 the upload was corrupted or the hash names another module"
            ),
        ));
    }
    storage::modules::insert(&state.pool, actual.as_str(), &bytes, chrono::Utc::now()).await?;
    tracing::info!(code_hash = %actual, size = bytes.len(), "module uploaded");
    Ok((
        StatusCode::CREATED,
        Json(ModuleUploaded {
            code_hash: actual.to_string(),
            size: bytes.len() as u64,
        }),
    ))
}

async fn download_module(
    State(state): State<AppState>,
    Path(code_hash): Path<String>,
) -> Result<Response, ApiError> {
    let hash = parse_code_hash(&code_hash)?;
    let bytes = storage::modules::get(&state.pool, hash.as_str())
        .await?
        .ok_or(ApiError::NotFound {
            what: "module",
            id: code_hash,
        })?;
    Ok((
        [(header::CONTENT_TYPE, "application/wasm")],
        Body::from(bytes),
    )
        .into_response())
}
