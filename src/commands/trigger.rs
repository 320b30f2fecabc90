//! `pipeweave trigger`: trigger a pipeline or task. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave trigger`.
#[derive(Debug, clap::Args)]
pub(crate) struct TriggerArgs {}

/// Runs `pipeweave trigger`.
pub(crate) async fn run(_args: TriggerArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave trigger` is not available in this build yet"
    )))
}
