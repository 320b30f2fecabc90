//! `pipeweave init`: scaffold a task crate. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave init`.
#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {}

/// Runs `pipeweave init`.
pub(crate) async fn run(_args: InitArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave init` is not available in this build yet"
    )))
}
