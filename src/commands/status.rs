//! `pipeweave status`: show a run. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {}

/// Runs `pipeweave status`.
pub(crate) async fn run(_args: StatusArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave status` is not available in this build yet"
    )))
}
