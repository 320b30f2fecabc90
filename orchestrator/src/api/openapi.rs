//! The API's OpenAPI 3.1 document, `GET /api/openapi.json`.
//!
//! Each handler describes itself with `#[utoipa::path]`, naming its own
//! request and response types, so the document cannot drift from the code:
//! a field added to a response type appears in the document with it. This
//! module adds what every operation shares, so handlers list only what is
//! particular to them:
//!
//! - `500` and `503` (with [`ErrorBody`]) on every operation;
//! - `400` (malformed JSON) and `413` on every operation with a body;
//! - the optional bearer API key, and its `401`, on every operation that
//!   needs it (see [`super::auth`]).

use std::sync::OnceLock;

use axum::http::{Method, header};
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ErrorBody;

/// The name of the API key's security scheme.
const API_KEY_SCHEME: &str = "apiKey";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "PipeWeave orchestrator",
        description = "Queue, registration, dispatch, dead-letter queue and operations of a PipeWeave \
                       orchestrator. Fields are camelCase; errors share one body (`ErrorBody`) whose \
                       `field` names the JSON path at fault. When the orchestrator runs with \
                       `PIPEWEAVE_API_KEY`, writes need `Authorization: Bearer <key>`; reads, and \
                       the heartbeats, progress reports and callbacks of attempts (which carry their \
                       attempt token), do not.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(super::objects::object),
    components(schemas(ErrorBody)),
    tags(
        (name = "queue", description = "Enqueue runs and read them"),
        (name = "workers", description = "What hosts and plain HTTP workers call while an attempt runs"),
        (name = "registration", description = "Services, tasks, code versions, hosts and modules"),
        (name = "dlq", description = "The dead-letter queue: runs that failed for good"),
        (name = "storage", description = "Storage backends, and the objects runs stored"),
        (name = "operations", description = "Health, info, metrics, maintenance mode and the serverless tick"),
    )
)]
struct BaseDocument;

/// The document's frame: info, tags and shared schemas; paths come from
/// the handlers.
pub(super) fn base() -> utoipa::openapi::OpenApi {
    let mut document = BaseDocument::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document
}

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object))
)]
async fn openapi_json() -> axum::response::Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let text = DOCUMENT.get_or_init(|| {
        super::openapi_document().to_json().unwrap_or_else(|error| {
            format!(r#"{{"error": "cannot render the document: {error}"}}"#)
        })
    });
    ([(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

/// Adds the responses and security every operation shares.
pub(super) fn finish(document: &mut utoipa::openapi::OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        API_KEY_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The orchestrator's PIPEWEAVE_API_KEY, when it has one",
                ))
                .build(),
        ),
    );
    for (path, item) in &mut document.paths.paths {
        let operations = [
            (Method::GET, item.get.as_mut()),
            (Method::PUT, item.put.as_mut()),
            (Method::POST, item.post.as_mut()),
            (Method::DELETE, item.delete.as_mut()),
            (Method::PATCH, item.patch.as_mut()),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            if super::auth::needs_api_key(&method, path) {
                operation.security = Some(vec![
                    SecurityRequirement::default(),
                    SecurityRequirement::new(API_KEY_SCHEME, Vec::<String>::new()),
                ]);
                add_response(
                    operation,
                    "401",
                    "The orchestrator has an API key and the request did not send it",
                );
            }
            if operation.request_body.is_some() {
                add_response(
                    operation,
                    "400",
                    "The body is not JSON of the expected shape, or a field breaks its rules",
                );
                add_response(operation, "413", "The body is larger than the limit");
            }
            add_response(
                operation,
                "500",
                "An internal error; the body's requestId names the log line",
            );
            add_response(operation, "503", "The database is unreachable");
        }
    }
}

/// Adds an [`ErrorBody`] response for `status` unless the operation
/// describes one already.
fn add_response(operation: &mut Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::T(error_response(description)));
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}
