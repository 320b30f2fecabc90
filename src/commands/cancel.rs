//! `pipeweave cancel`: cancels a task run (`POST
//! /api/task-runs/{id}/cancel`) or a pipeline run with every task run of it
//! that has not ended (`POST /api/runs/{id}/cancel`). A running attempt is
//! interrupted on its host at once.

use serde_json::json;

use crate::cli::{CommandError, exit};
use crate::client::{ApiClient, ClientArgs, check_run_id, is_pipeline_run, print_json};
use crate::ui;

const CANCEL_EXAMPLES: &str = "\
Examples:
  # Cancel a queued, waiting or running task run
  pipeweave cancel trun_019ac2a1f3e27c55a1b2c3d4e5f60718

  # Cancel a pipeline run and every task run of it that has not ended
  pipeweave cancel prun_019ac2a1f3e27c55a1b2c3d4e5f60718 --reason 'wrong input'

Exit codes:
  0  cancelled
  2  not a run id
  4  the orchestrator cannot be reached
  5  no run has that id
  6  the run has already ended (its state is printed)";

/// Cancel a task run or a pipeline run.
#[derive(Debug, clap::Args)]
#[command(after_help = CANCEL_EXAMPLES)]
pub(crate) struct CancelArgs {
    /// A task run (`trun_…`) or pipeline run (`prun_…`).
    run: String,

    /// Why, kept with the run (at most 500 characters).
    #[arg(long)]
    reason: Option<String>,

    /// Who is cancelling, kept with the run. Default: `$USER via
    /// pipeweave cancel`.
    #[arg(long)]
    by: Option<String>,

    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `pipeweave cancel`.
pub(crate) async fn run(args: CancelArgs) -> Result<u8, CommandError> {
    check_run_id(&args.run)?;
    let by = args
        .by
        .clone()
        .unwrap_or_else(|| match std::env::var("USER") {
            Ok(user) if !user.is_empty() => format!("{user} via pipeweave cancel"),
            _ => "pipeweave cancel".to_owned(),
        });
    let mut body = json!({ "cancelledBy": by });
    if let Some(reason) = &args.reason {
        body["reason"] = json!(reason);
    }
    let api = ApiClient::new(&args.client)?;
    let run_id = &args.run;
    if is_pipeline_run(run_id) {
        let answer = api
            .post(&format!("/api/runs/{run_id}/cancel"), Some(&body))
            .await?;
        if args.client.json {
            return print_json(&answer).map(|()| exit::SUCCESS);
        }
        let task_runs = answer["cancelledTaskRuns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ui::ok(
            "cancelled",
            format!(
                "{run_id} and {} task run{} that had not ended",
                task_runs.len(),
                if task_runs.len() == 1 { "" } else { "s" }
            ),
        );
        for task_run in &task_runs {
            ui::step(
                "",
                format!(
                    "{} (was {})",
                    ui::cell(&task_run["runId"]),
                    ui::cell(&task_run["previousStatus"])
                ),
            );
        }
    } else {
        let answer = api
            .post(&format!("/api/task-runs/{run_id}/cancel"), Some(&body))
            .await?;
        if args.client.json {
            return print_json(&answer).map(|()| exit::SUCCESS);
        }
        let previous = ui::cell(&answer["previousStatus"]);
        let interrupted = if previous == "running" {
            "; its running attempt is being interrupted"
        } else {
            ""
        };
        ui::ok(
            "cancelled",
            format!("{run_id} (was {previous}){interrupted}"),
        );
    }
    Ok(exit::SUCCESS)
}
