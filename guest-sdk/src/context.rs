//! [`Context`]: what one attempt starts from, and the host's services.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::pipeweave::task::runtime;
use crate::bindings::pipeweave::task::types as wit;
use crate::error::TaskError;
use crate::http::HttpClient;
use crate::types::{AssetKind, LogLevel};

pub use pipeweave_protocol::PreviousAttempt;

/// The folder of the sandbox where assets live.
pub const ASSETS_DIR: &str = "/assets";

/// Everything one attempt starts from, and the host's services: logs,
/// progress, assets, secrets and outbound HTTP.
///
/// `I` is the task's [`Input`](crate::Task::Input), already deserialized.
/// Every attempt runs in a fresh sandbox whose only filesystem is an empty
/// temporary directory preopened as `/`; assets live under `/assets/`.
#[derive(Debug)]
pub struct Context<I> {
    input: I,
    run_id: String,
    pipeline_run_id: Option<String>,
    attempt: u32,
    code_version: u32,
    code_hash: String,
    upstream: Vec<(String, serde_json::Value)>,
    previous_attempts: Vec<PreviousAttempt>,
}

impl<I: DeserializeOwned> Context<I> {
    /// Builds the context from the host's record: parses the input and the
    /// upstream outputs.
    pub(crate) fn from_wit(ctx: wit::Context) -> Result<Self, TaskError> {
        let input_text = if ctx.input.trim().is_empty() {
            "null"
        } else {
            ctx.input.as_str()
        };
        let input = serde_json::from_str(input_text).map_err(|e| {
            TaskError::fatal(format!("invalid input: {e}")).with_code("INVALID_INPUT")
        })?;
        let upstream = ctx
            .upstream
            .into_iter()
            .map(|(task_id, json)| match serde_json::from_str(&json) {
                Ok(value) => Ok((task_id, value)),
                Err(e) => Err(TaskError::fatal(format!(
                    "the output of upstream task `{task_id}` is not valid JSON: {e}"
                ))
                .with_code("INVALID_UPSTREAM")),
            })
            .collect::<Result<_, _>>()?;
        let previous_attempts = ctx
            .previous_attempts
            .into_iter()
            .map(|p| PreviousAttempt {
                attempt: p.attempt,
                error: p.error,
                error_code: p.error_code,
                timestamp_ms: p.timestamp_ms,
            })
            .collect();
        Ok(Self {
            input,
            run_id: ctx.run_id,
            pipeline_run_id: ctx.pipeline_run_id,
            attempt: ctx.attempt,
            code_version: ctx.code_version,
            code_hash: ctx.code_hash,
            upstream,
            previous_attempts,
        })
    }
}

impl<I> Context<I> {
    /// The input of this run.
    pub fn input(&self) -> &I {
        &self.input
    }

    /// Unique id of this task run; the same for every attempt.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The pipeline run this task run belongs to, if any.
    pub fn pipeline_run_id(&self) -> Option<&str> {
        self.pipeline_run_id.as_deref()
    }

    /// The current attempt, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Integer version of the task's code; it grows with every change of
    /// the code hash.
    pub fn code_version(&self) -> u32 {
        self.code_version
    }

    /// Lowercase hex SHA-256 of the component's bytes.
    pub fn code_hash(&self) -> &str {
        &self.code_hash
    }

    /// The failed attempts before this one, oldest first.
    pub fn previous_attempts(&self) -> &[PreviousAttempt] {
        &self.previous_attempts
    }

    /// The output of the upstream task `task_id`, deserialized as `T`;
    /// `Ok(None)` if there is no such upstream task.
    ///
    /// # Errors
    ///
    /// A fatal error with code `INVALID_UPSTREAM` if the output does not
    /// deserialize as `T`.
    pub fn upstream<T: DeserializeOwned>(&self, task_id: &str) -> Result<Option<T>, TaskError> {
        let Some(value) = self.upstream_json(task_id) else {
            return Ok(None);
        };
        T::deserialize(value).map(Some).map_err(|e| {
            TaskError::fatal(format!(
                "the output of upstream task `{task_id}` has an unexpected shape: {e}"
            ))
            .with_code("INVALID_UPSTREAM")
        })
    }

    /// The output of the upstream task `task_id` as JSON, if there is one.
    pub fn upstream_json(&self, task_id: &str) -> Option<&serde_json::Value> {
        self.upstream
            .iter()
            .find(|(id, _)| id == task_id)
            .map(|(_, value)| value)
    }

    /// The ids of the upstream tasks whose outputs this attempt received.
    pub fn upstream_task_ids(&self) -> impl Iterator<Item = &str> {
        self.upstream.iter().map(|(id, _)| id.as_str())
    }

    /// Writes one line to the run's log at `level`.
    pub fn log(&self, level: LogLevel, message: impl AsRef<str>) {
        runtime::log(level.into(), message.as_ref());
    }

    /// Logs at [`LogLevel::Trace`].
    pub fn trace(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Trace, message);
    }

    /// Logs at [`LogLevel::Debug`].
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Debug, message);
    }

    /// Logs at [`LogLevel::Info`].
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Info, message);
    }

    /// Logs at [`LogLevel::Warn`].
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Warn, message);
    }

    /// Logs at [`LogLevel::Error`].
    pub fn error(&self, message: impl AsRef<str>) {
        self.log(LogLevel::Error, message);
    }

    /// Reports progress: `percent` (clamped to 0..=100 by the host) and what
    /// the task is doing now.
    pub fn progress(&self, percent: u8, message: &str) {
        runtime::progress(percent, Some(message));
    }

    /// Reports progress without a message.
    pub fn progress_pct(&self, percent: u8) {
        runtime::progress(percent, None);
    }

    /// Stores `bytes` as the asset `key`, written to `/assets/<key>`.
    /// Returns its size in bytes. A later asset with the same key replaces
    /// this one; assets are kept only if the attempt succeeds.
    ///
    /// # Errors
    ///
    /// A fatal error with code `INVALID_ASSET_KEY` if `key` is empty, starts
    /// with `.` or has characters other than letters, digits, `.`, `-` and
    /// `_`; a retryable `ASSET_IO` error if writing fails.
    pub fn add_asset(
        &self,
        key: &str,
        kind: AssetKind,
        bytes: impl AsRef<[u8]>,
    ) -> Result<u64, TaskError> {
        check_asset_key(key)?;
        std::fs::create_dir_all(ASSETS_DIR).map_err(|e| asset_io(key, &e))?;
        let path = format!("{ASSETS_DIR}/{key}");
        std::fs::write(&path, bytes.as_ref()).map_err(|e| asset_io(key, &e))?;
        runtime::add_asset(key, kind.into(), &path).map_err(asset_error)
    }

    /// Stores `value`, serialized as JSON, as the asset `key`.
    ///
    /// # Errors
    ///
    /// As [`add_asset`](Self::add_asset); a fatal `INVALID_ASSET` error if
    /// `value` does not serialize.
    pub fn add_json_asset<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<u64, TaskError> {
        let bytes = serde_json::to_vec(value).map_err(|e| {
            TaskError::fatal(format!("asset `{key}` does not serialize as JSON: {e}"))
                .with_code("INVALID_ASSET")
        })?;
        self.add_asset(key, AssetKind::Json, bytes)
    }

    /// Stores `text` as the text asset `key`.
    ///
    /// # Errors
    ///
    /// As [`add_asset`](Self::add_asset).
    pub fn add_text_asset(&self, key: &str, text: &str) -> Result<u64, TaskError> {
        self.add_asset(key, AssetKind::Text, text)
    }

    /// Registers a file that the task already wrote inside its sandbox as
    /// the asset `key`; the host moves it to `/assets/<key>`. Returns its
    /// size in bytes.
    ///
    /// # Errors
    ///
    /// A fatal error with code `INVALID_ASSET_KEY` or `INVALID_ASSET_PATH`
    /// if the host rejects the key or the path.
    pub fn add_asset_from_path(
        &self,
        key: &str,
        kind: AssetKind,
        path: impl AsRef<Path>,
    ) -> Result<u64, TaskError> {
        let path = path.as_ref();
        let Some(path_str) = path.to_str() else {
            return Err(TaskError::fatal(format!(
                "asset path {} is not valid UTF-8",
                path.display()
            ))
            .with_code("INVALID_ASSET_PATH"));
        };
        runtime::add_asset(key, kind.into(), path_str).map_err(asset_error)
    }

    /// The sandbox path of the asset `key`, added by this attempt or
    /// provided by an upstream task.
    ///
    /// # Errors
    ///
    /// A fatal error with code `ASSET_NOT_FOUND` if there is no such asset.
    pub fn get_asset_path(&self, key: &str) -> Result<PathBuf, TaskError> {
        runtime::asset_path(key)
            .map(PathBuf::from)
            .map_err(asset_error)
    }

    /// The bytes of the asset `key`.
    ///
    /// # Errors
    ///
    /// As [`get_asset_path`](Self::get_asset_path); a retryable `ASSET_IO`
    /// error if reading fails.
    pub fn get_asset(&self, key: &str) -> Result<Vec<u8>, TaskError> {
        let path = self.get_asset_path(key)?;
        std::fs::read(&path).map_err(|e| asset_io(key, &e))
    }

    /// The asset `key` as UTF-8 text.
    ///
    /// # Errors
    ///
    /// As [`get_asset`](Self::get_asset); a fatal `INVALID_ASSET` error if
    /// the asset is not UTF-8.
    pub fn get_text_asset(&self, key: &str) -> Result<String, TaskError> {
        String::from_utf8(self.get_asset(key)?).map_err(|e| {
            TaskError::fatal(format!("asset `{key}` is not UTF-8 text: {e}"))
                .with_code("INVALID_ASSET")
        })
    }

    /// The asset `key`, deserialized from JSON as `T`.
    ///
    /// # Errors
    ///
    /// As [`get_asset`](Self::get_asset); a fatal `INVALID_ASSET` error if
    /// the asset does not deserialize as `T`.
    pub fn get_json_asset<T: DeserializeOwned>(&self, key: &str) -> Result<T, TaskError> {
        serde_json::from_slice(&self.get_asset(key)?).map_err(|e| {
            TaskError::fatal(format!("asset `{key}` is not the expected JSON: {e}"))
                .with_code("INVALID_ASSET")
        })
    }

    /// The value of the secret `name`, which the descriptor must declare
    /// with [`Descriptor::secret`](crate::Descriptor::secret).
    ///
    /// # Errors
    ///
    /// A fatal error with code `SECRET_NOT_DECLARED` or `SECRET_NOT_SET`.
    pub fn secret(&self, name: &str) -> Result<String, TaskError> {
        runtime::secret(name).map_err(|e| match e {
            wit::SecretError::NotDeclared(msg) => {
                TaskError::fatal(format!("secret `{name}` is not declared: {msg}"))
                    .with_code("SECRET_NOT_DECLARED")
            }
            wit::SecretError::NotSet(msg) => {
                TaskError::fatal(format!("secret `{name}` is not set: {msg}"))
                    .with_code("SECRET_NOT_SET")
            }
        })
    }

    /// An HTTP client for the hosts the descriptor declared.
    pub fn http(&self) -> HttpClient {
        HttpClient::new()
    }
}

/// Checks the key rules of `wit/task.wit` before anything touches the disk,
/// so that a bad key cannot name a path outside `/assets`.
fn check_asset_key(key: &str) -> Result<(), TaskError> {
    let valid = !key.is_empty()
        && !key.starts_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(TaskError::fatal(format!(
            "invalid asset key `{key}`: use letters, digits, `.`, `-` and `_`, not starting with `.`"
        ))
        .with_code("INVALID_ASSET_KEY"))
    }
}

fn asset_io(key: &str, error: &std::io::Error) -> TaskError {
    TaskError::retryable(format!("asset `{key}`: {error}")).with_code("ASSET_IO")
}

fn asset_error(error: wit::AssetError) -> TaskError {
    match error {
        wit::AssetError::InvalidKey(msg) => {
            TaskError::fatal(format!("invalid asset key: {msg}")).with_code("INVALID_ASSET_KEY")
        }
        wit::AssetError::InvalidPath(msg) => {
            TaskError::fatal(format!("invalid asset path: {msg}")).with_code("INVALID_ASSET_PATH")
        }
        wit::AssetError::NotFound(msg) => {
            TaskError::fatal(format!("asset not found: {msg}")).with_code("ASSET_NOT_FOUND")
        }
        wit::AssetError::Io(msg) => {
            TaskError::retryable(format!("asset I/O failed: {msg}")).with_code("ASSET_IO")
        }
    }
}
