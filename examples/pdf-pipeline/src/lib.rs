//! The spec's PDF processing pipeline ("Example: PDF Processing Pipeline"):
//!
//! ```text
//! download ─┬─ extract-text ──┬─ summarize ─┬─ notify
//!           └─ extract-tables ┘             └─ archive
//! ```
//!
//! Every task is a WebAssembly task built from this crate's example targets
//! (one component each, `tasks/`), so the pipeline runs on hosts alone;
//! `pipeweave.toml` makes the crate a project (`pipeweave validate`,
//! `pipeweave test`, `pipeweave dev examples/pdf-pipeline`), and
//! `tests/fixtures/` holds each task's fixtures. The plain HTTP worker in
//! `examples/python-worker` serves `extract-tables` and `notify` too, with
//! the same outputs, reading the downloaded document through its storage
//! token; the orchestrator's end-to-end test mixes the two. Nothing leaves
//! the machine: `download` makes the document from its input instead of
//! fetching it (a real one would use `ctx.http()` with `pdfUrl` in its
//! outbound allow-list).
//!
//! The document is plain text standing in for a PDF: pages separated by a
//! form feed, table rows starting with `|`. This library holds what the
//! tasks share: the input, each task's output, and the document format.

use serde::{Deserialize, Serialize};

/// The pipeline's input, which every task receives.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInput {
    /// Where the document is (only named in outputs here).
    pub pdf_url: String,
    /// How many pages the made-up document has.
    #[serde(default = "default_pages")]
    pub pages: u32,
    /// Whether `summarize` selects `notify` as well as `archive`.
    #[serde(default = "default_notify")]
    pub notify: bool,
}

fn default_pages() -> u32 {
    3
}

fn default_notify() -> bool {
    true
}

/// The asset key of the downloaded document.
pub const DOCUMENT_ASSET: &str = "pdf-file";

/// Separates pages in the document.
pub const PAGE_BREAK: char = '\u{c}';

/// The document `download` makes for `input`: each page has a heading, a
/// sentence and a two-row table.
pub fn make_document(input: &PipelineInput) -> String {
    (1..=input.pages)
        .map(|page| {
            format!(
                "Page {page} of {url}\nThe quick brown fox jumps over the lazy dog.\n| item | qty |\n| fox | {page} |\n",
                url = input.pdf_url
            )
        })
        .collect::<Vec<_>>()
        .join(&PAGE_BREAK.to_string())
}

/// What `download` returns.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Downloaded {
    /// The document's URL.
    pub pdf_url: String,
    /// Its pages.
    pub pages: u32,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// What `extract-text` returns.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractedText {
    /// Words outside tables.
    pub words: u64,
    /// The first line of the document.
    pub first_line: String,
}

/// What `extract-tables` returns (the WebAssembly task and the Python
/// worker's alike).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractedTables {
    /// Table rows, header rows included.
    pub rows: u64,
}

/// What `summarize` returns.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// One line about the document.
    pub summary: String,
}

/// Words outside table rows.
pub fn count_words(document: &str) -> u64 {
    document
        .lines()
        .filter(|line| !line.starts_with('|'))
        .map(|line| line.split_whitespace().count() as u64)
        .sum()
}

/// Table rows, header rows included: lines starting with `|`.
pub fn count_table_rows(document: &str) -> u64 {
    document
        .lines()
        .filter(|line| line.starts_with('|'))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_three_page_document_has_three_pages_and_its_words() {
        let input = PipelineInput {
            pdf_url: "u".into(),
            pages: 3,
            notify: true,
        };
        let document = make_document(&input);
        assert_eq!(document.split(PAGE_BREAK).count(), 3);
        // "Page N of u" (4) + the sentence (9), per page.
        assert_eq!(count_words(&document), 39);
        assert_eq!(count_table_rows(&document), 6);
    }
}
