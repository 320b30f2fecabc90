//! `pipeweave dry-run`: validate a pipeline. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave dry-run`.
#[derive(Debug, clap::Args)]
pub(crate) struct DryRunArgs {}

/// Runs `pipeweave dry-run`.
pub(crate) async fn run(_args: DryRunArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave dry-run` is not available in this build yet"
    )))
}
