//! `extract-text`: reads the document `download` stored (an upstream
//! asset, which the host fetches through its storage token) and counts its
//! words.

use pdf_pipeline::{DOCUMENT_ASSET, ExtractedText, PipelineInput, count_words};
use pipeweave_sdk::{Context, Descriptor, Task, TaskError, TaskResult, export_task};

struct ExtractText;

impl Task for ExtractText {
    type Input = PipelineInput;
    type Output = ExtractedText;

    fn describe() -> Descriptor {
        Descriptor::new("extract-text")
            .description("Extracts the text of the downloaded document")
            .allowed_next(["summarize"])
            .timeout_secs(60)
    }

    fn run(ctx: &Context<PipelineInput>) -> Result<TaskResult<ExtractedText>, TaskError> {
        let document = ctx.get_text_asset(DOCUMENT_ASSET)?;
        Ok(TaskResult::new(ExtractedText {
            words: count_words(&document),
            first_line: document.lines().next().unwrap_or_default().to_owned(),
        }))
    }
}

export_task!(ExtractText);
