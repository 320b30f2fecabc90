//! `pipeweave dev` as an author uses it: from nothing to the example
//! pipeline run through the queue; an edit picked up as a new code version
//! while it serves; its database kept across restarts; and Ctrl-C leaving
//! nothing running.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{path_str, stderr, stdout};

/// `pipeweave dev` with the test suite's guest build folder as its cargo
/// target directory (so it reuses the dependencies the suite built) and
/// its compile cache.
fn dev_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipeweave"));
    command
        .arg("dev")
        .args(args)
        .env("CARGO_TARGET_DIR", pipeweave_testkit::guest_target_dir())
        .env(
            "PIPEWEAVE_CACHE_DIR",
            pipeweave_testkit::compile_cache_dir(),
        )
        .env_remove("DATABASE_URL");
    command
}

/// The port in a `PostgreSQL    private cluster on 127.0.0.1:PORT` line.
fn postgres_port(lines: &[String]) -> Option<u16> {
    lines.iter().find_map(|line| {
        let at = line.find("private cluster on 127.0.0.1:")?;
        let rest = &line[at + "private cluster on 127.0.0.1:".len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

fn port_is_closed(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_err()
}

#[test]
fn dev_runs_the_example_pipeline_from_nothing_and_leaves_nothing_running() {
    let project = pipeweave_testkit::workspace_root().join("examples/pdf-pipeline");
    let output = dev_command(&[
        path_str(&project),
        "--temp",
        "--once",
        "--port",
        "0",
        "--input",
        r#"{"pdfUrl": "https://example.com/report.pdf", "pages": 3}"#,
    ])
    .output()
    .expect("pipeweave dev runs");
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    let result: Value = serde_json::from_str(&stdout(&output)).expect("stdout is JSON");
    for task in [
        "download",
        "extract-text",
        "extract-tables",
        "summarize",
        "archive",
        "notify",
    ] {
        assert!(
            result[task].is_object(),
            "{task} ran and succeeded: {result:#}"
        );
    }
    assert!(
        result["summarize"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("3 pages")),
        "{result:#}"
    );
    let lines: Vec<String> = log.lines().map(str::to_owned).collect();
    let port = postgres_port(&lines).expect("dev names its PostgreSQL port");
    assert!(port_is_closed(port), "PostgreSQL still listens after exit");
    assert!(log.contains("stopped"), "{log}");
}

/// A `pipeweave dev` running in the background, its stderr lines arriving
/// on a channel.
struct DevProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl DevProcess {
    fn start(project: &Path) -> Self {
        let mut child = dev_command(&[path_str(project), "--port", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("pipeweave dev starts");
        let (sender, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("dev: {line}");
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text`; returns it.
    fn wait_for(&mut self, text: &str, patience: Duration) -> Result<String> {
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return Ok(line);
                    }
                }
                Err(_) => bail!(
                    "no line with {text:?} within {patience:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The orchestrator's URL from the `orchestrator  http://…` line.
    fn api(&self) -> Result<String> {
        self.seen
            .iter()
            .find_map(|line| {
                let at = line.find("orchestrator")?;
                let url = line[at..].split_whitespace().nth(1)?;
                url.starts_with("http://").then(|| url.to_owned())
            })
            .context("no orchestrator line")
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit code.
    fn interrupt(mut self) -> Result<(Option<i32>, Vec<String>)> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        assert!(status.success(), "kill -INT");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return Ok((status.code(), std::mem::take(&mut self.seen)));
            }
            if Instant::now() > deadline {
                bail!("pipeweave dev did not stop within 60 s of Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const GREETER: &str = r#"use pipeweave_sdk::{export_task, Context, Descriptor, Task, TaskError, TaskResult};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input { name: String, #[serde(default)] wait_ms: u64 }

#[derive(Serialize)]
struct Output { greeting: String }

struct Greet;

impl Task for Greet {
    type Input = Input;
    type Output = Output;

    fn describe() -> Descriptor {
        Descriptor::new("greet").timeout_secs(30)
    }

    fn run(ctx: &Context<Input>) -> Result<TaskResult<Output>, TaskError> {
        std::thread::sleep(std::time::Duration::from_millis(ctx.input().wait_ms));
        Ok(TaskResult::new(Output { greeting: format!("Hello, {}!", ctx.input().name) }))
    }
}

export_task!(Greet);
"#;

/// A task crate outside the workspace, as `pipeweave init` makes one.
fn greeter_project(dir: &Path) -> PathBuf {
    let sdk = pipeweave_testkit::workspace_root().join("guest-sdk");
    let project = dir.join("greeter");
    std::fs::create_dir_all(project.join("src")).expect("project folder");
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            r#"[package]
name = "greeter"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
pipeweave-sdk = {{ path = {sdk:?} }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[workspace]
"#,
            sdk = path_str(&sdk)
        ),
    )
    .expect("Cargo.toml");
    std::fs::write(project.join("src/lib.rs"), GREETER).expect("lib.rs");
    // The workspace's lock file pins the versions the suite already built.
    std::fs::copy(
        pipeweave_testkit::workspace_root().join("Cargo.lock"),
        project.join("Cargo.lock"),
    )
    .expect("Cargo.lock");
    project
}

async fn enqueue_greeting(api: &str, input: Value) -> Result<String> {
    let queued: Value = reqwest::Client::new()
        .post(format!("{api}/api/queue/task"))
        .json(&json!({ "taskId": "greet", "input": input }))
        .send()
        .await?
        .json()
        .await?;
    queued["runId"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("enqueue: {queued}"))
}

/// Waits until the run's status is one of `statuses`; returns the run.
async fn wait_status(api: &str, run_id: &str, statuses: &[&str]) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let run: Value = reqwest::get(format!("{api}/api/task-runs/{run_id}"))
            .await?
            .json()
            .await?;
        let status = run["status"].as_str().unwrap_or_default();
        if statuses.contains(&status) {
            return Ok(run);
        }
        if matches!(status, "dead" | "cancelled") || Instant::now() > deadline {
            bail!("run {run_id} is not {statuses:?}: {run}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn greet(api: &str, name: &str) -> Result<(String, Value)> {
    let run_id = enqueue_greeting(api, json!({ "name": name })).await?;
    let run = wait_status(api, &run_id, &["succeeded"]).await?;
    Ok((run_id, run))
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_reloads_an_edit_as_a_new_code_version_and_keeps_its_data_across_restarts() -> Result<()>
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scratch = tempfile::tempdir()?;
    let project = greeter_project(scratch.path());

    let mut dev = DevProcess::start(&project);
    dev.wait_for("Watching the sources", Duration::from_secs(600))?;
    let api = dev.api()?;
    let (first_run, run) = greet(&api, "Ada").await?;
    assert_eq!(run["output"]["greeting"], "Hello, Ada!");
    assert_eq!(run["codeVersion"], 1, "{run}");

    // An edit while a run is under way: a new build, registered as code
    // version 2; the run under way finishes on version 1.
    let slow = enqueue_greeting(&api, json!({ "name": "Cy", "wait_ms": 20_000 })).await?;
    wait_status(&api, &slow, &["running"]).await?;
    let source = project.join("src/lib.rs");
    std::fs::write(&source, GREETER.replace("Hello, {}!", "Hi, {}!"))?;
    dev.wait_for("code version 1 → 2", Duration::from_secs(300))?;
    let under_way = wait_status(&api, &slow, &["running", "succeeded"]).await?;
    assert_eq!(
        under_way["status"], "running",
        "the rebuild took longer than the slow run; the test proves nothing: {under_way}"
    );
    let slow_run = wait_status(&api, &slow, &["succeeded"]).await?;
    assert_eq!(slow_run["output"]["greeting"], "Hello, Cy!", "{slow_run}");
    assert_eq!(slow_run["codeVersion"], 1, "{slow_run}");
    let (_, run) = greet(&api, "Ada").await?;
    assert_eq!(run["output"]["greeting"], "Hi, Ada!");
    assert_eq!(run["codeVersion"], 2, "{run}");
    let history: Value = reqwest::get(format!("{api}/api/tasks/greet/history"))
        .await?
        .json()
        .await?;
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history:#}");

    // A broken edit keeps the last good version serving.
    std::fs::write(&source, "this is not rust")?;
    dev.wait_for("not reloaded", Duration::from_secs(300))?;
    let (_, run) = greet(&api, "Bo").await?;
    assert_eq!(run["output"]["greeting"], "Hi, Bo!");

    let (code, lines) = dev.interrupt()?;
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let port = postgres_port(&lines).expect("dev names its PostgreSQL port");
    assert!(
        port_is_closed(port),
        "PostgreSQL still listens after Ctrl-C"
    );
    assert!(
        project
            .join(".pipeweave/postgres/data/PG_VERSION")
            .is_file(),
        "the database is kept in the project"
    );

    // The next start reuses the database: the first run is still there.
    std::fs::write(&source, GREETER.replace("Hello, {}!", "Hi, {}!"))?;
    let mut dev = DevProcess::start(&project);
    dev.wait_for("Watching the sources", Duration::from_secs(300))?;
    let api = dev.api()?;
    let kept: Value = reqwest::get(format!("{api}/api/task-runs/{first_run}"))
        .await?
        .json()
        .await?;
    assert_eq!(kept["output"]["greeting"], "Hello, Ada!", "{kept:#}");
    let (code, lines) = dev.interrupt()?;
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    Ok(())
}
