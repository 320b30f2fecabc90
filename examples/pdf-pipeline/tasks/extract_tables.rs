//! `extract-tables`: reads the document `download` stored (an upstream
//! asset) and counts its table rows. The same task as the Python worker's
//! `extract-tables` (examples/python-worker), with the same output, so
//! `summarize` joins either.

use pdf_pipeline::{DOCUMENT_ASSET, ExtractedTables, PipelineInput, count_table_rows};
use pipeweave_sdk::{Context, Descriptor, Task, TaskError, TaskResult, export_task};

struct ExtractTables;

impl Task for ExtractTables {
    type Input = PipelineInput;
    type Output = ExtractedTables;

    fn describe() -> Descriptor {
        Descriptor::new("extract-tables")
            .description("Extracts the tables of the downloaded document")
            .allowed_next(["summarize"])
            .timeout_secs(60)
    }

    fn run(ctx: &Context<PipelineInput>) -> Result<TaskResult<ExtractedTables>, TaskError> {
        let document = ctx.get_text_asset(DOCUMENT_ASSET)?;
        Ok(TaskResult::new(ExtractedTables {
            rows: count_table_rows(&document),
        }))
    }
}

export_task!(ExtractTables);
