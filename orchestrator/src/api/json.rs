//! A JSON body extractor whose errors name the field at fault
//! (`tasks[1].priority: invalid type: string "high", expected i32`) and
//! whose size limit answers 413.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A JSON request body of type `T`, at most `max_body_bytes` long.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_body_bytes;
        let bytes = read_body(request, limit).await?;
        decode(&bytes).map(ApiJson)
    }
}

/// A JSON request body of type `T` that may also be left out (empty or
/// blank), which means `T::default()`.
#[derive(Debug)]
pub struct OptionalApiJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_body_bytes;
        let bytes = read_body(request, limit).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        decode(&bytes).map(OptionalApiJson)
    }
}

/// Reads a whole body, refusing one over `limit` bytes with 413.
pub async fn read_body(request: Request, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| ApiError::TooLarge { limit })
}

/// Decodes JSON, naming the path of the first bad value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = (path != ".").then_some(path);
        let message = match &field {
            Some(field) => format!("{field}: {}", error.inner()),
            None => format!(
                "request body is not valid JSON of the expected shape: {}",
                error.inner()
            ),
        };
        ApiError::MalformedJson { field, message }
    })
}
