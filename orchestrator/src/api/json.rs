//! A JSON body extractor whose errors name the field at fault
//! (`tasks[1].priority: invalid type: string "high", expected i32`),
//! which takes only JSON objects, and whose size limit answers 413.

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

/// Decodes a JSON object, naming the path of the first bad value. Every
/// request body of the API is an object; serde would also take a struct
/// from an array of its fields in order (`["reason"]`), which no client
/// means, so anything but an object is refused.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(ApiError::MalformedJson {
            field: None,
            message: "the request body must be a JSON object ({ … })".to_owned(),
        });
    }
    if has_nul_escape(bytes) {
        return Err(ApiError::MalformedJson {
            field: None,
            message: "a string in the request body contains the NUL character (\\u0000), \
                      which cannot be stored; remove it"
                .to_owned(),
        });
    }
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

/// Whether JSON text has a `\u0000` escape (a NUL in a string), which
/// PostgreSQL stores in neither `text` nor `jsonb`. Escapes are two
/// characters (`\\`, `\"`, …) or six (`\uXXXX`), so `\\u0000` is a
/// backslash and the text `u0000`, not a NUL.
fn has_nul_escape(bytes: &[u8]) -> bool {
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\' {
            if bytes[index + 1..].starts_with(b"u0000") {
                return true;
            }
            index += 2;
        } else {
            index += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn only_a_real_nul_escape_counts() {
        assert!(has_nul_escape(br#"{"a": "x\u0000y"}"#));
        assert!(has_nul_escape(br#"{"a\u0000": 1}"#));
        assert!(
            !has_nul_escape(br#"{"a": "x\\u0000y"}"#),
            "an escaped backslash"
        );
        assert!(
            has_nul_escape(br#"{"a": "\\\u0000"}"#),
            "a backslash, then a NUL"
        );
        assert!(!has_nul_escape(br#"{"a": "\u0001"}"#));
        assert!(!has_nul_escape(br#"{"a": "trailing\"#));
    }
}
