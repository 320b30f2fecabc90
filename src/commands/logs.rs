//! `pipeweave logs`: the attempt logs of a task run, or of every task run of
//! a pipeline run, read through `GET /api/task-runs/{id}/logs`. With
//! `--follow` it polls that endpoint (a running attempt's log is rewritten
//! at every heartbeat) and prints the lines it has not printed, until the
//! run ends.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::anyhow;
use serde_json::{Value, json};

use crate::cli::{CommandError, exit};
use crate::client::{ApiClient, ClientArgs, check_run_id, is_pipeline_run, print_json};
use crate::commands::trigger::{run_ended, run_path};
use crate::{parse, ui};

const LOGS_EXAMPLES: &str = "\
Examples:
  # Every attempt's log of a task run
  pipeweave logs trun_019ac2a1f3e27c55a1b2c3d4e5f60718

  # Every task run of a pipeline run, followed live until it ends
  pipeweave logs prun_019ac2a1f3e27c55a1b2c3d4e5f60718 -f

  # Only the second attempt
  pipeweave logs trun_019ac2a1f3e27c55a1b2c3d4e5f60718 --attempt 2

  # For scripts: the API's answer; with -f, one JSON object per line
  pipeweave logs trun_… --json | jq '.attempts[].lines[].message'

Lines read `TIME LEVEL message` (time in UTC); a task's own output reads
`TIME stdout| …` or `TIME stderr| …`. A running attempt's log reaches the
orchestrator at each heartbeat, so -f shows lines a few seconds late.

Exit codes:
  0  shown (with -f: the run ended)
  2  not a run id
  4  the orchestrator cannot be reached
  5  no run has that id
  7  -f reached --timeout; the run goes on";

/// Show a run's logs, or follow them live.
#[derive(Debug, clap::Args)]
#[command(after_help = LOGS_EXAMPLES)]
pub(crate) struct LogsArgs {
    /// A task run (`trun_…`) or pipeline run (`prun_…`).
    run: String,

    /// Keep printing new lines until the run ends.
    #[arg(short, long)]
    follow: bool,

    /// With `--follow`: stop after this long (`30s`, `10m`).
    #[arg(long, value_parser = parse::duration, requires = "follow")]
    timeout: Option<Duration>,

    /// Only this attempt (1 is the first).
    #[arg(long)]
    attempt: Option<i64>,

    #[command(flatten)]
    client: ClientArgs,
}

/// How often `--follow` polls.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Runs `pipeweave logs`.
pub(crate) async fn run(args: LogsArgs) -> Result<u8, CommandError> {
    check_run_id(&args.run)?;
    let api = ApiClient::new(&args.client)?;
    if !args.follow {
        let logs = fetch(&api, &args.run).await?;
        if args.client.json {
            let answer = if is_pipeline_run(&args.run) {
                Value::Array(logs)
            } else {
                logs.into_iter().next().unwrap_or(Value::Null)
            };
            print_json(&answer)?;
            return Ok(exit::SUCCESS);
        }
        let mut printer = Printer::new(&args);
        for task_run in &logs {
            printer.print_new(task_run);
        }
        if printer.printed == 0 {
            eprintln!("No log lines: its attempts stored none (yet).");
        }
        return Ok(exit::SUCCESS);
    }

    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut printer = Printer::new(&args);
    let pipeline = is_pipeline_run(&args.run);
    loop {
        // Whether it ended is read before the logs, so the last read has
        // every line an ended run stored.
        let run = api.get(&run_path(&args.run)).await?;
        let ended = run_ended(&run, pipeline);
        for task_run in fetch(&api, &args.run).await? {
            printer.print_new(&task_run);
        }
        if ended {
            if !args.client.json {
                ui::step(
                    "ended",
                    format!("{} {}", args.run, run["status"].as_str().unwrap_or("?")),
                );
            }
            return Ok(exit::SUCCESS);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(CommandError {
                code: exit::TIMED_OUT,
                error: anyhow!(
                    "{} has not ended; stopped following it at --timeout",
                    args.run
                ),
            });
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

/// The logs answers of the run: one for a task run, one per task run of a
/// pipeline run.
async fn fetch(api: &ApiClient, run_id: &str) -> Result<Vec<Value>, CommandError> {
    if !is_pipeline_run(run_id) {
        return Ok(vec![
            api.get(&format!("/api/task-runs/{run_id}/logs")).await?,
        ]);
    }
    let run = api.get(&format!("/api/runs/{run_id}")).await?;
    let mut logs = Vec::new();
    for task_run in run["taskRuns"].as_array().into_iter().flatten() {
        if let Some(id) = task_run["runId"].as_str() {
            logs.push(api.get(&format!("/api/task-runs/{id}/logs")).await?);
        }
    }
    Ok(logs)
}

/// Prints lines not printed yet, remembering how many of each attempt's
/// lines it printed.
struct Printer {
    json: bool,
    attempt: Option<i64>,
    /// Lines printed, by task run and attempt.
    seen: BTreeMap<(String, i64), usize>,
    /// Whether lines carry the task's name (a pipeline run's logs).
    tagged: bool,
    /// Lines printed in all.
    printed: usize,
}

impl Printer {
    fn new(args: &LogsArgs) -> Self {
        Self {
            json: args.client.json,
            attempt: args.attempt,
            seen: BTreeMap::new(),
            tagged: is_pipeline_run(&args.run),
            printed: 0,
        }
    }

    /// Prints the new lines of one task run's logs answer.
    fn print_new(&mut self, logs: &Value) {
        let run_id = ui::cell(&logs["runId"]);
        let task = ui::cell(&logs["taskId"]);
        let attempts = logs["attempts"].as_array().cloned().unwrap_or_default();
        let several = attempts.len() > 1;
        for attempt in &attempts {
            let number = attempt["attempt"].as_i64().unwrap_or(0);
            if self.attempt.is_some_and(|wanted| wanted != number) {
                continue;
            }
            let lines = attempt["lines"].as_array().cloned().unwrap_or_default();
            let key = (run_id.clone(), number);
            let done = self.seen.get(&key).copied().unwrap_or(0);
            // A header before an attempt's first line, when there is more
            // than one attempt (or task) to tell apart.
            if done == 0
                && lines.len() > done
                && !self.json
                && (several || self.attempt.is_some() || self.tagged)
            {
                let header = format!(
                    "── {}attempt {number} ({}) ──",
                    if self.tagged {
                        format!("{task} ")
                    } else {
                        String::new()
                    },
                    ui::cell(&attempt["status"])
                );
                println!("{}", console::style(header).for_stdout().bold());
            }
            for line in lines.iter().skip(done) {
                if self.json {
                    println!(
                        "{}",
                        json!({ "runId": run_id, "taskId": task, "attempt": number, "line": line })
                    );
                } else if self.tagged {
                    println!("{} {}", ui::dim(format!("[{task}]")), render(line));
                } else {
                    println!("{}", render(line));
                }
                self.printed += 1;
            }
            self.seen.insert(key, done.max(lines.len()));
        }
    }
}

/// One log line for people: `09:41:47.123 INFO  message`.
fn render(line: &Value) -> String {
    let Some(object) = line.as_object() else {
        return ui::cell(line);
    };
    let time = object
        .get("timestampMs")
        .and_then(Value::as_i64)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "--:--:--.---".to_owned(),
            |t| t.format("%H:%M:%S%.3f").to_string(),
        );
    let time = ui::dim(time);
    let message = object.get("message").map(ui::cell).unwrap_or_default();
    if let Some(stream) = object.get("stream").and_then(Value::as_str) {
        return format!(
            "{time} {}| {message}",
            console::style(stream).for_stdout().magenta()
        );
    }
    if let Some(asset) = object.get("asset").and_then(Value::as_str) {
        let size = object
            .get("size")
            .and_then(Value::as_u64)
            .map(pipeweave_host::human::format_bytes)
            .unwrap_or_default();
        return format!(
            "{time} {} {asset} ({size})",
            console::style("ASSET").for_stdout().blue()
        );
    }
    let level = object
        .get("level")
        .and_then(Value::as_str)
        .unwrap_or("info")
        .to_ascii_uppercase();
    let padded = format!("{level:<5}");
    let styled = console::style(padded).for_stdout();
    let level = match level.as_str() {
        "ERROR" => styled.red(),
        "WARN" => styled.yellow(),
        "DEBUG" | "TRACE" => styled.dim(),
        _ => styled.green(),
    };
    format!("{time} {level} {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_render_time_level_and_message() {
        let line =
            json!({ "timestampMs": 1_764_150_107_123_i64, "level": "warn", "message": "slow" });
        let text = console::strip_ansi_codes(&render(&line)).into_owned();
        assert!(text.ends_with(":47.123 WARN  slow"), "{text}");
        let output = json!({ "timestampMs": 0, "stream": "stderr", "message": "oops" });
        let text = console::strip_ansi_codes(&render(&output)).into_owned();
        assert_eq!(text, "00:00:00.000 stderr| oops");
        assert_eq!(render(&json!("not json")), "not json");
    }
}
