//! `pipeweave trigger`: starts a pipeline run (`POST
//! /api/pipelines/{id}/trigger`) or, with `--task`, one task run through
//! the queue (`POST /api/queue/task`), and with `--wait` follows it to its
//! end, one line per task run state change, and exits with its outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::{Value, json};

use crate::cli::{CommandError, exit};
use crate::client::{ApiClient, ClientArgs, is_pipeline_run, print_json, segment};
use crate::{parse, ui};

const TRIGGER_EXAMPLES: &str = "\
Examples:
  # Start a pipeline run; its id is printed on stdout
  pipeweave trigger pdf-processor -i '{\"pdfUrl\": \"https://example.com/a.pdf\"}'

  # Start it and follow it to the end; the exit code says how it ended
  pipeweave trigger pdf-processor -i @input.json --wait --timeout 10m

  # One task through the queue, at a priority, at most once per key
  pipeweave trigger hello --task -i '{\"name\": \"Ada\"}' --priority 10 --idempotency-key ada-1 --wait

  # A task run that starts in five minutes
  pipeweave trigger hello --task -i '{\"name\": \"Ada\"}' --delay 5m

  # For scripts: the API's answer (with --wait: the ended run)
  RUN=$(pipeweave trigger pdf-processor --json | jq -r .pipelineRunId)

Output: without --wait, the run id on stdout. With --wait, state changes on
stderr and, when the run succeeds, its output on stdout: a task run's output,
or for a pipeline run an object of each task's output by task id.

Exit codes:
  0  triggered (with --wait: the run succeeded)
  1  with --wait: the run ended without succeeding: a task run dead or
     cancelled, a pipeline run failed, partial or cancelled
  2  usage error, or the orchestrator refused the request (bad input)
  4  the orchestrator cannot be reached
  5  no pipeline (or with --task, no task) has that id
  6  the pipeline cannot run with the tasks registered now
  7  --wait reached --timeout; the run goes on";

/// Trigger a pipeline, or with `--task` one task, and optionally wait for
/// the run to end.
#[derive(Debug, clap::Args)]
#[command(after_help = TRIGGER_EXAMPLES)]
pub(crate) struct TriggerArgs {
    /// The pipeline's id (with `--task`: the task's id).
    target: String,

    /// The input: JSON text, or `@file.json`.
    #[arg(short, long, default_value = "{}")]
    input: String,

    /// Run one task through the queue instead of a pipeline.
    #[arg(long)]
    task: bool,

    /// Follow the run until it ends; the exit code says how it ended.
    #[arg(short, long)]
    wait: bool,

    /// With `--wait`: give up after this long (`30s`, `10m`); the run goes
    /// on.
    #[arg(long, value_parser = parse::duration, requires = "wait")]
    timeout: Option<Duration>,

    /// The caller's own data kept with the run: JSON text or `@file.json`.
    #[arg(long)]
    metadata: Option<String>,

    /// Pipelines: what the run does when a task dies, overriding the
    /// pipeline's own mode.
    #[arg(long, value_parser = ["fail-fast", "continue", "partial-merge"], conflicts_with = "task")]
    failure_mode: Option<String>,

    /// With `--task`: the run's priority, 0 to 2147483647, lower first
    /// (default: the task's own).
    #[arg(long, requires = "task", value_parser = clap::value_parser!(u32).range(0..=2_147_483_647))]
    priority: Option<u32>,

    /// With `--task`: while a run of this task with this key is live,
    /// trigger returns that run instead of starting another.
    #[arg(long, requires = "task")]
    idempotency_key: Option<String>,

    /// With `--task`: start no sooner than this long from now (`30s`, `5m`).
    #[arg(long, value_parser = parse::duration, requires = "task", conflicts_with = "at")]
    delay: Option<Duration>,

    /// With `--task`: start no sooner than this time (RFC 3339, such as
    /// 2026-12-01T09:00:00Z).
    #[arg(long, requires = "task")]
    at: Option<String>,

    #[command(flatten)]
    client: ClientArgs,
}

/// How often `--wait` asks for the run.
const POLL_INTERVAL: Duration = Duration::from_millis(300);

/// Runs `pipeweave trigger`.
pub(crate) async fn run(args: TriggerArgs) -> Result<u8, CommandError> {
    let input = parse::json(&args.input, "--input").map_err(CommandError::usage)?;
    let metadata = args
        .metadata
        .as_deref()
        .map(|text| parse::json(text, "--metadata"))
        .transpose()
        .map_err(CommandError::usage)?;
    if let Some(at) = &args.at
        && ui::parse_time(at).is_none()
    {
        return Err(CommandError::usage(anyhow!(
            "--at {at:?} is not an RFC 3339 time; write it like 2026-12-01T09:00:00Z"
        )));
    }
    let api = ApiClient::new(&args.client)?;
    let (answer, run_id) = if args.task {
        let mut body = json!({ "taskId": args.target, "input": input });
        if let Some(metadata) = metadata {
            body["metadata"] = metadata;
        }
        if let Some(priority) = args.priority {
            body["priority"] = json!(priority);
        }
        if let Some(key) = &args.idempotency_key {
            body["idempotencyKey"] = json!(key);
        }
        if let Some(delay) = args.delay {
            body["delayMs"] = json!(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        }
        if let Some(at) = &args.at {
            body["scheduledAt"] = json!(at);
        }
        let answer = api.post("/api/queue/task", Some(&body)).await?;
        let id = answer["runId"].as_str().map(str::to_owned);
        (answer, id)
    } else {
        let mut body = json!({ "input": input });
        if let Some(metadata) = metadata {
            body["metadata"] = metadata;
        }
        if let Some(mode) = &args.failure_mode {
            body["failureMode"] = json!(mode);
        }
        let path = format!("/api/pipelines/{}/trigger", segment(&args.target));
        let answer = api.post(&path, Some(&body)).await?;
        let id = answer["pipelineRunId"].as_str().map(str::to_owned);
        (answer, id)
    };
    let run_id = run_id.ok_or_else(|| {
        CommandError::internal(anyhow!("the orchestrator's answer names no run: {answer}"))
    })?;

    if !args.wait {
        if args.client.json {
            print_json(&answer)?;
        } else {
            announce(&args, &answer, &run_id);
            println!("{run_id}");
        }
        return Ok(exit::SUCCESS);
    }
    if !args.client.json {
        announce(&args, &answer, &run_id);
    }
    follow(&api, &run_id, args.timeout, args.client.json).await
}

/// Waits for a run to end, showing its progress on stderr (unless `json`),
/// then prints the outcome: a summary line and the outputs on stdout, or
/// with `json` the run as the API shows it. Returns the exit code by
/// outcome (`TIMED_OUT` as an error once `timeout` passes). `trigger
/// --wait` and `pipeweave dev --input` both end this way.
pub(crate) async fn follow(
    api: &ApiClient,
    run_id: &str,
    timeout: Option<Duration>,
    json: bool,
) -> Result<u8, CommandError> {
    let ended = match wait(api, run_id, timeout, !json).await? {
        Waited::Ended(run) => run,
        Waited::TimedOut(run) => {
            if json {
                print_json(&run)?;
            }
            return Err(CommandError {
                code: exit::TIMED_OUT,
                error: anyhow!(
                    "{run_id} is still {} after {}; it goes on: follow it with `pipeweave status {run_id}` or `pipeweave logs {run_id} -f`",
                    run["status"].as_str().unwrap_or("running"),
                    timeout
                        .map(pipeweave_host::human::format_duration)
                        .unwrap_or_default()
                ),
            });
        }
    };
    let succeeded = ended["status"] == "succeeded";
    if json {
        print_json(&ended)?;
    } else {
        summarize(&ended, run_id);
        if succeeded {
            print_json(&outputs(&ended, run_id))?;
        }
    }
    Ok(if succeeded {
        exit::SUCCESS
    } else {
        exit::TASK_FAILED
    })
}

/// The step line saying what was triggered.
fn announce(args: &TriggerArgs, answer: &Value, run_id: &str) {
    if answer["duplicate"] == true {
        ui::step(
            "duplicate",
            format!(
                "{run_id} holds idempotency key {:?}; no new run was started",
                args.idempotency_key.as_deref().unwrap_or_default()
            ),
        );
        return;
    }
    if args.task {
        let when = answer["scheduledAt"]
            .as_str()
            .filter(|_| args.delay.is_some() || args.at.is_some())
            .map(|_| format!(", not before {}", ui::time(&answer["scheduledAt"])))
            .unwrap_or_default();
        ui::step(
            "queued",
            format!(
                "{run_id} ({}, priority {}{when})",
                args.target,
                ui::cell(&answer["priority"])
            ),
        );
    } else {
        let entry: Vec<&str> = answer["entryRuns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["taskId"].as_str())
            .collect();
        ui::step(
            "triggered",
            format!(
                "{run_id} ({} v{}, entry: {})",
                args.target,
                ui::cell(&answer["pipelineVersion"]),
                entry.join(", ")
            ),
        );
    }
}

/// How a wait ended.
enum Waited {
    /// The run ended; its final state.
    Ended(Value),
    /// `--timeout` passed; the run as last seen.
    TimedOut(Value),
}

/// Whether a task run's state is final.
pub(crate) fn task_run_ended(status: &str) -> bool {
    matches!(status, "succeeded" | "dead" | "cancelled")
}

/// Whether a run (task or pipeline) as the API shows it has ended.
pub(crate) fn run_ended(run: &Value, pipeline: bool) -> bool {
    let status = run["status"].as_str().unwrap_or("running");
    if pipeline {
        status != "running"
    } else {
        task_run_ended(status)
    }
}

/// The API path of a run.
pub(crate) fn run_path(run_id: &str) -> String {
    if is_pipeline_run(run_id) {
        format!("/api/runs/{run_id}")
    } else {
        format!("/api/task-runs/{run_id}")
    }
}

/// Polls the run until it ends or `timeout` passes; with `report`, prints
/// a line on stderr for each task run state change under a spinner.
async fn wait(
    api: &ApiClient,
    run_id: &str,
    timeout: Option<Duration>,
    report: bool,
) -> Result<Waited, CommandError> {
    let pipeline = is_pipeline_run(run_id);
    let path = run_path(run_id);
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let spinner = if report {
        ui::spinner(format!("waiting for {run_id}"))
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let run = api.get(&path).await?;
        if report {
            let task_runs: Vec<Value> = if pipeline {
                run["taskRuns"].as_array().cloned().unwrap_or_default()
            } else {
                vec![run.clone()]
            };
            for task_run in &task_runs {
                let line = state_line(task_run);
                let id = ui::cell(&task_run["runId"]);
                if seen.get(&id) != Some(&line) {
                    spinner.suspend(|| print_state_line(task_run, &line));
                    seen.insert(id, line);
                }
            }
            let done = task_runs
                .iter()
                .filter(|r| task_run_ended(r["status"].as_str().unwrap_or_default()))
                .count();
            spinner.set_message(if pipeline {
                format!(
                    "waiting for {run_id}: {done} of {} task runs ended",
                    task_runs.len()
                )
            } else {
                format!("waiting for {run_id}")
            });
        }
        if run_ended(&run, pipeline) {
            spinner.finish_and_clear();
            return Ok(Waited::Ended(run));
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            spinner.finish_and_clear();
            return Ok(Waited::TimedOut(run));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What a state line says about a task run; a change prints a new line.
fn state_line(task_run: &Value) -> String {
    let status = task_run["status"].as_str().unwrap_or("unknown");
    let attempt = task_run["attempt"].as_i64().unwrap_or(0);
    match status {
        "running" => {
            let progress = task_run["progress"]
                .as_i64()
                .map(|p| format!(", {p}%"))
                .unwrap_or_default();
            let message = task_run["progressMessage"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            format!("running (attempt {attempt}{progress}){message}")
        }
        "succeeded" => format!(
            "succeeded in {}, attempt {attempt}",
            ui::elapsed(&task_run["startedAt"], &task_run["finishedAt"])
        ),
        "awaiting_retry" | "dead" => {
            let message = task_run["error"]["message"].as_str().unwrap_or("no reason");
            let code = task_run["error"]["code"]
                .as_str()
                .map(|c| format!(" [{c}]"))
                .unwrap_or_default();
            if status == "dead" {
                format!("dead after attempt {attempt}: {message}{code}")
            } else {
                format!("attempt {attempt} failed, will retry: {message}{code}")
            }
        }
        "cancelled" => {
            let by = task_run["cancelledBy"].as_str().unwrap_or("someone");
            format!("cancelled by {by}")
        }
        other => other.to_owned(),
    }
}

fn print_state_line(task_run: &Value, line: &str) {
    let task = task_run["taskId"].as_str().unwrap_or("?");
    let text = format!("{task}: {line}");
    match task_run["status"].as_str().unwrap_or("?") {
        "succeeded" => ui::ok("succeeded", text),
        status @ ("dead" | "cancelled") => ui::failed(status, text),
        "awaiting_retry" => ui::step("retrying", text),
        status => ui::step(status, text),
    }
}

/// The last line after a wait: how the run ended.
fn summarize(run: &Value, run_id: &str) {
    let status = run["status"].as_str().unwrap_or("unknown");
    let took = ui::elapsed(&run["createdAt"], &run["finishedAt"]);
    let attempts = match run["attempt"].as_i64() {
        Some(1) => ", 1 attempt".to_owned(),
        Some(n) if n > 1 => format!(", {n} attempts"),
        _ => String::new(),
    };
    let text = format!("{run_id} {status} after {took}{attempts}");
    if status == "succeeded" {
        ui::ok("done", text);
    } else {
        ui::failed("done", format!("{text}: see `pipeweave status {run_id}`"));
    }
}

/// What a succeeded run printed on stdout: a task run's output, or each
/// task's output of a pipeline run by task id. An output stored by
/// reference shows as its path.
fn outputs(run: &Value, run_id: &str) -> Value {
    let output_of = |task_run: &Value| match (&task_run.get("output"), &task_run["outputPath"]) {
        (Some(output), _) => (*output).clone(),
        (None, Value::String(path)) => json!({ "outputPath": path }),
        (None, _) => Value::Null,
    };
    if is_pipeline_run(run_id) {
        let mut by_task = serde_json::Map::new();
        for task_run in run["taskRuns"].as_array().into_iter().flatten() {
            if task_run["status"] == "succeeded"
                && let Some(task) = task_run["taskId"].as_str()
            {
                by_task.insert(task.to_owned(), output_of(task_run));
            }
        }
        Value::Object(by_task)
    } else {
        output_of(run)
    }
}
