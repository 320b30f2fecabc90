//! `pipeweave dry-run`: validates a pipeline against the tasks and hosts
//! registered now and prints its execution plan, running nothing (`POST
//! /api/pipelines/{id}/dry-run`).

use serde_json::{Value, json};

use crate::cli::{CommandError, exit};
use crate::client::{ApiClient, ClientArgs, print_json, segment};
use crate::parse;

const DRY_RUN_EXAMPLES: &str = "\
Examples:
  # The plan a run of pdf-processor would follow now
  pipeweave dry-run pdf-processor

  # Also check an input (whether it would travel inline or be stored)
  pipeweave dry-run pdf-processor -i @input.json

  # For scripts: the report with the plan, problems, warnings and structure
  pipeweave dry-run pdf-processor --json | jq .valid

Output (the spec's):
  ✓ Pipeline 'pdf-processor' validated

  Execution plan:
    1. download (entry)
    2. extract-tables, extract-text (parallel)
    3. summarize (join, waits for: extract-tables, extract-text)
    4. archive, notify (parallel, end)

Exit codes:
  0  the pipeline can run now
  1  it cannot: the problems are listed (a task missing, no host for a task, ...)
  4  the orchestrator cannot be reached
  5  no pipeline has that id";

/// Show a pipeline's execution plan without running it.
#[derive(Debug, clap::Args)]
#[command(after_help = DRY_RUN_EXAMPLES)]
pub(crate) struct DryRunArgs {
    /// The pipeline's id.
    pipeline: String,

    /// The input a run would get: JSON text, or `@file.json`.
    #[arg(short, long)]
    input: Option<String>,

    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `pipeweave dry-run`.
pub(crate) async fn run(args: DryRunArgs) -> Result<u8, CommandError> {
    let body = match &args.input {
        Some(text) => {
            json!({ "input": parse::json(text, "--input").map_err(CommandError::usage)? })
        }
        None => json!({}),
    };
    let api = ApiClient::new(&args.client)?;
    let report = api
        .post(
            &format!("/api/pipelines/{}/dry-run", segment(&args.pipeline)),
            Some(&body),
        )
        .await?;
    let valid = report["valid"] == true;
    if args.client.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(if valid {
        exit::SUCCESS
    } else {
        exit::TASK_FAILED
    })
}

fn print_report(report: &Value) {
    let text = report["text"].as_str().unwrap_or_default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('✓') {
            println!("{}{rest}", console::style("✓").for_stdout().green());
        } else if let Some(rest) = line.strip_prefix('✗') {
            println!("{}{rest}", console::style("✗").for_stdout().red());
        } else if matches!(line, "Execution plan:" | "Warnings:" | "Problems:") {
            println!("{}", console::style(line).for_stdout().bold());
        } else {
            println!("{line}");
        }
    }
    if report["inputStored"] == true {
        println!();
        println!(
            "Note: the input is over 64 KiB of JSON; a run stores it and tasks read it by reference."
        );
    }
}
