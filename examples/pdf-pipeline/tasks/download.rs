//! `download`: the pipeline's entry. Makes the document its input
//! describes (see the crate docs), stores it as the binary asset
//! `pdf-file`, and selects both extractors.

use pdf_pipeline::{DOCUMENT_ASSET, Downloaded, PipelineInput, make_document};
use pipeweave_sdk::{AssetKind, Context, Descriptor, Task, TaskError, TaskResult, export_task};

struct Download;

impl Task for Download {
    type Input = PipelineInput;
    type Output = Downloaded;

    fn describe() -> Descriptor {
        Descriptor::new("download")
            .description("Fetches the document (here: makes it) and stores it as an asset")
            .allowed_next(["extract-text", "extract-tables"])
            .timeout_secs(60)
    }

    fn run(ctx: &Context<PipelineInput>) -> Result<TaskResult<Downloaded>, TaskError> {
        let input = ctx.input();
        let document = make_document(input);
        let size_bytes = ctx.add_asset(DOCUMENT_ASSET, AssetKind::Binary, document.as_bytes())?;
        ctx.info(format!("downloaded {} ({size_bytes} bytes)", input.pdf_url));
        Ok(TaskResult::new(Downloaded {
            pdf_url: input.pdf_url.clone(),
            pages: input.pages,
            size_bytes,
        }))
    }
}

export_task!(Download);
