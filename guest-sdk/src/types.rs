//! Small enums shared by the SDK's API, mirroring `wit/task.wit`.

use crate::bindings::pipeweave::task::types as wit;

/// Severity of a log line, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Fine-grained detail, normally hidden.
    Trace,
    /// Detail useful while debugging a task.
    Debug,
    /// Normal progress messages.
    Info,
    /// Something unexpected that the task recovered from.
    Warn,
    /// Something failed.
    Error,
}

impl From<LogLevel> for wit::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => Self::Trace,
            LogLevel::Debug => Self::Debug,
            LogLevel::Info => Self::Info,
            LogLevel::Warn => Self::Warn,
            LogLevel::Error => Self::Error,
        }
    }
}

/// How an asset's bytes are to be read; it decides the content type the
/// host records for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssetKind {
    /// `application/json`: structured data.
    Json,
    /// `text/plain`: reports, CSV, UTF-8 text.
    Text,
    /// `application/octet-stream`: files, images, anything else.
    Binary,
}

impl From<AssetKind> for wit::AssetKind {
    fn from(kind: AssetKind) -> Self {
        match kind {
            AssetKind::Json => Self::Json,
            AssetKind::Text => Self::Text,
            AssetKind::Binary => Self::Binary,
        }
    }
}

/// How the delay between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetryBackoff {
    /// The same delay, `retry_delay_ms`, before every retry.
    Fixed,
    /// `min(retry_delay_ms * 2^(attempt-1), max_retry_delay_ms)`; the default.
    #[default]
    Exponential,
}

impl From<RetryBackoff> for wit::RetryBackoff {
    fn from(backoff: RetryBackoff) -> Self {
        match backoff {
            RetryBackoff::Fixed => Self::Fixed,
            RetryBackoff::Exponential => Self::Exponential,
        }
    }
}
