//! `pipeweave db`: the database's schema. `init` creates it on an empty
//! database, `migrate` applies the migrations it lacks (the orchestrator
//! also does this at start-up), `status` shows applied and pending
//! migrations and how many runs it holds by state, and `reset --yes`
//! drops everything PipeWeave owns and migrates again.

use anyhow::{Context as _, anyhow};
use pipeweave_orchestrator::storage::schema;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::cli::{CommandError, exit};
use crate::client::print_json;
use crate::ui::{self, Table};

const DB_EXAMPLES: &str = "\
Examples:
  pipeweave db init --url postgres://user:pass@host/db    # create the schema on an empty database
  pipeweave db migrate --url $DATABASE_URL                # apply the migrations it lacks
  pipeweave db status                                     # (DATABASE_URL from the environment)
  pipeweave db status --json | jq .pending
  pipeweave db reset --url $DATABASE_URL --yes            # drop all PipeWeave data, migrate again

Exit codes:
  0  done
  2  usage error (reset without --yes)
  3  a migration failed
  4  the database cannot be reached
  6  init on a database that already has PipeWeave's schema";

/// Database administration: create, migrate, inspect or reset the schema.
#[derive(Debug, clap::Args)]
#[command(after_help = DB_EXAMPLES)]
pub(crate) struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

/// Where the database is.
#[derive(Debug, clap::Args)]
struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long = "url",
        visible_alias = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    url: String,
}

#[derive(Debug, clap::Subcommand)]
enum DbCommand {
    /// Create PipeWeave's schema on a database that does not have it.
    #[command(after_help = DB_EXAMPLES)]
    Init {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Apply the migrations this database lacks (the orchestrator also does
    /// this at start-up).
    #[command(after_help = DB_EXAMPLES)]
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Show applied and pending migrations and how many runs the database
    /// holds by state.
    #[command(after_help = DB_EXAMPLES)]
    Status {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Drop every table, type and function PipeWeave owns (all runs,
    /// pipelines, services and schedules) and migrate again.
    #[command(after_help = DB_EXAMPLES)]
    Reset {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Confirm: reset deletes all of PipeWeave's data.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs a `db` subcommand.
pub(crate) async fn run(args: DbArgs) -> Result<u8, CommandError> {
    match args.command {
        DbCommand::Init { database } => {
            let pool = connect(&database).await?;
            let existing = schema::existing_tables(&pool)
                .await
                .map_err(CommandError::internal)?;
            if !existing.is_empty() {
                let migrations = migrations(&pool).await?;
                let applied = migrations.iter().filter(|m| m.applied_at.is_some()).count();
                return Err(CommandError {
                    code: exit::CONFLICT,
                    error: anyhow!(
                        "{} already has PipeWeave's schema ({applied} of {} migrations applied): \
                         run `pipeweave db migrate` to apply any pending ones, or `pipeweave db reset --yes` to start over",
                        redacted(&database.url),
                        migrations.len()
                    ),
                });
            }
            let applied = migrate(&pool).await?;
            ui::ok(
                "initialised",
                format!("{} ({applied} migrations applied)", redacted(&database.url)),
            );
        }
        DbCommand::Migrate { database } => {
            let pool = connect(&database).await?;
            let applied = migrate(&pool).await?;
            let latest = migrations(&pool)
                .await?
                .iter()
                .filter(|m| m.applied_at.is_some())
                .map(|m| m.version)
                .max()
                .unwrap_or(0);
            ui::ok(
                "migrated",
                if applied == 0 {
                    format!("nothing to apply; the schema is at version {latest}")
                } else {
                    format!("{applied} migrations applied; the schema is at version {latest}")
                },
            );
        }
        DbCommand::Status { database, json } => {
            let pool = connect(&database).await?;
            status(&pool, &database, json).await?;
        }
        DbCommand::Reset { database, yes } => {
            if !yes {
                return Err(CommandError::usage(anyhow!(
                    "db reset drops every table PipeWeave owns in {}, with all its runs, pipelines, services \
                     and schedules; nothing was changed. Pass --yes to confirm",
                    redacted(&database.url)
                )));
            }
            let pool = connect(&database).await?;
            let spinner = ui::spinner("dropping PipeWeave's tables");
            let dropped = schema::drop_all(&pool).await;
            spinner.finish_and_clear();
            dropped
                .context("cannot drop PipeWeave's tables")
                .map_err(CommandError::internal)?;
            let applied = migrate(&pool).await?;
            ui::ok(
                "reset",
                format!(
                    "{}: dropped and recreated ({applied} migrations applied)",
                    redacted(&database.url)
                ),
            );
        }
    }
    Ok(exit::SUCCESS)
}

/// How long `db` waits for the database to accept a connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects, or says the database cannot be reached (exit 4).
async fn connect(database: &DatabaseArgs) -> Result<PgPool, CommandError> {
    let spinner = ui::spinner(format!("connecting to {}", redacted(&database.url)));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect(&database.url)
        .await;
    spinner.finish_and_clear();
    pool.map_err(|error| CommandError {
        code: exit::UNREACHABLE,
        error: anyhow::Error::new(error).context(format!(
            "cannot connect to the database at {}: is PostgreSQL running there, and is the URL right?",
            redacted(&database.url)
        )),
    })
}

/// Applies pending migrations under a spinner; returns how many.
async fn migrate(pool: &PgPool) -> Result<usize, CommandError> {
    let before = migrations(pool).await?;
    let pending = before.iter().filter(|m| m.applied_at.is_none()).count();
    let spinner = ui::spinner(format!("applying {pending} migrations"));
    let migrated = pipeweave_orchestrator::storage::migrate(pool).await;
    spinner.finish_and_clear();
    migrated
        .context("the migrations could not be applied")
        .map_err(CommandError::internal)?;
    Ok(pending)
}

async fn migrations(pool: &PgPool) -> Result<Vec<schema::Migration>, CommandError> {
    schema::migrations(pool)
        .await
        .context("cannot read the applied migrations")
        .map_err(CommandError::internal)
}

/// `db status`.
async fn status(pool: &PgPool, database: &DatabaseArgs, json: bool) -> Result<(), CommandError> {
    let migrations = migrations(pool).await?;
    let pending = migrations.iter().filter(|m| m.applied_at.is_none()).count();
    let initialised = migrations.iter().any(|m| m.applied_at.is_some());
    let (task_runs, pipeline_runs) = if initialised && pending == 0 {
        let counts = pipeweave_orchestrator::storage::runs::counts(pool, chrono::Utc::now())
            .await
            .context("cannot count runs")
            .map_err(CommandError::internal)?;
        let task_runs = json!({
            "queued": counts.pending + counts.waiting,
            "running": counts.running,
            "awaiting_retry": counts.awaiting_retry,
            "succeeded": counts.succeeded,
            "dead": counts.dead,
            "cancelled": counts.cancelled,
        });
        let mut pipeline_runs = json!({
            "running": 0, "succeeded": 0, "failed": 0, "partial": 0, "cancelled": 0,
        });
        for (state, count) in schema::pipeline_run_counts(pool)
            .await
            .context("cannot count pipeline runs")
            .map_err(CommandError::internal)?
        {
            if let Ok(Value::String(name)) = serde_json::to_value(state) {
                pipeline_runs[name] = json!(count);
            }
        }
        (Some(task_runs), Some(pipeline_runs))
    } else {
        (None, None)
    };
    if json {
        let list: Vec<Value> = migrations
            .iter()
            .map(|m| {
                json!({
                    "version": m.version,
                    "description": m.description,
                    "appliedAt": m.applied_at,
                    "checksumDiffers": m.checksum_differs,
                    "known": m.known,
                })
            })
            .collect();
        return print_json(&json!({
            "migrations": list,
            "applied": migrations.len() - pending,
            "pending": pending,
            "taskRuns": task_runs,
            "pipelineRuns": pipeline_runs,
        }));
    }
    println!("Database {}", redacted(&database.url));
    println!();
    let mut table = Table::new(&["VERSION", "MIGRATION", "APPLIED (UTC)"]);
    for migration in &migrations {
        let applied = match migration.applied_at {
            Some(at) => at.format("%Y-%m-%d %H:%M:%S").to_string(),
            None => ui::notice("pending"),
        };
        let mut description = migration.description.clone();
        if !migration.known {
            description = ui::notice("(applied by a newer PipeWeave)");
        }
        if migration.checksum_differs {
            description.push_str(&format!(
                " {}",
                ui::notice("(changed since it was applied)")
            ));
        }
        table.row(vec![migration.version.to_string(), description, applied]);
    }
    table.print();
    println!();
    if !initialised {
        println!("Not initialised: create the schema with `pipeweave db init`.");
        return Ok(());
    }
    if pending > 0 {
        println!(
            "{pending} pending: apply them with `pipeweave db migrate` (an orchestrator also applies them at start-up)."
        );
        return Ok(());
    }
    println!("Up to date.");
    let task_states = [
        "queued",
        "running",
        "awaiting_retry",
        "succeeded",
        "dead",
        "cancelled",
    ];
    let pipeline_states = ["running", "succeeded", "failed", "partial", "cancelled"];
    for (title, counts, states) in [
        ("Task runs", &task_runs, &task_states[..]),
        ("Pipeline runs", &pipeline_runs, &pipeline_states[..]),
    ] {
        let Some(counts) = counts else {
            continue;
        };
        let parts: Vec<String> = states
            .iter()
            .map(|state| format!("{} {}", ui::cell(&counts[*state]), ui::state(state)))
            .collect();
        println!("{title:<15}{}", parts.join(", "));
    }
    Ok(())
}

/// The URL with its password replaced, for messages.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_are_left_out_of_messages() {
        assert_eq!(
            redacted("postgres://ada:secret@db:5432/pw"),
            "postgres://ada:***@db:5432/pw"
        );
        assert_eq!(redacted("postgres://db/pw"), "postgres://db/pw");
    }
}
