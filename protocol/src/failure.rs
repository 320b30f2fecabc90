//! Why an attempt failed. The host names the reason; the orchestrator stores
//! it with the attempt, decides about retries, and shows the next attempt
//! its `errorCode` (the spec's `TIMEOUT`, or the code the task chose).

use serde::{Deserialize, Serialize};

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FailureReason {
    /// The task returned its own error; its code and retryability are the
    /// task's.
    TaskError,
    /// The attempt ran longer than its timeout.
    Timeout,
    /// The task tried to grow its memory beyond its limit.
    MemoryLimit,
    /// The task recursed deeper than the wasm stack allows.
    StackOverflow,
    /// The task panicked.
    Panic,
    /// The task trapped for another reason (`unreachable`, a bad memory
    /// access, an abort, a failed host call).
    Trap,
    /// The task tried to reach a host it did not declare.
    NetworkDenied,
    /// The output is larger than the host accepts.
    OutputTooLarge,
    /// The output is not valid JSON, or `runNext` names a task outside
    /// `allowedNext`.
    InvalidOutput,
    /// The component does not implement the task world, or cannot be
    /// instantiated under this host's limits.
    InvalidComponent,
    /// Someone cancelled the attempt.
    Cancelled,
    /// The orchestrator heard no heartbeat from the attempt for twice its
    /// heartbeat interval: the host or worker died or lost its network.
    HeartbeatTimeout,
    /// The orchestrator could not hand the attempt over: the host or worker
    /// refused it, did not answer in time, or could not be reached.
    DispatchFailed,
    /// The attempt's input could not be read from object storage, or its
    /// output and assets could not be written there (nothing it wrote is
    /// kept).
    StorageFailed,
}

impl FailureReason {
    /// The snake_case name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskError => "task_error",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Panic => "panic",
            Self::Trap => "trap",
            Self::NetworkDenied => "network_denied",
            Self::OutputTooLarge => "output_too_large",
            Self::InvalidOutput => "invalid_output",
            Self::InvalidComponent => "invalid_component",
            Self::Cancelled => "cancelled",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::DispatchFailed => "dispatch_failed",
            Self::StorageFailed => "storage_failed",
        }
    }

    /// The error code later attempts see in `previousAttempts` when the
    /// host, not the task, ended the attempt: the reason in upper case, as
    /// the spec's `TIMEOUT`.
    pub fn error_code(self) -> String {
        self.as_str().to_ascii_uppercase()
    }

    /// Whether trying again may help, for failures the host decides (a
    /// task's own error carries its own flag). Timeouts and lost or
    /// refused attempts are worth retrying; the other reasons repeat with
    /// the same input and code.
    pub fn host_retryable(self) -> bool {
        matches!(
            self,
            Self::Timeout | Self::HeartbeatTimeout | Self::DispatchFailed | Self::StorageFailed
        )
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_follow_the_spec() {
        assert_eq!(FailureReason::Timeout.error_code(), "TIMEOUT");
        assert_eq!(FailureReason::MemoryLimit.as_str(), "memory_limit");
        assert_eq!(
            serde_json::to_string(&FailureReason::NetworkDenied)
                .ok()
                .as_deref(),
            Some("\"network_denied\"")
        );
        assert!(FailureReason::Timeout.host_retryable());
        assert!(!FailureReason::Panic.host_retryable());
    }
}
