//! `pipeweave status`: a pipeline run as a tree of its task runs (`GET
//! /api/runs/{id}`), one task run in full (`GET /api/task-runs/{id}`), or,
//! without an id, the latest runs (`GET /api/runs`, or with `--tasks`
//! `GET /api/queue/items`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::cli::{CommandError, exit};
use crate::client::{ApiClient, ClientArgs, check_run_id, is_pipeline_run, print_json, segment};
use crate::ui::{self, Table};

const STATUS_EXAMPLES: &str = "\
Examples:
  # The latest pipeline runs
  pipeweave status

  # The latest task runs that are dead or waiting for a retry
  pipeweave status --tasks --state dead,awaiting_retry

  # A pipeline run as a tree: each task run's state, attempts, timing and
  # code version, and which tasks' code changed since the trigger
  pipeweave status prun_019ac2a1f3e27c55a1b2c3d4e5f60718

  # One task run: input, output, error and every attempt
  pipeweave status trun_019ac2a1f3e27c55a1b2c3d4e5f60718

  # For scripts
  pipeweave status prun_… --json | jq '.taskRuns[] | {taskId, status}'

Exit codes:
  0  shown
  2  not a run id
  4  the orchestrator cannot be reached
  5  no run has that id";

/// Show a pipeline run, a task run, or the latest runs.
#[derive(Debug, clap::Args)]
#[command(after_help = STATUS_EXAMPLES)]
pub(crate) struct StatusArgs {
    /// A pipeline run (`prun_…`) or task run (`trun_…`); without one, the
    /// latest runs.
    run: Option<String>,

    /// Without a run id: list task runs instead of pipeline runs.
    #[arg(long, conflicts_with = "run")]
    tasks: bool,

    /// Without a run id: only runs of this pipeline (with `--tasks`: of
    /// this task).
    #[arg(long, conflicts_with = "run")]
    pipeline: Option<String>,

    /// Without a run id: only runs in these states, comma-separated
    /// (pipeline runs: running, succeeded, failed, partial, cancelled; task
    /// runs: queued, running, awaiting_retry, succeeded, dead, cancelled).
    #[arg(long, conflicts_with = "run")]
    state: Option<String>,

    /// Without a run id: how many runs, 1 to 1000.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,

    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `pipeweave status`.
pub(crate) async fn run(args: StatusArgs) -> Result<u8, CommandError> {
    let api = ApiClient::new(&args.client)?;
    let Some(run_id) = &args.run else {
        return list(&api, &args).await;
    };
    check_run_id(run_id)?;
    if is_pipeline_run(run_id) {
        let run = api.get(&format!("/api/runs/{run_id}")).await?;
        if args.client.json {
            print_json(&run)?;
        } else {
            print!("{}", pipeline_run_text(&run));
        }
    } else {
        let run = api.get(&format!("/api/task-runs/{run_id}")).await?;
        if args.client.json {
            print_json(&run)?;
        } else {
            print!("{}", task_run_text(&run));
        }
    }
    Ok(exit::SUCCESS)
}

/// The latest runs.
async fn list(api: &ApiClient, args: &StatusArgs) -> Result<u8, CommandError> {
    let mut query = format!("?limit={}", args.limit);
    if let Some(state) = &args.state {
        query.push_str(&format!("&status={}", segment(state)));
    }
    let path = if args.tasks {
        if let Some(task) = &args.pipeline {
            query.push_str(&format!("&taskId={}", segment(task)));
        }
        format!("/api/queue/items{query}")
    } else {
        if let Some(pipeline) = &args.pipeline {
            query.push_str(&format!("&pipelineId={}", segment(pipeline)));
        }
        format!("/api/runs{query}")
    };
    let page = api.get(&path).await?;
    if args.client.json {
        print_json(&page)?;
        return Ok(exit::SUCCESS);
    }
    let items = page["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!(
            "No {} runs{}. Start one with `pipeweave trigger`.",
            if args.tasks { "task" } else { "pipeline" },
            if args.state.is_some() || args.pipeline.is_some() {
                " match"
            } else {
                " yet"
            }
        );
        return Ok(exit::SUCCESS);
    }
    if args.tasks {
        let mut table = Table::new(&["RUN", "TASK", "STATE", "ATTEMPT", "CREATED (UTC)", "TOOK"]);
        for run in &items {
            table.row(vec![
                ui::cell(&run["runId"]),
                ui::cell(&run["taskId"]),
                ui::state(run["status"].as_str().unwrap_or("?")),
                ui::cell(&run["attempt"]),
                ui::time(&run["createdAt"]),
                took(run),
            ]);
        }
        table.print();
    } else {
        let mut table = Table::new(&["RUN", "PIPELINE", "STATE", "CREATED (UTC)", "TOOK"]);
        for run in &items {
            table.row(vec![
                ui::cell(&run["pipelineRunId"]),
                format!(
                    "{} v{}",
                    ui::cell(&run["pipelineId"]),
                    ui::cell(&run["pipelineVersion"])
                ),
                ui::state(run["status"].as_str().unwrap_or("?")),
                ui::time(&run["createdAt"]),
                ui::elapsed(&run["createdAt"], &run["finishedAt"]),
            ]);
        }
        table.print();
    }
    let total = page["total"].as_i64().unwrap_or(0);
    if total > items.len() as i64 {
        println!(
            "{}",
            ui::dim(format!("{} of {total}; --limit shows more", items.len()))
        );
    }
    Ok(exit::SUCCESS)
}

/// How long a task run's last attempt took (so far).
fn took(run: &Value) -> String {
    match run["status"].as_str() {
        Some("queued") => "-".to_owned(),
        _ => ui::elapsed(&run["startedAt"], &run["finishedAt"]),
    }
}

/// A labelled line of a detail view.
fn field(text: &mut String, label: &str, value: impl std::fmt::Display) {
    text.push_str(&format!("  {label:<14}{value}\n"));
}

/// A pipeline run: a header, then its task runs as a tree along each
/// task's `allowedNext` in the snapshot.
fn pipeline_run_text(run: &Value) -> String {
    let mut text = String::new();
    let status = run["status"].as_str().unwrap_or("?");
    text.push_str(&format!(
        "{}  {} v{}  {}\n",
        console::style(ui::cell(&run["pipelineRunId"]))
            .for_stdout()
            .bold(),
        ui::cell(&run["pipelineId"]),
        ui::cell(&run["pipelineVersion"]),
        ui::state(status)
    ));
    field(&mut text, "failure mode", ui::cell(&run["failureMode"]));
    field(
        &mut text,
        "triggered",
        format!("{} UTC", ui::time(&run["createdAt"])),
    );
    if !run["finishedAt"].is_null() {
        field(
            &mut text,
            "ended",
            format!(
                "{} UTC, after {}",
                ui::time(&run["finishedAt"]),
                ui::elapsed(&run["createdAt"], &run["finishedAt"])
            ),
        );
    }
    let changes: Vec<&str> = run["codeChanges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !changes.is_empty() {
        field(
            &mut text,
            "code changed",
            ui::notice(format!(
                "{} (registered code differs from the snapshot taken at the trigger)",
                changes.join(", ")
            )),
        );
    }
    text.push('\n');

    let snapshot = &run["structureSnapshot"];
    let mut by_task: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for task_run in run["taskRuns"].as_array().into_iter().flatten() {
        if let Some(task) = task_run["taskId"].as_str() {
            by_task.entry(task).or_default().push(task_run);
        }
    }
    let mut table = Table::new(&[
        "TASK",
        "STATE",
        "ATTEMPTS",
        "STARTED (UTC)",
        "TOOK",
        "CODE",
        "RUN",
    ]);
    let mut shown = BTreeSet::new();
    let entry: Vec<&str> = snapshot["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for task in &entry {
        tree_rows(&mut table, snapshot, &by_task, task, "", "", &mut shown);
    }
    // Task runs the snapshot does not reach (it always should).
    for (task, runs) in &by_task {
        if !shown.contains(*task) {
            for task_run in runs {
                table.row(task_run_row(task, task_run));
            }
        }
    }
    text.push_str(&table.render(""));
    text
}

/// Adds `task` and, below it, the tasks it may run next; a task reached
/// again (a join) is shown in full once and then as a reference.
fn tree_rows<'a>(
    table: &mut Table,
    snapshot: &'a Value,
    by_task: &BTreeMap<&str, Vec<&Value>>,
    task: &'a str,
    prefix: &str,
    child_prefix: &str,
    shown: &mut BTreeSet<&'a str>,
) {
    let label = format!("{prefix}{task}");
    if !shown.insert(task) {
        // A join, reached again: its run is on the row above.
        table.row(vec![label, ui::dim("↑ above")]);
        return;
    }
    match by_task.get(task) {
        Some(runs) => {
            for task_run in runs {
                table.row(task_run_row(&label, task_run));
            }
        }
        None => table.row(vec![label, ui::dim("not run")]),
    }
    let next: Vec<&str> = snapshot["tasks"][task]["allowedNext"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for (index, child) in next.iter().enumerate() {
        let last = index + 1 == next.len();
        let (branch, rest) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        tree_rows(
            table,
            snapshot,
            by_task,
            child,
            &format!("{child_prefix}{branch}"),
            &format!("{child_prefix}{rest}"),
            shown,
        );
    }
}

/// One task run's row of the tree.
fn task_run_row(label: &str, task_run: &Value) -> Vec<String> {
    let mut code = match (
        task_run["codeVersion"].as_i64(),
        task_run["codeHash"].as_str(),
    ) {
        (Some(version), Some(hash)) => format!("v{version} {}", ui::dim(ui::short_hash(hash))),
        _ => match task_run["snapshotCodeHash"].as_str() {
            Some(hash) => ui::dim(ui::short_hash(hash)),
            None => "-".to_owned(),
        },
    };
    if task_run["codeChanged"] == true {
        code.push_str(&format!(" {}", ui::notice("(code changed since trigger)")));
    }
    vec![
        label.to_owned(),
        ui::state(task_run["status"].as_str().unwrap_or("?")),
        ui::cell(&task_run["attempt"]),
        ui::time(&task_run["startedAt"]),
        took(task_run),
        code,
        ui::dim(ui::cell(&task_run["runId"])),
    ]
}

/// One task run in full.
fn task_run_text(run: &Value) -> String {
    let mut text = String::new();
    text.push_str(&format!(
        "{}  {}  {}\n",
        console::style(ui::cell(&run["runId"])).for_stdout().bold(),
        ui::cell(&run["taskId"]),
        ui::state(run["status"].as_str().unwrap_or("?"))
    ));
    if !run["pipelineRunId"].is_null() {
        field(&mut text, "pipeline run", ui::cell(&run["pipelineRunId"]));
    }
    field(&mut text, "priority", ui::cell(&run["priority"]));
    field(
        &mut text,
        "created",
        format!("{} UTC", ui::time(&run["createdAt"])),
    );
    if run["scheduledAt"] != run["createdAt"] {
        field(
            &mut text,
            "scheduled",
            format!("{} UTC", ui::time(&run["scheduledAt"])),
        );
    }
    if !run["startedAt"].is_null() {
        field(
            &mut text,
            "started",
            format!("{} UTC", ui::time(&run["startedAt"])),
        );
    }
    if !run["finishedAt"].is_null() {
        field(
            &mut text,
            "finished",
            format!(
                "{} UTC (last attempt took {})",
                ui::time(&run["finishedAt"]),
                took(run)
            ),
        );
    }
    field(&mut text, "attempt", ui::cell(&run["attempt"]));
    if !run["target"].is_null() {
        field(&mut text, "ran on", ui::cell(&run["target"]));
    }
    if let Some(hash) = run["codeHash"].as_str() {
        field(
            &mut text,
            "code",
            format!("v{} {hash}", ui::cell(&run["codeVersion"])),
        );
    }
    if let Some(progress) = run["progress"].as_i64() {
        let message = run["progressMessage"]
            .as_str()
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        field(&mut text, "progress", format!("{progress}%{message}"));
    }
    if let Some(by) = run["cancelledBy"].as_str() {
        let reason = run["cancelReason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        field(&mut text, "cancelled by", format!("{by}{reason}"));
    }
    if run["error"].is_object() {
        field(&mut text, "error", error_text(&run["error"]));
    }
    match (run.get("input"), run["inputPath"].as_str()) {
        (_, Some(path)) => field(&mut text, "input", format!("stored at {path}")),
        (Some(input), None) => field(&mut text, "input", compact(input)),
        (None, None) => {}
    }
    match (run.get("output"), run["outputPath"].as_str()) {
        (_, Some(path)) => field(&mut text, "output", format!("stored at {path}")),
        (Some(output), None) => field(&mut text, "output", compact(output)),
        (None, None) => {}
    }
    if let Some(assets) = run["assets"].as_object().filter(|a| !a.is_empty()) {
        let list: Vec<String> = assets
            .iter()
            .map(|(key, asset)| {
                let size = asset["size"]
                    .as_u64()
                    .map(pipeweave_host::human::format_bytes)
                    .unwrap_or_else(|| "?".into());
                format!("{key} ({size})")
            })
            .collect();
        field(&mut text, "assets", list.join(", "));
    }
    let attempts = run["attempts"].as_array().cloned().unwrap_or_default();
    if !attempts.is_empty() {
        text.push('\n');
        let table = attempts_table(&attempts, false);
        text.push_str(&table.render(""));
        let id = ui::cell(&run["runId"]);
        text.push_str(&format!(
            "\n{}\n",
            ui::dim(format!("Logs: pipeweave logs {id}"))
        ));
    }
    text
}

/// An attempt error as one line: message, code and reason.
/// The table of a run's attempts (as `GET /api/task-runs/{id}` and
/// `GET /api/dlq/{id}` list them); with `logs`, a column saying whether
/// each attempt stored a log.
pub(crate) fn attempts_table(attempts: &[Value], logs: bool) -> Table {
    let mut headers = vec![
        "ATTEMPT",
        "OUTCOME",
        "STARTED (UTC)",
        "TOOK",
        "ON",
        "CODE",
        "ERROR",
    ];
    if logs {
        headers.push("LOG");
    }
    let mut table = Table::new(&headers);
    for attempt in attempts {
        let mut row = vec![
            ui::cell(&attempt["attempt"]),
            ui::state(attempt["outcome"].as_str().unwrap_or("?")),
            ui::time(&attempt["startedAt"]),
            ui::elapsed(&attempt["startedAt"], &attempt["finishedAt"]),
            ui::cell(&attempt["target"]),
            format!(
                "v{} {}",
                ui::cell(&attempt["codeVersion"]),
                ui::dim(ui::short_hash(attempt["codeHash"].as_str().unwrap_or("-")))
            ),
            if attempt["error"].is_object() {
                error_text(&attempt["error"])
            } else {
                "-".to_owned()
            },
        ];
        if logs {
            row.push(if attempt["logsPath"].is_string() {
                "yes".into()
            } else {
                "-".into()
            });
        }
        table.row(row);
    }
    table
}

pub(crate) fn error_text(error: &Value) -> String {
    let message = error["message"].as_str().unwrap_or("no message");
    let code = error["code"]
        .as_str()
        .map(|c| format!(" [{c}]"))
        .unwrap_or_default();
    let reason = error["reason"]
        .as_str()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!("{message}{code}{reason}")
}

/// JSON on one line, shortened past 200 characters.
fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 200 {
        let short: String = text.chars().take(200).collect();
        format!("{short}… (--json shows all)")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::pipeline_run_text;

    #[test]
    fn a_pipeline_run_is_a_tree_along_allowed_next_with_each_join_once() {
        let task = |id: &str, status: &str| {
            json!({ "runId": format!("trun_{id}"), "taskId": id, "status": status, "attempt": 1,
                    "codeVersion": 2, "codeHash": "0123456789abcdef0123", "codeChanged": id == "c" })
        };
        let run = json!({
            "pipelineRunId": "prun_1", "pipelineId": "p", "pipelineVersion": 3, "status": "running",
            "failureMode": "fail-fast", "createdAt": "2026-11-26T09:41:47Z",
            "codeChanges": ["c"],
            "structureSnapshot": { "entry": ["a"], "tasks": {
                "a": { "allowedNext": ["b", "c"] },
                "b": { "allowedNext": ["d"] },
                "c": { "allowedNext": ["d"] },
                "d": { "allowedNext": [] },
            }},
            "taskRuns": [task("a", "succeeded"), task("b", "succeeded"), task("c", "running")],
        });
        let text = console::strip_ansi_codes(&pipeline_run_text(&run)).into_owned();
        let rows: Vec<String> = text
            .lines()
            .skip_while(|line| !line.starts_with("TASK"))
            .skip(1)
            .map(|line| {
                line.chars()
                    .take(7)
                    .collect::<String>()
                    .trim_end()
                    .to_owned()
            })
            .collect();
        assert_eq!(rows, ["a", "├─ b", "│  └─ d", "└─ c", "   └─ d"], "{text}");
        assert!(text.contains("│  └─ d  not run"), "{text}");
        assert!(text.contains("   └─ d  ↑ above"), "{text}");
        assert!(
            text.contains("code changed  c (registered code differs"),
            "{text}"
        );
        assert!(
            text.contains("v2 0123456789abcdef (code changed since trigger)"),
            "{text}"
        );
    }
}
