//! `pipeweave validate`: check a project. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave validate`.
#[derive(Debug, clap::Args)]
pub(crate) struct ValidateArgs {}

/// Runs `pipeweave validate`.
pub(crate) async fn run(_args: ValidateArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave validate` is not available in this build yet"
    )))
}
