//! Object storage through the API: which backends are configured, and
//! reading what runs stored (the spec's "Retrieving Data").
//!
//! - `GET /api/storage/backends` lists the backends without credentials;
//! - `GET /api/storage/{path}` answers a JSON object (`….json`) in the
//!   spec's shape, `{"path": …, "content": …}`, and anything else, or any
//!   object with `?raw=true`, as its bytes, streamed: the orchestrator
//!   never holds a large object in memory. `?backend=ID` reads another
//!   backend than the default.
//!
//! Stored data is not public: when the orchestrator has an API key, these
//! reads need it like writes do ([`super::auth`]).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pipeweave_storage::PublicBackend;
use pipeweave_storage::object_store::{self, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, BadRequest, NotFound};
use super::queue::query_error;

/// The largest JSON object answered in the `{path, content}` form; larger
/// ones are read with `?raw=true`, which streams.
const MAX_WRAPPED_JSON_BYTES: u64 = 8 << 20;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(backends))
        // A wildcard route: axum spells it `{*path}`, OpenAPI `{path}`, so
        // its description is added to the document in `super::openapi`.
        .route("/api/storage/{*path}", axum::routing::get(object))
}

/// The configured backends.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct BackendList {
    /// Every backend, without credentials.
    backends: Vec<PublicBackend>,
    /// The one runs use when none is named.
    default_backend_id: String,
}

/// `GET /api/storage/backends`.
#[utoipa::path(
    get,
    path = "/api/storage/backends",
    tag = "storage",
    responses((status = 200, description = "The storage backends, without credentials", body = BackendList))
)]
async fn backends(State(state): State<AppState>) -> Json<BackendList> {
    let configured = state.stores.backends();
    Json(BackendList {
        backends: configured.iter().map(|b| b.public()).collect(),
        default_backend_id: configured.default_backend().id.clone(),
    })
}

/// How to read an object.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ObjectQuery {
    /// The backend to read; the default one when left out.
    backend: Option<String>,
    /// `true`: the bytes, streamed, even for a JSON object.
    #[serde(default)]
    raw: bool,
}

/// A JSON object in the spec's shape.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredJson {
    /// The object's path.
    path: String,
    /// Its content.
    content: Value,
}

/// `GET /api/storage/{path}`: an object a run stored.
#[utoipa::path(
    get,
    path = "/api/storage/{path}",
    tag = "storage",
    params(
        ("path" = String, Path, description = "The object's path, slashes included: runs/trun_…/outputs/output.json"),
        ObjectQuery,
    ),
    responses(
        (status = 200, description = "A JSON object (`….json`) as `{path, content}`; anything else, or `raw=true`, as its bytes", content(
            (StoredJson = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        )),
        BadRequest,
        NotFound,
        (status = 502, description = "The storage backend failed", body = super::error::ErrorBody),
    )
)]
pub(super) async fn object(
    State(state): State<AppState>,
    Path(text): Path<String>,
    query: Result<Query<ObjectQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(query_error)?;
    let path = pipeweave_storage::scope::parse_path(&text)
        .map_err(|error| ApiError::invalid("path", error.to_string()))?;
    let (_, store) = match &query.backend {
        Some(id) => state.stores.get(id).ok_or_else(|| {
            ApiError::invalid("backend", format!("no storage backend has the id {id:?}"))
        })?,
        None => state.stores.default_store(),
    };
    let found = store.get(&path).await.map_err(|error| match error {
        object_store::Error::NotFound { .. } => ApiError::NotFound {
            what: "object",
            id: text.clone(),
        },
        other => ApiError::Storage(other.into()),
    })?;
    let size = found.meta.size;
    if text.ends_with(".json") && !query.raw {
        if size > MAX_WRAPPED_JSON_BYTES {
            return Err(ApiError::invalid(
                "raw",
                format!(
                    "{text} is {size} bytes, more than the {MAX_WRAPPED_JSON_BYTES} the {{path, content}} form allows; \
                     add ?raw=true to stream it"
                ),
            ));
        }
        let bytes = found
            .bytes()
            .await
            .map_err(|error| ApiError::Storage(error.into()))?;
        let content = serde_json::from_slice(&bytes).map_err(|error| {
            ApiError::invalid(
                "path",
                format!("{text} is not valid JSON ({error}); add ?raw=true to read its bytes"),
            )
        })?;
        return Ok(Json(StoredJson {
            path: text,
            content,
        })
        .into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, content_type(&text).to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(found.into_stream()),
    )
        .into_response())
}

/// The content type an object is served with, by its extension.
fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match extension.as_deref() {
        Some("json") => "application/json",
        Some("jsonl") => "application/jsonl",
        Some("txt" | "log" | "csv" | "md") => "text/plain; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("pdf") => "application/pdf",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}
