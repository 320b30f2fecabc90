//! `pipeweave orchestrator`: applies the migrations, then serves the API
//! and, in standalone mode, the scheduler, until Ctrl-C or SIGTERM.

use anyhow::Context as _;
use pipeweave_orchestrator::config::Args;
use pipeweave_orchestrator::{Shutdown, storage};

use crate::cli::{CommandError, exit};

/// Starts the orchestrator with the checked configuration.
pub(crate) async fn run(args: Args) -> Result<u8, CommandError> {
    let mut config = args.into_config().map_err(CommandError::usage)?;
    let pool = pipeweave_orchestrator::connect(&config.database_url)
        .await
        .context("cannot connect to the database at DATABASE_URL")
        .map_err(CommandError::internal)?;
    storage::migrate(&pool)
        .await
        .map_err(CommandError::internal)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))
        .map_err(CommandError::usage)?;
    let address = listener.local_addr().map_err(CommandError::internal)?;
    config.bound_to(address);
    let mode = config.mode;
    tracing::warn!(%address, ?mode, "orchestrator started");
    println!("listening on http://{address}");
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        super::stop_signal().await;
        tracing::warn!("stopping");
        trigger.trigger();
    });
    let state = pipeweave_orchestrator::app_state(pool, config)
        .context("cannot open the storage backends (STORAGE_BACKENDS or PIPEWEAVE_STORAGE_DIR)")
        .map_err(CommandError::usage)?;
    pipeweave_orchestrator::serve(listener, state, shutdown)
        .await
        .map_err(CommandError::internal)?;
    tracing::warn!("orchestrator stopped");
    Ok(exit::SUCCESS)
}
