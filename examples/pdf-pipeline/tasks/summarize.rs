//! `summarize`: the join. Waits for both extractors, combines their
//! outputs, and selects `archive`, plus `notify` unless the input says
//! `"notify": false`.

use pdf_pipeline::{ExtractedTables, ExtractedText, PipelineInput, Summary};
use pipeweave_sdk::{Context, Descriptor, Task, TaskError, TaskResult, export_task};

struct Summarize;

fn required<T: serde::de::DeserializeOwned>(
    ctx: &Context<PipelineInput>,
    task: &str,
) -> Result<T, TaskError> {
    ctx.upstream(task)?.ok_or_else(|| {
        TaskError::fatal(format!("no output from {task}")).with_code("MISSING_UPSTREAM")
    })
}

impl Task for Summarize {
    type Input = PipelineInput;
    type Output = Summary;

    fn describe() -> Descriptor {
        Descriptor::new("summarize")
            .description("Joins the extractions into a summary")
            .allowed_next(["notify", "archive"])
            .timeout_secs(60)
    }

    fn run(ctx: &Context<PipelineInput>) -> Result<TaskResult<Summary>, TaskError> {
        let text: ExtractedText = required(ctx, "extract-text")?;
        let tables: ExtractedTables = required(ctx, "extract-tables")?;
        let input = ctx.input();
        let summary = Summary {
            summary: format!(
                "{}: {} pages, {} words, {} table rows",
                input.pdf_url, input.pages, text.words, tables.rows
            ),
        };
        let next: &[&str] = if input.notify {
            &["notify", "archive"]
        } else {
            &["archive"]
        };
        Ok(TaskResult::new(summary).run_next(next.iter().copied()))
    }
}

export_task!(Summarize);
