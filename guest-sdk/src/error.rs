//! [`TaskError`] and [`TaskResult`]: what an attempt returns.

use std::fmt;

use crate::bindings::pipeweave::task::types as wit;

/// Why an attempt failed, as the task reports it.
///
/// A [retryable](TaskError::retryable) error lets the orchestrator try again
/// after the descriptor's backoff; a [fatal](TaskError::fatal) one sends the
/// run straight to the dead-letter queue. The optional code is a short
/// machine-readable name, such as `RATE_LIMITED`, that the next attempt sees
/// in [`Context::previous_attempts`](crate::Context::previous_attempts).
///
/// ```
/// use pipeweave_sdk::TaskError;
///
/// let error = TaskError::retryable("the upstream API said 429")
///     .with_code("RATE_LIMITED")
///     .with_details(serde_json::json!({ "retryAfterSecs": 30 }));
/// assert!(error.is_retryable());
/// assert_eq!(error.code(), Some("RATE_LIMITED"));
/// assert_eq!(error.to_string(), "RATE_LIMITED: the upstream API said 429");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    message: String,
    code: Option<String>,
    retryable: bool,
    details: Option<serde_json::Value>,
}

impl TaskError {
    /// An error after which trying again may succeed.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: None,
            retryable: true,
            details: None,
        }
    }

    /// An error that no retry can fix; the run fails without retries.
    pub fn fatal(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            code: None,
            retryable: false,
            details: None,
        }
    }

    /// Sets the machine-readable code, such as `RATE_LIMITED`.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Attaches extra detail, kept with the attempt.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// What went wrong, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The machine-readable code, if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The extra detail, if any.
    pub fn details(&self) -> Option<&serde_json::Value> {
        self.details.as_ref()
    }

    pub(crate) fn into_wit(self) -> wit::TaskError {
        wit::TaskError {
            code: self.code,
            message: self.message,
            retryable: self.retryable,
            details: self.details.map(|details| details.to_string()),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TaskError {}

/// An I/O error from the sandbox filesystem: retryable, code `IO_ERROR`.
impl From<std::io::Error> for TaskError {
    fn from(error: std::io::Error) -> Self {
        Self::retryable(error).with_code("IO_ERROR")
    }
}

/// What a successful attempt returns: the output and which of the
/// descriptor's `allowed_next` tasks run next.
///
/// Any output converts into a result that runs every allowed next task, so a
/// task can end with `Ok(output.into())`.
///
/// ```
/// use pipeweave_sdk::TaskResult;
///
/// let all: TaskResult<u32> = 7.into();
/// assert_eq!(all.next(), None);
/// let one = TaskResult::new(7).run_next(["index"]);
/// assert_eq!(one.next(), Some(&["index".to_string()][..]));
/// let none = TaskResult::new(7).end_branch();
/// assert_eq!(none.next(), Some(&[][..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult<O> {
    output: O,
    run_next: Option<Vec<String>>,
}

impl<O> TaskResult<O> {
    /// A result with `output` that runs every allowed next task.
    pub fn new(output: O) -> Self {
        Self {
            output,
            run_next: None,
        }
    }

    /// Runs only the given next tasks, which must be among the descriptor's
    /// `allowed_next`.
    #[must_use]
    pub fn run_next<S: Into<String>>(mut self, ids: impl IntoIterator<Item = S>) -> Self {
        self.run_next = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    /// Runs no next task: this branch of the pipeline ends here.
    #[must_use]
    pub fn end_branch(mut self) -> Self {
        self.run_next = Some(Vec::new());
        self
    }

    /// The output.
    pub fn output(&self) -> &O {
        &self.output
    }

    /// The next-task selection: `None` runs all allowed next tasks.
    pub fn next(&self) -> Option<&[String]> {
        self.run_next.as_deref()
    }

    /// Splits the result into the output and the next-task selection.
    pub fn into_parts(self) -> (O, Option<Vec<String>>) {
        (self.output, self.run_next)
    }
}

impl<O> From<O> for TaskResult<O> {
    fn from(output: O) -> Self {
        Self::new(output)
    }
}
