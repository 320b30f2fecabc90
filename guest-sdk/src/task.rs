//! The [`Task`] trait.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::descriptor::Descriptor;
use crate::error::{TaskError, TaskResult};

/// A PipeWeave task. Implement it on a unit struct and export the struct
/// with [`export_task!`](crate::export_task).
///
/// Both functions are associated functions: the host may instantiate the
/// component afresh for every call, so a task keeps no state between them.
pub trait Task {
    /// The input, deserialized from the run's JSON input. A run whose input
    /// does not deserialize fails without retries, with code
    /// `INVALID_INPUT`. Use `serde_json::Value` to take any JSON, or an
    /// `Option` to accept a missing input.
    type Input: DeserializeOwned;

    /// The output, serialized to JSON.
    type Output: Serialize;

    /// Describes the task: its id, options and sandbox needs. It must not
    /// depend on anything but the code, and must not have side effects.
    fn describe() -> Descriptor;

    /// Runs one attempt.
    ///
    /// # Errors
    ///
    /// A [`TaskError`] says why the attempt failed and whether to retry. A
    /// panic also fails the attempt, with the panic message.
    fn run(ctx: &Context<Self::Input>) -> Result<TaskResult<Self::Output>, TaskError>;
}
