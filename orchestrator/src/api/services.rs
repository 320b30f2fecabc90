//! Services, their tasks and code history; PipeWeave hosts and the modules
//! they fetch.
//!
//! - `GET /api/services`, `GET /api/services/:id/tasks`,
//!   `GET /api/tasks/:id/history` (the spec's)
//! - `POST /api/hosts`: a host registers and pings
//! - `PUT /api/modules/:codeHash`, `GET /api/modules/:codeHash`: module
//!   upload (the orchestrator recomputes the SHA-256) and download

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use pipeweave_protocol::wire::{HostRegistration, HostRegistrationResponse, ModuleUploaded};
use pipeweave_protocol::{CodeHash, TaskDescriptor};
use pipeweave_storage::object_store::{ObjectStoreExt as _, PutPayload};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, BadRequest, NotFound};
use super::json::{ApiJson, read_body};
use crate::storage;
use crate::storage::history::HistoryRow;
use crate::storage::modules;
use crate::storage::services::ServiceRow;

/// How often hosts ping; one silent for three intervals gets no dispatches.
pub const HOST_PING_INTERVAL_MS: u64 = 2_000;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_services))
        .routes(routes!(service_tasks))
        .routes(routes!(task_history))
        .routes(routes!(register_host))
        .routes(routes!(download_module, upload_module))
}

/// `GET /api/services`: every registered service.
#[utoipa::path(
    get,
    path = "/api/services",
    tag = "registration",
    responses((status = 200, description = "The services, by id", body = Vec<ServiceRow>))
)]
async fn list_services(State(state): State<AppState>) -> Result<Json<Vec<ServiceRow>>, ApiError> {
    Ok(Json(storage::services::list(&state.pool).await?))
}

/// A task as registered: its descriptor with its service and code.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ServiceTask {
    #[serde(flatten)]
    descriptor: TaskDescriptor,
    /// Its service.
    service_id: String,
    /// Its current code hash.
    code_hash: String,
    /// Its current code version, from 1.
    code_version: i32,
    /// Attempts running now (counted for tasks with a concurrency limit).
    running_count: i32,
    /// First registration.
    registered_at: DateTime<Utc>,
    /// Latest registration.
    updated_at: DateTime<Utc>,
}

/// `GET /api/services/{id}/tasks`: a service's tasks.
#[utoipa::path(
    get,
    path = "/api/services/{id}/tasks",
    tag = "registration",
    params(("id" = String, Path, description = "The service")),
    responses(
        (status = 200, description = "Its tasks, by id", body = Vec<ServiceTask>),
        NotFound,
    )
)]
async fn service_tasks(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ServiceTask>>, ApiError> {
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
            let descriptor = serde_json::from_value(task.descriptor).map_err(|source| {
                crate::Error::Corrupt {
                    what: "stored task descriptor",
                    source,
                }
            })?;
            Ok(ServiceTask {
                descriptor,
                service_id: task.service_id,
                code_hash: task.code_hash,
                code_version: task.code_version,
                running_count: task.running_count,
                registered_at: task.registered_at,
                updated_at: task.updated_at,
            })
        })
        .collect::<Result<_, crate::Error>>()?;
    Ok(Json(tasks))
}

/// `GET /api/tasks/{id}/history`: a task's code versions, oldest first.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}/history",
    tag = "registration",
    params(("id" = String, Path, description = "The task")),
    responses(
        (status = 200, description = "Its code versions, oldest first", body = Vec<HistoryRow>),
        NotFound,
    )
)]
async fn task_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<HistoryRow>>, ApiError> {
    let history = storage::history::list(&state.pool, &id).await?;
    if history.is_empty() {
        return Err(ApiError::NotFound { what: "task", id });
    }
    Ok(Json(history))
}

/// `POST /api/hosts`: a PipeWeave host registers, and pings.
#[utoipa::path(
    post,
    path = "/api/hosts",
    tag = "registration",
    request_body = HostRegistration,
    responses(
        (status = 200, description = "Registered; ping again within the interval", body = HostRegistrationResponse),
        BadRequest,
    )
)]
async fn register_host(
    State(state): State<AppState>,
    ApiJson(host): ApiJson<HostRegistration>,
) -> Result<Json<HostRegistrationResponse>, ApiError> {
    if host.host_id.trim().is_empty() || host.host_id.chars().count() > 200 {
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
    let prefetch = i32::try_from(host.prefetch)
        .map_err(|_| ApiError::invalid("prefetch", "must be between 0 and 2147483647"))?;
    let url = host.url.trim_end_matches('/');
    storage::hosts::upsert(
        &state.pool,
        &host.host_id,
        url,
        capacity,
        prefetch,
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

/// `PUT /api/modules/{codeHash}`: uploads a module; the orchestrator
/// recomputes its SHA-256 and refuses a mismatch.
#[utoipa::path(
    put,
    path = "/api/modules/{code_hash}",
    tag = "registration",
    params(("code_hash" = String, Path, description = "The module's SHA-256: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The component's bytes, with any content type (`pipeweave register` sends `application/wasm`)"),
    responses(
        (status = 201, description = "Stored (or already stored)", body = ModuleUploaded),
        BadRequest,
    )
)]
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
    let (backend, store) = state.stores.default_store();
    let size = bytes.len();
    store
        .put(
            &pipeweave_storage::layout::module(actual.as_str()).into(),
            PutPayload::from_bytes(bytes),
        )
        .await
        .map_err(|error| ApiError::Storage(error.into()))?;
    modules::insert(
        &state.pool,
        actual.as_str(),
        i64::try_from(size).unwrap_or(i64::MAX),
        &backend.id,
        chrono::Utc::now(),
    )
    .await?;
    tracing::info!(code_hash = %actual, size, backend = %backend.id, "module uploaded");
    Ok((
        StatusCode::CREATED,
        Json(ModuleUploaded {
            code_hash: actual.to_string(),
            size: size as u64,
        }),
    ))
}

/// `GET /api/modules/{codeHash}`: a module's bytes, for hosts.
#[utoipa::path(
    get,
    path = "/api/modules/{code_hash}",
    tag = "registration",
    params(("code_hash" = String, Path, description = "The module's SHA-256: 64 lowercase hex digits", pattern = "^[0-9a-f]{64}$")),
    responses(
        (status = 200, description = "The component's bytes", content_type = "application/wasm", body = Vec<u8>),
        BadRequest,
        NotFound,
    )
)]
async fn download_module(
    State(state): State<AppState>,
    Path(code_hash): Path<String>,
) -> Result<Response, ApiError> {
    let hash = parse_code_hash(&code_hash)?;
    let stored = modules::get(&state.pool, hash.as_str())
        .await?
        .ok_or(ApiError::NotFound {
            what: "module",
            id: code_hash,
        })?;
    let wasm = [(header::CONTENT_TYPE, "application/wasm")];
    let backend = match stored {
        modules::Stored::Inline(bytes) => return Ok((wasm, Body::from(bytes)).into_response()),
        modules::Stored::Backend(backend) => backend,
    };
    let (_, store) = state.stores.get(&backend).ok_or_else(|| {
        ApiError::Internal(crate::Error::Storage(
            pipeweave_storage::ConfigError::Open {
                id: backend.clone(),
                reason: format!(
                    "module {hash} is stored on backend {backend:?}, which STORAGE_BACKENDS no longer has"
                ),
            },
        ))
    })?;
    let found = store
        .get(&pipeweave_storage::layout::module(hash.as_str()).into())
        .await
        .map_err(|error| ApiError::Storage(error.into()))?;
    Ok((
        wasm,
        [(header::CONTENT_LENGTH, found.meta.size.to_string())],
        Body::from_stream(found.into_stream()),
    )
        .into_response())
}
