//! `pipeweave db migrate`: applies the schema migrations to a database.

use anyhow::Context as _;

use crate::cli::{CommandError, exit};

/// `pipeweave db …`.
#[derive(Debug, clap::Args)]
pub(crate) struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DbCommand {
    /// Apply the migrations this database lacks (the orchestrator also does
    /// this at start-up).
    Migrate {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

/// Runs a `db` subcommand.
pub(crate) async fn run(args: DbArgs) -> Result<u8, CommandError> {
    match args.command {
        DbCommand::Migrate { database_url } => {
            let pool = pipeweave_orchestrator::connect(&database_url)
                .await
                .context("cannot connect to the database")
                .map_err(CommandError::internal)?;
            pipeweave_orchestrator::storage::migrate(&pool)
                .await
                .map_err(CommandError::internal)?;
            println!("migrations applied");
            Ok(exit::SUCCESS)
        }
    }
}
