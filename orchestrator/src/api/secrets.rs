//! Task secrets kept by the orchestrator:
//!
//! - `PUT /api/secrets/{name}` sets one: `{"value": "…"}`;
//! - `GET /api/secrets` lists their names and times, never values;
//! - `DELETE /api/secrets/{name}` removes one.
//!
//! Values are sealed at rest (`pipeweave_storage::secret_box`). Each
//! dispatch of a task carries the secrets its descriptor declares, sealed
//! for that attempt (`sealedSecrets`); a host adds them to its own. With
//! `PIPEWEAVE_API_KEY` set, setting and deleting need the key like every
//! write.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use pipeweave_protocol::descriptor::is_valid_secret_name;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, BadRequest, NotFound};
use super::json::ApiJson;
use crate::storage;

/// The largest secret value, in bytes.
const MAX_VALUE_BYTES: usize = 64 << 10;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets))
        .routes(routes!(put_secret, delete_secret))
}

/// A secret's value to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretValue {
    /// The value, at most 64 KiB.
    value: String,
}

/// A secret as the API shows it: its name and times, never its value.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SecretView {
    /// Its name.
    name: String,
    /// When it was first set.
    created_at: DateTime<Utc>,
    /// When its value last changed.
    updated_at: DateTime<Utc>,
}

impl SecretView {
    fn of(row: storage::secrets::SecretName) -> Self {
        Self {
            name: row.name,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Every secret's name.
#[derive(Debug, Serialize, ToSchema)]
struct SecretList {
    /// The secrets, by name.
    secrets: Vec<SecretView>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if is_valid_secret_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            "must be 1 to 128 letters, digits, '-', '_' or '.'",
        ))
    }
}

/// `PUT /api/secrets/{name}`: sets a secret's value.
#[utoipa::path(
    put,
    path = "/api/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "The secret's name, as tasks declare it")),
    request_body = SecretValue,
    responses(
        (status = 201, description = "Created", body = SecretView),
        (status = 200, description = "Its value was replaced", body = SecretView),
        BadRequest,
    )
)]
async fn put_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<SecretValue>,
) -> Result<(StatusCode, Json<SecretView>), ApiError> {
    check_name(&name)?;
    if request.value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::invalid(
            "value",
            format!(
                "is {} bytes; a secret is at most {MAX_VALUE_BYTES}",
                request.value.len()
            ),
        ));
    }
    let sealed = state
        .secret_box
        .seal_value(&name, &request.value)
        .map_err(crate::Error::from)?;
    let row = storage::secrets::put(&state.pool, &name, &sealed, Utc::now()).await?;
    let created = row.created_at == row.updated_at;
    tracing::info!(secret = %name, created, "secret set");
    let view = SecretView::of(row);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

/// `GET /api/secrets`: every secret's name and times; never a value.
#[utoipa::path(
    get,
    path = "/api/secrets",
    tag = "secrets",
    responses((status = 200, description = "The secrets' names", body = SecretList))
)]
async fn list_secrets(State(state): State<AppState>) -> Result<Json<SecretList>, ApiError> {
    let rows = storage::secrets::list(&state.pool).await?;
    Ok(Json(SecretList {
        secrets: rows.into_iter().map(SecretView::of).collect(),
    }))
}

/// `DELETE /api/secrets/{name}`: removes a secret; later dispatches go
/// without it.
#[utoipa::path(
    delete,
    path = "/api/secrets/{name}",
    tag = "secrets",
    params(("name" = String, Path, description = "The secret's name")),
    responses((status = 204, description = "Deleted"), NotFound)
)]
async fn delete_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if storage::secrets::delete(&state.pool, &name).await? {
        tracing::info!(secret = %name, "secret deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound {
            what: "secret",
            id: name,
        })
    }
}
