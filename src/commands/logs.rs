//! `pipeweave logs`: show a run's logs. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave logs`.
#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {}

/// Runs `pipeweave logs`.
pub(crate) async fn run(_args: LogsArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave logs` is not available in this build yet"
    )))
}
