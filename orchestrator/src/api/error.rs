//! One error type for every handler, with an explicit status for each
//! variant. Client mistakes get a 4xx whose body names the field and the
//! reason; anything else gets a 500 that says "internal error" with a
//! request id, and the cause is logged under that id.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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
            _ => Self::Internal(error.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
            Self::MalformedJson { .. } => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let body = match &self {
            Self::Internal(cause) | Self::Unavailable(cause) => {
                let request_id = format!("req_{}", uuid::Uuid::new_v4().simple());
                tracing::error!(%request_id, error = %crate::error_chain(cause), "request failed");
                json!({ "error": self.to_string(), "code": code, "requestId": request_id })
            }
            Self::Invalid { field, .. } => {
                json!({ "error": self.to_string(), "code": code, "field": field })
            }
            Self::MalformedJson {
                field: Some(field), ..
            } => {
                json!({ "error": self.to_string(), "code": code, "field": field })
            }
            _ => json!({ "error": self.to_string(), "code": code }),
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
