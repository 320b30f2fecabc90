//! `notify`: an end of the pipeline. "Sends" the summary by logging it,
//! like the Python worker's `notify` (examples/python-worker), and returns
//! it as `notified`.

use pdf_pipeline::{PipelineInput, Summary};
use pipeweave_sdk::{Context, Descriptor, Task, TaskError, TaskResult, export_task};
use serde_json::json;

struct Notify;

impl Task for Notify {
    type Input = PipelineInput;
    type Output = serde_json::Value;

    fn describe() -> Descriptor {
        Descriptor::new("notify")
            .description("Sends the summary")
            .timeout_secs(60)
    }

    fn run(ctx: &Context<PipelineInput>) -> Result<TaskResult<serde_json::Value>, TaskError> {
        let summary: Summary = ctx.upstream("summarize")?.ok_or_else(|| {
            TaskError::fatal("no output from summarize").with_code("MISSING_UPSTREAM")
        })?;
        ctx.info(format!("notify: {}", summary.summary));
        Ok(TaskResult::new(json!({ "notified": summary.summary })))
    }
}

export_task!(Notify);
