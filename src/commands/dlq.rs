//! `pipeweave dlq`: manage the dead-letter queue. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave dlq`.
#[derive(Debug, clap::Args)]
pub(crate) struct DlqArgs {}

/// Runs `pipeweave dlq`.
pub(crate) async fn run(_args: DlqArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave dlq` is not available in this build yet"
    )))
}
