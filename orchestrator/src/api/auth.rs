//! The API key: when `PIPEWEAVE_API_KEY` is set, every write, and every
//! read of stored objects (`GET /api/storage/{path}`, and the attempt logs
//! of `GET /api/task-runs/{id}/logs`), must send
//! `Authorization: Bearer <key>` or gets `401`. Other reads stay open, and
//! the heartbeats, progress and callbacks of attempts are authenticated by
//! their attempt token instead, so workers and hosts need the key only to
//! register.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// Paths a running attempt calls, authenticated by its token.
fn authenticated_by_attempt_token(path: &str) -> bool {
    path == "/api/heartbeat" || path == "/api/progress" || path.starts_with("/api/callback/")
}

/// Whether a request needs the key when one is set.
pub(super) fn needs_api_key(method: &Method, path: &str) -> bool {
    if path.starts_with("/api/storage/") && path != "/api/storage/backends" {
        return true;
    }
    if path.starts_with("/api/task-runs/") && path.ends_with("/logs") {
        return true;
    }
    let read = matches!(*method, Method::GET | Method::HEAD);
    !read && !authenticated_by_attempt_token(path)
}

/// Refuses a write without the key.
pub(super) async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.config.api_key.as_deref() else {
        return next.run(request).await;
    };
    if !needs_api_key(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(key) if bool::from(key.as_bytes().ct_eq(expected.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => ApiError::Unauthorized("the API key is wrong").into_response(),
        None => ApiError::Unauthorized(
            "this orchestrator requires an API key for writes: send Authorization: Bearer <PIPEWEAVE_API_KEY>",
        )
        .into_response(),
    }
}
