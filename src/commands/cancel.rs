//! `pipeweave cancel`: cancel a run. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave cancel`.
#[derive(Debug, clap::Args)]
pub(crate) struct CancelArgs {}

/// Runs `pipeweave cancel`.
pub(crate) async fn run(_args: CancelArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave cancel` is not available in this build yet"
    )))
}
