//! `POST /api/register`: a service announces its tasks and their code
//! hashes. A new hash bumps the task's `code_version`, is recorded in its
//! history and is returned in `codeChanges`. A service without `baseUrl`
//! is a set of WebAssembly modules, which must have been uploaded first
//! (`PUT /api/modules/{codeHash}`); PipeWeave hosts run them.
//!
//! Orphan cleanup: when a service registers a different `version` without
//! a task it registered before, that task takes no new runs, its queued and
//! retry-waiting runs are cancelled ("Task type removed in version …") and
//! counted in `orphansCancelled`. The same version registering again (a
//! restart) changes nothing.

use std::collections::{BTreeMap, HashSet};

use axum::Json;
use axum::extract::State;
use pipeweave_protocol::wire::{CodeChange, RegisterRequest, RegisterResponse};
use pipeweave_protocol::{CodeHash, DescriptorError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, BadRequest, Conflict};
use super::json::ApiJson;
use crate::storage::{self, Runtime};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(register))
}

fn check(request: &RegisterRequest) -> Result<Runtime, ApiError> {
    if request.service_id.trim().is_empty() || request.service_id.chars().count() > 200 {
        return Err(ApiError::invalid(
            "serviceId",
            "must be 1 to 200 characters",
        ));
    }
    if request.version.is_empty() || request.version.chars().count() > 100 {
        return Err(ApiError::invalid("version", "must be 1 to 100 characters"));
    }
    if request.capacity == Some(0) || request.capacity.is_some_and(|c| c > i32::MAX as u32) {
        return Err(ApiError::invalid("capacity", "must be at least 1"));
    }
    let runtime = match &request.base_url {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Runtime::Http,
        Some(url) => {
            return Err(ApiError::invalid(
                "baseUrl",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        None => Runtime::Wasm,
    };
    let mut seen = HashSet::new();
    for (index, task) in request.tasks.iter().enumerate() {
        task.descriptor.validate().map_err(|error| match error {
            DescriptorError::Invalid { field, reason, .. } => {
                ApiError::invalid(format!("tasks[{index}].{field}"), reason)
            }
            DescriptorError::OutboundHost { source, .. } => {
                ApiError::invalid(format!("tasks[{index}].outboundHosts"), source.to_string())
            }
        })?;
        if !seen.insert(task.descriptor.id.as_str()) {
            return Err(ApiError::invalid(
                format!("tasks[{index}].id"),
                format!("task {:?} appears twice", task.descriptor.id),
            ));
        }
        if task.code_hash.is_empty() || task.code_hash.chars().count() > 128 {
            return Err(ApiError::invalid(
                format!("tasks[{index}].codeHash"),
                "must be 1 to 128 characters",
            ));
        }
        if runtime == Runtime::Wasm && task.code_hash.parse::<CodeHash>().is_err() {
            return Err(ApiError::invalid(
                format!("tasks[{index}].codeHash"),
                "a WebAssembly task's code hash is the SHA-256 of its module: 64 lowercase hex digits",
            ));
        }
    }
    Ok(runtime)
}

/// `POST /api/register`: registers a service and its tasks.
#[utoipa::path(
    post,
    path = "/api/register",
    tag = "registration",
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "Registered; `codeChanges` lists the tasks whose code changed", body = RegisterResponse),
        BadRequest,
        Conflict,
    )
)]
async fn register(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let runtime = check(&request)?;
    if runtime == Runtime::Wasm {
        let hashes: Vec<String> = request.tasks.iter().map(|t| t.code_hash.clone()).collect();
        let missing = storage::modules::missing(&state.pool, &hashes).await?;
        if let Some(index) = request
            .tasks
            .iter()
            .position(|t| missing.contains(&t.code_hash))
        {
            return Err(ApiError::invalid(
                format!("tasks[{index}].codeHash"),
                "no module with this hash was uploaded: upload it first with PUT /api/modules/{codeHash}, \
                 or use `pipeweave register <task.wasm>`, which does both",
            ));
        }
    }

    let now = chrono::Utc::now();
    let mut tx = state.pool.begin().await?;
    let capacity = request.capacity.map(|c| c as i32);
    let previous_version = storage::services::upsert(
        &mut tx,
        &request.service_id,
        &request.version,
        runtime,
        request.base_url.as_deref(),
        capacity,
        now,
    )
    .await?;
    let ids: Vec<String> = request
        .tasks
        .iter()
        .map(|t| t.descriptor.id.clone())
        .collect();
    let existing: BTreeMap<String, storage::tasks::Registered> =
        storage::tasks::lock_registered(&mut tx, &ids)
            .await?
            .into_iter()
            .map(|task| (task.id.clone(), task))
            .collect();

    let mut code_changes = Vec::new();
    for (index, task) in request.tasks.iter().enumerate() {
        let descriptor = &task.descriptor;
        let previous = existing.get(&descriptor.id);
        if let Some(previous) = previous.filter(|p| p.service_id != request.service_id) {
            return Err(ApiError::Conflict(format!(
                "tasks[{index}].id: task {:?} belongs to service {:?}; task ids are unique across services",
                descriptor.id, previous.service_id
            )));
        }
        let code_version = match previous {
            None => 1,
            Some(previous) if previous.code_hash == task.code_hash => previous.code_version,
            Some(previous) => {
                code_changes.push(CodeChange {
                    task_id: descriptor.id.clone(),
                    old_hash: previous.code_hash.clone(),
                    new_hash: task.code_hash.clone(),
                    old_version: previous.code_version as u32,
                    new_version: previous.code_version as u32 + 1,
                });
                previous.code_version + 1
            }
        };
        let concurrency = i32::try_from(descriptor.concurrency).map_err(|_| {
            ApiError::invalid(format!("tasks[{index}].concurrency"), "is too large")
        })?;
        let descriptor_json =
            serde_json::to_value(descriptor).map_err(|source| crate::Error::Corrupt {
                what: "task descriptor",
                source,
            })?;
        storage::tasks::upsert(
            &mut tx,
            &storage::tasks::Upsert {
                id: &descriptor.id,
                service_id: &request.service_id,
                code_hash: &task.code_hash,
                code_version,
                descriptor: descriptor_json,
                priority: descriptor.priority,
                concurrency,
                timeout_ms: i64::from(descriptor.timeout) * 1000,
                heartbeat_interval_ms: i64::try_from(descriptor.heartbeat_interval_ms)
                    .unwrap_or(i64::MAX),
            },
            now,
        )
        .await?;
        if previous.is_none_or(|p| p.code_version != code_version) {
            storage::history::record(
                &mut tx,
                &descriptor.id,
                code_version,
                &task.code_hash,
                &request.version,
                now,
            )
            .await?;
        }
        if previous.is_none_or(|p| p.concurrency != concurrency) && concurrency > 0 {
            storage::tasks::recount_running(&mut tx, &descriptor.id).await?;
        }
    }
    // Orphan cleanup, on a change of version only: a restart that
    // registers the same version keeps everything.
    let orphans_cancelled = match previous_version {
        Some(previous) if previous != request.version => {
            storage::tasks::remove_orphans(
                &mut tx,
                &request.service_id,
                &ids,
                &request.version,
                now,
            )
            .await?
        }
        _ => 0,
    };
    tx.commit().await?;
    state.note_targets_changed();
    if orphans_cancelled > 0 {
        tracing::info!(
            service_id = %request.service_id,
            version = %request.version,
            orphans_cancelled,
            "runs of removed task types cancelled"
        );
    }

    tracing::info!(
        service_id = %request.service_id,
        version = %request.version,
        tasks = request.tasks.len(),
        code_changes = code_changes.len(),
        "service registered"
    );
    Ok(Json(RegisterResponse {
        service_id: request.service_id,
        version: request.version,
        code_changes,
        orphans_cancelled: u64::try_from(orphans_cancelled).unwrap_or(0),
    }))
}
