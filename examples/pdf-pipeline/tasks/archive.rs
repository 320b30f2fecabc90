//! `archive`: an end of the pipeline. Stores the summary as the JSON asset
//! `archive.json`.

use pdf_pipeline::{PipelineInput, Summary};
use pipeweave_sdk::{Context, Descriptor, Task, TaskError, TaskResult, export_task};
use serde_json::json;

struct Archive;

impl Task for Archive {
    type Input = PipelineInput;
    type Output = serde_json::Value;

    fn describe() -> Descriptor {
        Descriptor::new("archive")
            .description("Archives the summary")
            .timeout_secs(60)
    }

    fn run(ctx: &Context<PipelineInput>) -> Result<TaskResult<serde_json::Value>, TaskError> {
        let summary: Summary = ctx.upstream("summarize")?.ok_or_else(|| {
            TaskError::fatal("no output from summarize").with_code("MISSING_UPSTREAM")
        })?;
        let record = json!({ "pdfUrl": ctx.input().pdf_url, "summary": summary.summary });
        let size = ctx.add_json_asset("archive.json", &record)?;
        Ok(TaskResult::new(json!({ "archived": true, "bytes": size })))
    }
}

export_task!(Archive);
