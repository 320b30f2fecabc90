//! The small enums of the SDK's API. They are `pipeweave-protocol`'s, the
//! same the host uses; this module maps them onto the WIT enums.

pub use pipeweave_protocol::{AssetKind, LogLevel, RetryBackoff};

use crate::bindings::pipeweave::task::types as wit;

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

impl From<AssetKind> for wit::AssetKind {
    fn from(kind: AssetKind) -> Self {
        match kind {
            AssetKind::Json => Self::Json,
            AssetKind::Text => Self::Text,
            AssetKind::Binary => Self::Binary,
        }
    }
}

impl From<RetryBackoff> for wit::RetryBackoff {
    fn from(backoff: RetryBackoff) -> Self {
        match backoff {
            RetryBackoff::Fixed => Self::Fixed,
            RetryBackoff::Exponential => Self::Exponential,
        }
    }
}
