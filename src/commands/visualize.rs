//! `pipeweave visualize`: draw the pipeline. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave visualize`.
#[derive(Debug, clap::Args)]
pub(crate) struct VisualizeArgs {}

/// Runs `pipeweave visualize`.
pub(crate) async fn run(_args: VisualizeArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave visualize` is not available in this build yet"
    )))
}
