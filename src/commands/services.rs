//! `pipeweave services`: list registered services. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave services`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServicesArgs {}

/// Runs `pipeweave services`.
pub(crate) async fn run(_args: ServicesArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave services` is not available in this build yet"
    )))
}
