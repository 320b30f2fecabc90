//! `pipeweave deploy`: deploy a project. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave deploy`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeployArgs {}

/// Runs `pipeweave deploy`.
pub(crate) async fn run(_args: DeployArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave deploy` is not available in this build yet"
    )))
}
