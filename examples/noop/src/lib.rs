//! `noop`: a task that ignores its input and returns `null`. The benchmark
//! uses it to measure what the sandbox itself costs: instantiate, call,
//! drop, including the attempt's fresh directory.
//!
//! Build and run it from the workspace root:
//!
//! ```text
//! cargo run -- run examples/noop
//! ```

use pipeweave_sdk::serde::de::IgnoredAny;
use pipeweave_sdk::{Context, Descriptor, Task, TaskError, TaskResult, export_task};

/// The task.
#[derive(Debug)]
pub struct Noop;

impl Task for Noop {
    type Input = IgnoredAny;
    type Output = ();

    fn describe() -> Descriptor {
        Descriptor::new("noop").description("Does nothing; measures the sandbox")
    }

    fn run(_ctx: &Context<IgnoredAny>) -> Result<TaskResult<()>, TaskError> {
        Ok(TaskResult::new(()))
    }
}

export_task!(Noop);
