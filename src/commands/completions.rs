//! `pipeweave completions`: print shell completions. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave completions`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {}

/// Runs `pipeweave completions`.
pub(crate) async fn run(_args: CompletionsArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave completions` is not available in this build yet"
    )))
}
