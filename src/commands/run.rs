//! `pipeweave run`: the local runner. It runs one task component through
//! the same [`Runner`] the host server uses, prints the output on stdout and
//! the task's logs, progress and a summary on stderr.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pipeweave_host::human::{format_bytes, format_duration};
use pipeweave_host::{
    EngineConfig, EventSink, Failure, RunEvent, RunReport, RunRequest, Runner, RunnerConfig,
    SecretStore, StdStream,
};
use serde_json::{Value, json};

use crate::build::build_task_crate;
use crate::cli::{CommandError, exit};
use crate::parse;

const RUN_EXAMPLES: &str = "\
Examples:
  # Build a task crate and run it with inline JSON input
  pipeweave run examples/hello --input '{\"name\": \"Ada\"}'

  # Run an already built component
  pipeweave run target/wasm32-wasip2/release/hello.wasm --input '{\"name\": \"Ada\"}'

  # Input from a file, an upstream task's output, a 2-second limit
  pipeweave run task.wasm --input @input.json --upstream download=@download.json --timeout 2s

  # Give the task a declared secret and keep the assets it writes
  pipeweave run task.wasm --secret api-token=$TOKEN --keep-assets ./out

  # Secrets from a file (a task crate's own .secrets.yaml is read by default)
  pipeweave run task.wasm --secrets-file .secrets.yaml

  # Machine-readable report
  pipeweave run task.wasm --input '{}' --json | jq .status

Debugging with gdb: see \"Debugging a task\" in the README.

Exit codes:
  0  the task succeeded
  1  the task failed (reason, code and whether it is retryable are printed)
  2  usage error: bad arguments or input, unreadable file, not a task component
  3  the host itself failed";

/// Run a task component locally, exactly as a host would.
///
/// The task runs in a fresh sandbox: an empty temporary directory as its only
/// filesystem, no environment, outbound HTTP only to the hosts it declared,
/// and its declared time and memory limits (overridable here).
#[derive(Debug, Args)]
#[command(after_help = RUN_EXAMPLES)]
pub(crate) struct RunArgs {
    /// The task: a component (`.wasm`) built with `cargo build --target
    /// wasm32-wasip2` or `cargo component build`, or a task crate's
    /// directory, which is built first (release profile, or debug with
    /// `--debug`).
    component: PathBuf,

    /// The task's input: JSON text, or `@file.json`.
    #[arg(short, long, default_value = "{}")]
    input: String,

    /// An upstream task's output, as `TASK=JSON` or `TASK=@file.json`
    /// (repeatable).
    #[arg(long = "upstream", value_name = "TASK=JSON|@FILE")]
    upstreams: Vec<String>,

    /// An upstream asset the task can read, as `KEY=@file` (repeatable).
    #[arg(long = "asset", value_name = "KEY=@FILE")]
    assets: Vec<String>,

    /// A secret value, as `NAME=VALUE`, or `NAME` to take it from the
    /// environment variable of that name (repeatable). The task sees only
    /// secrets it declared.
    #[arg(long = "secret", value_name = "NAME[=VALUE]")]
    secrets: Vec<String>,

    /// A YAML file of secrets, `name: value` per line. Default: the task
    /// crate's `.secrets.yaml`, when it has one. `--secret` wins on a name
    /// both give.
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,

    /// Wall-clock limit, overriding the task's own (`500ms`, `30s`, `2m`).
    #[arg(long, value_parser = parse::duration)]
    timeout: Option<Duration>,

    /// Memory limit, overriding the task's own (`64MiB`, `1GiB`).
    #[arg(long, value_parser = parse::size)]
    memory: Option<u64>,

    /// Copy the assets of a successful run into this directory.
    #[arg(long, value_name = "DIR")]
    keep_assets: Option<PathBuf>,

    /// Print a JSON report on stdout instead of the bare output.
    #[arg(long)]
    json: bool,

    /// Print only the output: no logs, no summary.
    #[arg(short, long)]
    quiet: bool,

    /// Compile with debug info and without optimisation, so gdb or lldb can
    /// stop in the guest's source.
    #[arg(long)]
    debug: bool,

    /// Where compiled components are cached between runs.
    #[arg(long, env = "PIPEWEAVE_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Do not read or write the compiled-component cache.
    #[arg(long)]
    no_cache: bool,
}

/// Prints events on stderr as they happen.
struct StderrEvents {
    color: bool,
}

impl EventSink for StderrEvents {
    fn event(&self, event: RunEvent) {
        let line = match event {
            RunEvent::Log { level, message } => format!("[{}] {message}", level.as_str()),
            RunEvent::Output { stream, line } => match stream {
                StdStream::Stdout => format!("[stdout] {line}"),
                StdStream::Stderr => format!("[stderr] {line}"),
            },
            RunEvent::Progress { percent, message } => match message {
                Some(message) => format!("[progress {percent:>3}%] {message}"),
                None => format!("[progress {percent:>3}%]"),
            },
            RunEvent::Asset { key, size } => format!("[asset] {key} ({})", format_bytes(size)),
            RunEvent::LogTruncated { limit_bytes } => {
                format!(
                    "[log] log limit of {} reached; further lines are dropped",
                    format_bytes(limit_bytes as u64)
                )
            }
        };
        let mut stderr = std::io::stderr().lock();
        let _ = if self.color {
            writeln!(stderr, "\x1b[2m{line}\x1b[0m")
        } else {
            writeln!(stderr, "{line}")
        };
    }
}

pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("pipeweave").join("components"))
}

/// The secrets file: `--secrets-file`, or the task crate's `.secrets.yaml`
/// when the task is a crate that has one.
fn secrets_file(component: &Path, explicit: Option<&Path>) -> Option<PathBuf> {
    explicit.map(Path::to_path_buf).or_else(|| {
        let default = component.join(".secrets.yaml");
        (component.is_dir() && default.is_file()).then_some(default)
    })
}

/// Builds the request from the arguments; every error here is a usage error.
fn build_request(args: &RunArgs, events: Arc<dyn EventSink>) -> anyhow::Result<RunRequest> {
    let mut request = RunRequest::new(parse::json(&args.input, "--input")?);
    for upstream in &args.upstreams {
        let (task, value) = parse::key_value(upstream, "--upstream")?;
        let output = parse::json(value, &format!("--upstream {task}"))?;
        request.upstream.insert(task.to_owned(), output);
    }
    for asset in &args.assets {
        let (key, path) = parse::key_file(asset, "--asset")?;
        request.upstream_assets.insert(key, path);
    }
    let mut secrets: HashMap<String, String> =
        match secrets_file(&args.component, args.secrets_file.as_deref()) {
            Some(file) => SecretStore::from_yaml_file(&file)?
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            None => HashMap::new(),
        };
    for secret in &args.secrets {
        let (name, value) = match secret.split_once('=') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => {
                let value = std::env::var(secret).with_context(|| {
                    format!("--secret {secret}: no environment variable {secret}; pass --secret {secret}=VALUE")
                })?;
                (secret.clone(), value)
            }
        };
        secrets.insert(name, value);
    }
    request.secrets = secrets;
    request.timeout = args.timeout;
    request.memory_limit_bytes = args.memory;
    request.events = events;
    Ok(request)
}

/// Runs the command; returns the exit code.
pub(crate) async fn run(args: RunArgs) -> Result<u8, CommandError> {
    let component = if args.component.is_dir() {
        let (dir, debug, quiet) = (args.component.clone(), args.debug, args.quiet);
        tokio::task::spawn_blocking(move || build_task_crate(&dir, debug, quiet))
            .await
            .map_err(CommandError::internal)?
            .map_err(CommandError::usage)?
    } else if args.component.is_file() {
        args.component.clone()
    } else {
        return Err(CommandError::usage(anyhow::anyhow!(
            "{} does not exist; pass a task crate's directory, or a component built with \
             `cargo build --release --target wasm32-wasip2` (in target/wasm32-wasip2/release/)",
            args.component.display()
        )));
    };
    let events: Arc<dyn EventSink> = if args.quiet {
        Arc::new(pipeweave_host::DiscardEvents)
    } else {
        Arc::new(StderrEvents {
            color: std::io::stderr().is_terminal(),
        })
    };
    let request = build_request(&args, events).map_err(CommandError::usage)?;

    let config = RunnerConfig {
        engine: EngineConfig {
            max_instances: 4,
            debug_info: args.debug,
            ..EngineConfig::default()
        },
        cache_dir: if args.no_cache {
            None
        } else {
            args.cache_dir.clone().or_else(default_cache_dir)
        },
        ..RunnerConfig::default()
    };
    let runner = Runner::new(config).map_err(CommandError::internal)?;
    let task = runner
        .load_file(&component)
        .await
        .with_context(|| format!("cannot load {}", component.display()))
        .map_err(CommandError::usage)?;
    let task_id = task.descriptor().id.clone();
    let report = runner
        .run(&task, request)
        .await
        .map_err(CommandError::internal)?;

    if let (Some(dir), Ok(_)) = (&args.keep_assets, &report.outcome) {
        report
            .copy_assets_to(dir)
            .with_context(|| format!("cannot copy assets to {}", dir.display()))
            .map_err(CommandError::internal)?;
    }

    let mut stdout = std::io::stdout().lock();
    let printed = if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report_json(&task_id, &report))
    } else if let Ok(success) = &report.outcome {
        serde_json::to_writer_pretty(&mut stdout, &success.output)
    } else {
        Ok(())
    };
    printed
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            if args.json || report.outcome.is_ok() {
                writeln!(stdout).map_err(Into::into)
            } else {
                Ok(())
            }
        })
        .map_err(CommandError::internal)?;
    drop(stdout);
    if !args.quiet {
        print_summary(&task_id, &report, args.keep_assets.as_deref());
    }
    Ok(if report.outcome.is_ok() {
        exit::SUCCESS
    } else {
        exit::TASK_FAILED
    })
}

fn failure_json(failure: &Failure) -> Value {
    json!({
        "reason": failure.reason,
        "code": failure.code,
        "message": failure.message,
        "retryable": failure.retryable,
        "details": failure.details,
    })
}

/// The `--json` report.
fn report_json(task_id: &str, report: &RunReport) -> Value {
    let (status, output, run_next, failure) = match &report.outcome {
        Ok(success) => (
            "succeeded",
            success.output.clone(),
            json!(success.run_next),
            Value::Null,
        ),
        Err(failure) => ("failed", Value::Null, Value::Null, failure_json(failure)),
    };
    json!({
        "taskId": task_id,
        "status": status,
        "output": output,
        "runNext": run_next,
        "error": failure,
        "codeHash": report.code_hash,
        "durationMs": report.duration.as_secs_f64() * 1000.0,
        "peakMemoryBytes": report.peak_memory_bytes,
        "assets": report.assets.iter().map(|a| json!({
            "key": a.key, "type": a.kind, "size": a.size, "contentType": a.kind.content_type(),
        })).collect::<Vec<_>>(),
        "hostsContacted": report.hosts_contacted,
        "deniedRequests": report.denied_requests,
    })
}

fn print_summary(task_id: &str, report: &RunReport, kept: Option<&std::path::Path>) {
    let mut lines = Vec::new();
    match &report.outcome {
        Ok(success) => {
            lines.push(format!(
                "✓ {task_id} succeeded in {}",
                format_duration(report.duration)
            ));
            if let Some(next) = &success.run_next {
                let next = if next.is_empty() {
                    "(end of branch)".to_owned()
                } else {
                    next.join(", ")
                };
                lines.push(format!("  run next     {next}"));
            }
        }
        Err(failure) => {
            let retry = if failure.retryable {
                "retryable"
            } else {
                "not retryable"
            };
            lines.push(format!(
                "✗ {task_id} failed after {}: {} ({retry})",
                format_duration(report.duration),
                failure.reason
            ));
            if let Some(code) = &failure.code {
                lines.push(format!("  code         {code}"));
            }
            lines.push(format!("  message      {}", failure.message));
        }
    }
    lines.push(format!("  code hash    {}", report.code_hash));
    lines.push(format!(
        "  peak memory  {}",
        format_bytes(report.peak_memory_bytes)
    ));
    if report.assets.is_empty() {
        lines.push("  assets       none".into());
    } else {
        let assets: Vec<_> = report
            .assets
            .iter()
            .map(|a| {
                format!(
                    "{} ({}, {})",
                    a.key,
                    format_bytes(a.size),
                    a.kind.content_type()
                )
            })
            .collect();
        lines.push(format!("  assets       {}", assets.join(", ")));
        if let Some(dir) = kept {
            lines.push(format!("  kept in      {}", dir.display()));
        }
    }
    let hosts = if report.hosts_contacted.is_empty() {
        "none".to_owned()
    } else {
        report.hosts_contacted.join(", ")
    };
    lines.push(format!("  hosts        {hosts}"));
    if !report.denied_requests.is_empty() {
        lines.push(format!(
            "  denied       {}",
            report.denied_requests.join(", ")
        ));
    }
    eprintln!("{}", lines.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_crate_s_own_secrets_file_is_read_unless_another_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let crate_dir = dir.path();
        assert_eq!(secrets_file(crate_dir, None), None);
        std::fs::write(crate_dir.join(".secrets.yaml"), "a: b\n").expect("write");
        assert_eq!(
            secrets_file(crate_dir, None),
            Some(crate_dir.join(".secrets.yaml"))
        );
        let named = Path::new("elsewhere.yaml");
        assert_eq!(
            secrets_file(crate_dir, Some(named)),
            Some(named.to_path_buf())
        );
        let component = crate_dir.join("task.wasm");
        std::fs::write(&component, b"").expect("write");
        assert_eq!(secrets_file(&component, None), None);
    }
}
