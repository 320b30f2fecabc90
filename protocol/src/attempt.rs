//! What a task is told about its run's earlier attempts.

use serde::{Deserialize, Serialize};

/// One earlier attempt of a run that failed; a retry sees all of them in
/// `previousAttempts`, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousAttempt {
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// The error message of that attempt.
    pub error: String,
    /// Its error code: the task's own, or the host's such as `TIMEOUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// When it ended, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}
