//! `pipeweave dlq`: the dead-letter queue, which is the runs that died
//! (every attempt failed, or a failure no retry fixes): list them, show
//! one with every attempt, retry one or all of them as new runs, and purge
//! old ones (`/api/dlq…`).

use std::io::IsTerminal as _;

use anyhow::anyhow;
use serde_json::{Value, json};

use crate::cli::{CommandError, exit};
use crate::client::{ApiClient, ClientArgs, print_json, segment};
use crate::commands::status::error_text;
use crate::ui::{self, Table};

const DLQ_EXAMPLES: &str = "\
Examples:
  # Dead runs not retried yet, latest death first
  pipeweave dlq list
  pipeweave dlq list --task hello --since 2026-11-01T00:00:00Z

  # One with its input, whole error and every attempt
  pipeweave dlq show trun_019ac2a1f3e27c55a1b2c3d4e5f60718

  # Retry it as a new run on the task's current code (or its own code)
  pipeweave dlq retry trun_019ac2a1f3e27c55a1b2c3d4e5f60718
  pipeweave dlq retry trun_019ac2a1f3e27c55a1b2c3d4e5f60718 --pin-code-hash

  # Retry every dead task run of a pipeline's runs (each resumes its run)
  pipeweave dlq retry-all --pipeline pdf-processor

  # Delete dead runs that died more than 7 days ago
  pipeweave dlq purge --older-than 7d --yes

Entries are named by their run id (trun_…) or their DLQ id (dlq_…).

Exit codes:
  0  done
  2  usage error (purge without --yes and no terminal to ask on)
  4  the orchestrator cannot be reached
  5  no dead run has that id (it never died, or was purged)
  6  it was already retried";

/// Inspect and repair the dead-letter queue.
#[derive(Debug, clap::Args)]
#[command(after_help = DLQ_EXAMPLES)]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,

    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// List dead runs not retried yet, latest death first.
    #[command(after_help = DLQ_EXAMPLES)]
    List {
        /// Only dead runs of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only dead task runs of this pipeline's runs.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only runs that died at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// How many, 1 to 1000.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
    },
    /// Show one dead run with its input, error and every attempt.
    #[command(after_help = DLQ_EXAMPLES)]
    Show {
        /// The run (`trun_…`) or DLQ entry (`dlq_…`).
        id: String,
    },
    /// Enqueue a dead run again as a new run.
    #[command(after_help = DLQ_EXAMPLES)]
    Retry {
        /// The run (`trun_…`) or DLQ entry (`dlq_…`).
        id: String,
        /// Run the code of the failed attempt instead of the task's current
        /// code (WebAssembly tasks only).
        #[arg(long)]
        pin_code_hash: bool,
    },
    /// Enqueue every dead run not retried yet again, on current code.
    #[command(after_help = DLQ_EXAMPLES)]
    RetryAll {
        /// Only dead task runs of this pipeline's runs; each resumes its
        /// pipeline run.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only dead runs of this task.
        #[arg(long)]
        task: Option<String>,
    },
    /// Delete dead runs that died longer ago than a duration.
    #[command(after_help = DLQ_EXAMPLES)]
    Purge {
        /// How long ago they died: `7d`, `12h`, `30m`, `2w`…
        #[arg(long, default_value = "7d")]
        older_than: String,
        /// Do not ask for confirmation (needed when stdin is not a
        /// terminal).
        #[arg(long, short)]
        yes: bool,
    },
}

/// Runs a `dlq` subcommand.
pub(crate) async fn run(args: DlqArgs) -> Result<u8, CommandError> {
    let api = ApiClient::new(&args.client)?;
    let json = args.client.json;
    match args.command {
        DlqCommand::List {
            task,
            pipeline,
            since,
            limit,
        } => {
            let mut path = format!("/api/dlq?limit={limit}");
            if let Some(task) = task {
                path.push_str(&format!("&taskId={}", segment(&task)));
            }
            if let Some(pipeline) = pipeline {
                path.push_str(&format!("&pipelineId={}", segment(&pipeline)));
            }
            if let Some(since) = since {
                path.push_str(&format!("&since={}", segment(&since)));
            }
            let page = api.get(&path).await?;
            if json {
                print_json(&page)?;
            } else {
                print_list(&page);
            }
        }
        DlqCommand::Show { id } => {
            let entry = api.get(&format!("/api/dlq/{}", segment(&id))).await?;
            if json {
                print_json(&entry)?;
            } else {
                print_entry(&entry);
            }
        }
        DlqCommand::Retry { id, pin_code_hash } => {
            let answer = api
                .post(
                    &format!("/api/dlq/{}/retry", segment(&id)),
                    Some(&json!({ "pinCodeHash": pin_code_hash })),
                )
                .await?;
            if json {
                print_json(&answer)?;
            } else {
                let code = if answer["codeHashPinned"] == true {
                    "the failed attempt's code"
                } else {
                    "current code"
                };
                ui::ok(
                    "retried",
                    format!(
                        "{id} as {} (code v{}, {code})",
                        ui::cell(&answer["newRunId"]),
                        ui::cell(&answer["codeVersion"])
                    ),
                );
                println!("{}", ui::cell(&answer["newRunId"]));
            }
        }
        DlqCommand::RetryAll { pipeline, task } => {
            let mut body = json!({});
            if let Some(pipeline) = &pipeline {
                body["pipelineId"] = json!(pipeline);
            }
            if let Some(task) = &task {
                body["taskId"] = json!(task);
            }
            let answer = api.post("/api/dlq/retry-all", Some(&body)).await?;
            if json {
                print_json(&answer)?;
            } else {
                let retried = answer["retried"].as_u64().unwrap_or(0);
                let scope = match (&pipeline, &task) {
                    (Some(p), Some(t)) => format!(" of task {t} in pipeline {p}"),
                    (Some(p), None) => format!(" of pipeline {p}"),
                    (None, Some(t)) => format!(" of task {t}"),
                    (None, None) => String::new(),
                };
                ui::ok(
                    "retried",
                    format!(
                        "{retried} dead run{}{scope}",
                        if retried == 1 { "" } else { "s" }
                    ),
                );
            }
        }
        DlqCommand::Purge { older_than, yes } => {
            if !yes && !confirm(&older_than).await? {
                ui::step("purge", "nothing deleted");
                return Ok(exit::SUCCESS);
            }
            let answer = api
                .post("/api/dlq/purge", Some(&json!({ "olderThan": older_than })))
                .await?;
            if json {
                print_json(&answer)?;
            } else {
                let purged = answer["purged"].as_i64().unwrap_or(0);
                ui::ok(
                    "purged",
                    format!(
                        "{purged} dead run{} that died before {} UTC",
                        if purged == 1 { "" } else { "s" },
                        ui::time(&answer["before"])
                    ),
                );
            }
        }
    }
    Ok(exit::SUCCESS)
}

/// Asks on the terminal whether to purge; without a terminal, refuses and
/// says to pass `--yes`.
async fn confirm(older_than: &str) -> Result<bool, CommandError> {
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::usage(anyhow!(
            "dlq purge deletes dead runs for good; pass --yes to confirm (stdin is not a terminal to ask on)"
        )));
    }
    eprint!("Delete every dead run that died more than {older_than} ago? [y/N] ");
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(CommandError::internal)?
    .map_err(CommandError::internal)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

fn print_list(page: &Value) {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("The dead-letter queue is empty.");
        return;
    }
    let mut table = Table::new(&[
        "RUN",
        "TASK",
        "PIPELINE RUN",
        "ATTEMPTS",
        "DIED (UTC)",
        "ERROR",
    ]);
    for entry in &items {
        let mut error = ui::cell(&entry["error"]);
        if let Some(code) = entry["errorCode"].as_str() {
            error.push_str(&format!(" [{code}]"));
        }
        table.row(vec![
            ui::cell(&entry["taskRunId"]),
            ui::cell(&entry["taskId"]),
            ui::dim(ui::cell(&entry["pipelineRunId"])),
            ui::cell(&entry["attempts"]),
            ui::time(&entry["failedAt"]),
            error,
        ]);
    }
    table.print();
    let total = page["total"].as_i64().unwrap_or(0);
    if total > items.len() as i64 {
        println!(
            "{}",
            ui::dim(format!("{} of {total}; --limit shows more", items.len()))
        );
    }
}

fn print_entry(entry: &Value) {
    println!(
        "{}  {}  {}",
        console::style(ui::cell(&entry["taskRunId"]))
            .for_stdout()
            .bold(),
        ui::cell(&entry["taskId"]),
        ui::state("dead")
    );
    let line = |label: &str, value: String| println!("  {label:<14}{value}");
    line("DLQ id", ui::cell(&entry["id"]));
    if !entry["pipelineRunId"].is_null() {
        line("pipeline run", ui::cell(&entry["pipelineRunId"]));
    }
    line("created", format!("{} UTC", ui::time(&entry["createdAt"])));
    line("died", format!("{} UTC", ui::time(&entry["failedAt"])));
    line("attempts", ui::cell(&entry["attempts"]));
    if let Some(hash) = entry["codeHash"].as_str() {
        line(
            "code",
            format!("v{} {hash}", ui::cell(&entry["codeVersion"])),
        );
    }
    if entry["errorDetail"].is_object() {
        line("error", error_text(&entry["errorDetail"]));
    }
    match (entry.get("input"), entry["inputPath"].as_str()) {
        (_, Some(path)) => line("input", format!("stored at {path}")),
        (Some(input), None) => line("input", input.to_string()),
        (None, None) => {}
    }
    if !entry["retriedAs"].is_null() {
        line("retried as", ui::cell(&entry["retriedAs"]));
    }
    let attempts = entry["attemptHistory"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !attempts.is_empty() {
        println!();
        let table = super::status::attempts_table(&attempts, true);
        table.print();
    }
    let id = ui::cell(&entry["taskRunId"]);
    println!();
    println!(
        "{}",
        ui::dim(format!(
            "Logs: pipeweave logs {id}    Retry: pipeweave dlq retry {id}"
        ))
    );
}
