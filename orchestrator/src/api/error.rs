//! One error type for every handler, with an explicit status for each
//! variant. Client mistakes get a 4xx whose body names the field and the
//! reason; anything else gets a 500 that says "internal error" with a
//! request id, and the cause is logged under that id.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What went wrong, for a person.
    #[schema(
        example = "tasks[1].priority: -1 is out of range; use 0 to 2147483647 (lower runs first)"
    )]
    pub error: String,
    /// What went wrong, for a program: `invalid_field`, `malformed_json`,
    /// `body_too_large`, `not_found`, `conflict`, `unauthorized`,
    /// `unavailable`, `storage_failed` or `internal`.
    #[schema(example = "invalid_field")]
    pub code: &'static str,
    /// The JSON path of the field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Names the server's log line of a 500, 502 or 503.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A field has a value outside its rules; `field` names it.
#[derive(Debug, utoipa::IntoResponses)]
#[response(status = 400)]
pub struct BadRequest(pub ErrorBody);

/// The thing named in the path does not exist.
#[derive(Debug, utoipa::IntoResponses)]
#[response(status = 404)]
pub struct NotFound(pub ErrorBody);

/// The request conflicts with the current state.
#[derive(Debug, utoipa::IntoResponses)]
#[response(status = 409)]
pub struct Conflict(pub ErrorBody);

/// What a handler answers when it cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field has a value outside its rules.
    #[error("{field}: {reason}")]
    Invalid {
        /// JSON path of the field (`tasks[2].priority`).
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The body is not JSON of the expected shape.
    #[error("{message}")]
    MalformedJson {
        /// JSON path where decoding failed, when known.
        field: Option<String>,
        /// The decoder's message.
        message: String,
    },
    /// The body is larger than the limit.
    #[error("request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The thing named in the path does not exist.
    #[error("{what} {id:?} does not exist")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its id as given.
        id: String,
    },
    /// The request conflicts with the current state (a superseded attempt,
    /// a task owned by another service).
    #[error("{0}")]
    Conflict(String),
    /// A write without the API key (`PIPEWEAVE_API_KEY` is set).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The database is unreachable.
    #[error("database unavailable")]
    Unavailable(#[source] crate::Error),
    /// A storage backend failed (unreachable, refused the credentials…).
    #[error("storage backend failed")]
    Storage(#[source] crate::Error),
    /// Anything else.
    #[error("internal error")]
    Internal(#[from] crate::Error),
}

impl ApiError {
    /// A field-level 400.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable(error.into())
            }
            // A parameter the client sent that PostgreSQL cannot store: a
            // NUL in a path or query value (JSON bodies are checked before).
            sqlx::Error::Database(database)
                if matches!(database.code().as_deref(), Some("22021" | "22P05")) =>
            {
                Self::MalformedJson {
                    field: None,
                    message: "a value in the request contains the NUL character, which cannot be stored; remove it".to_owned(),
                }
            }
            _ => Self::Internal(error.into()),
        }
    }
}

impl ApiError {
    /// The HTTP status of this error and its `code`.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
            Self::MalformedJson { .. } => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Storage(_) => (StatusCode::BAD_GATEWAY, "storage_failed"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The JSON path of the field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            Self::MalformedJson { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let field = self.field().map(str::to_owned);
        let request_id = match &self {
            Self::Internal(cause) | Self::Unavailable(cause) | Self::Storage(cause) => {
                let request_id = format!("req_{}", uuid::Uuid::new_v4().simple());
                tracing::error!(%request_id, error = %crate::error_chain(cause), "request failed");
                Some(request_id)
            }
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            code,
            field,
            request_id,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
