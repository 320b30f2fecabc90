//! `pipeweave test`: run fixture tests. Not built yet; this placeholder keeps the
//! command line complete while it is.

use crate::cli::CommandError;

/// Flags of `pipeweave test`.
#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {}

/// Runs `pipeweave test`.
pub(crate) async fn run(_args: TestArgs) -> Result<u8, CommandError> {
    Err(CommandError::usage(anyhow::anyhow!(
        "`pipeweave test` is not available in this build yet"
    )))
}
