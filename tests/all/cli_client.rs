//! The client commands of the real `pipeweave` binary (`services`,
//! `trigger`, `dry-run`, `status`, `logs`, `cancel`, `dlq`, `db`) against a
//! real orchestrator process on a private PostgreSQL, with a real host
//! running the example guests: their output, their `--json`, and the exit
//! codes the help documents.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pipeweave_testkit::process::Server;
use serde_json::{Value, json};

use super::{path_str, pipeweave, stderr, stdout};

const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// An orchestrator process on a fresh migrated database, with its own
/// storage directory.
struct Orchestrator {
    server: Server,
    _storage: tempfile::TempDir,
}

impl Orchestrator {
    fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// One with extra environment variables.
    fn start_with_env(env: &[(&str, &str)]) -> Self {
        let database_url = pipeweave_testkit::postgres::migrated_database(|url| {
            let output = pipeweave(&["db", "migrate", "--url", url]);
            assert!(output.status.success(), "db migrate: {}", stderr(&output));
        });
        let storage = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_pipeweave"));
        command
            .arg("orchestrator")
            .env("DATABASE_URL", &database_url)
            .env("PIPEWEAVE_SECRET_KEY", SECRET)
            .env("PIPEWEAVE_STORAGE_DIR", storage.path())
            .env("PORT", "0")
            .env("PIPEWEAVE_LISTEN_HOST", "127.0.0.1")
            .env("POLL_INTERVAL_MS", "100")
            .env("LOG_LEVEL", "minimal")
            .envs(env.iter().copied());
        Self {
            server: Server::start(command, Duration::from_secs(30)),
            _storage: storage,
        }
    }

    fn url(&self) -> &str {
        &self.server.url
    }

    /// A host running its attempts, 2 at a time.
    fn host(&self) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pipeweave"));
        command
            .args([
                "host",
                "--orchestrator",
                self.url(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--capacity", "2", "--host-id", "cli-host"])
            .env("PIPEWEAVE_SECRET_KEY", SECRET)
            .env(
                "PIPEWEAVE_CACHE_DIR",
                pipeweave_testkit::compile_cache_dir(),
            );
        Server::start(command, Duration::from_secs(30))
    }

    /// Registers an example guest.
    fn register(&self, guest: &str) {
        let wasm = pipeweave_testkit::guest(guest);
        let output = pipeweave(&["register", path_str(&wasm), "--orchestrator", self.url()]);
        assert!(
            output.status.success(),
            "register {guest}: {}",
            stderr(&output)
        );
    }

    /// Registers pipeline `id` with these entry tasks.
    async fn pipeline(&self, id: &str, entry: &[&str]) -> Result<()> {
        let response = http()
            .put(format!("{}/api/pipelines/{id}", self.url()))
            .json(&json!({ "entryTasks": entry }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("pipeline {id}: {}", response.text().await?);
        }
        Ok(())
    }

    /// `pipeweave ARGS --url <this orchestrator>`.
    fn cli(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--url", self.url()]);
        pipeweave(&all)
    }

    /// Waits until a task run ends and returns it.
    async fn wait_final(&self, run_id: &str) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let run: Value = http()
                .get(format!("{}/api/task-runs/{run_id}", self.url()))
                .send()
                .await?
                .json()
                .await?;
            if matches!(
                run["status"].as_str(),
                Some("succeeded" | "dead" | "cancelled")
            ) {
                return Ok(run);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{run_id} did not end: {run}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Asserts the exit code, showing both streams when it differs.
#[track_caller]
fn exits(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

#[track_caller]
fn json_of(output: &Output) -> Value {
    serde_json::from_str(&stdout(output))
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", stdout(output)))
}

/// The run id a command printed alone on stdout.
#[track_caller]
fn printed_id(output: &Output) -> String {
    exits(output, 0);
    let id = stdout(output).trim().to_owned();
    assert!(
        id.starts_with("trun_") || id.starts_with("prun_"),
        "not a run id: {id:?}"
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_host_runs_wait_in_the_queue_and_cancel_ends_them() -> Result<()> {
    // Nothing listens on port 9: exit 4, and what to do.
    let output = pipeweave(&["services", "--url", "http://127.0.0.1:9"]);
    exits(&output, 4);
    assert!(
        stderr(&output).contains(
            "cannot reach the orchestrator at http://127.0.0.1:9: is it running? start one with `pipeweave dev`, or pass --url"
        ),
        "{}",
        stderr(&output)
    );

    let orchestrator = Orchestrator::start();
    orchestrator.register("hello");
    orchestrator.pipeline("greet", &["hello"]).await?;

    let output = orchestrator.cli(&["services"]);
    exits(&output, 0);
    let table = stdout(&output);
    assert!(
        table.contains("SERVICE") && table.contains("hello"),
        "{table}"
    );
    assert!(table.contains("TASK") && table.contains("v1"), "{table}");
    let services = json_of(&orchestrator.cli(&["services", "--json"]));
    assert_eq!(services[0]["id"], "hello", "{services}");
    assert_eq!(services[0]["tasks"][0]["id"], "hello", "{services}");
    let output = orchestrator.cli(&["services", "nope"]);
    exits(&output, 5);
    assert!(stderr(&output).contains("\"nope\""), "{}", stderr(&output));

    let output = orchestrator.cli(&["dry-run", "greet", "-i", r#"{"name": "Ada"}"#]);
    exits(&output, 0);
    let plan = stdout(&output);
    assert!(plan.contains("✓ Pipeline 'greet' validated"), "{plan}");
    assert!(plan.contains("1. hello (entry"), "{plan}");
    assert!(plan.contains("no live host or worker"), "{plan}");
    exits(&orchestrator.cli(&["dry-run", "nope"]), 5);

    // A pipeline run waits in the queue; status shows its tree, and cancel
    // ends it with its task run.
    let pipeline_run =
        printed_id(&orchestrator.cli(&["trigger", "greet", "-i", r#"{"name": "Ada"}"#]));
    let output = orchestrator.cli(&["status", &pipeline_run]);
    exits(&output, 0);
    let tree = stdout(&output);
    assert!(
        tree.contains("greet v1") && tree.contains("running"),
        "{tree}"
    );
    assert!(tree.contains("hello") && tree.contains("queued"), "{tree}");
    let output = orchestrator.cli(&["cancel", &pipeline_run, "--reason", "testing"]);
    exits(&output, 0);
    assert!(
        stderr(&output).contains("and 1 task run that had not ended"),
        "{}",
        stderr(&output)
    );
    let run = json_of(&orchestrator.cli(&["status", &pipeline_run, "--json"]));
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["taskRuns"][0]["status"], "cancelled", "{run}");
    assert_eq!(run["taskRuns"][0]["cancelReason"], "testing", "{run}");
    let output = orchestrator.cli(&["cancel", &pipeline_run]);
    exits(&output, 6);
    assert!(
        stderr(&output).contains("already ended"),
        "{}",
        stderr(&output)
    );

    // A task run queued for later; --wait gives up at --timeout.
    let task_run = printed_id(&orchestrator.cli(&["trigger", "hello", "--task", "--delay", "1h"]));
    let output = orchestrator.cli(&["status", &task_run]);
    exits(&output, 0);
    assert!(stdout(&output).contains("queued"), "{}", stdout(&output));
    let output = orchestrator.cli(&[
        "trigger",
        "hello",
        "--task",
        "-i",
        r#"{"name": "Ada"}"#,
        "--wait",
        "--timeout",
        "500ms",
    ]);
    exits(&output, 7);
    assert!(stderr(&output).contains("goes on"), "{}", stderr(&output));
    let output = orchestrator.cli(&["cancel", &task_run]);
    exits(&output, 0);
    assert!(
        stderr(&output).contains("was queued"),
        "{}",
        stderr(&output)
    );
    exits(&orchestrator.cli(&["cancel", &task_run]), 6);
    exits(
        &orchestrator.cli(&["cancel", "trun_019ac2a1f3e27c55a1b2c3d4e5f60718"]),
        5,
    );
    exits(&orchestrator.cli(&["cancel", "bogus"]), 2);
    exits(&orchestrator.cli(&["trigger", "nope"]), 5);
    exits(&orchestrator.cli(&["trigger", "greet", "-i", "{bad"]), 2);

    // The lists.
    let output = orchestrator.cli(&["status"]);
    exits(&output, 0);
    assert!(
        stdout(&output).contains(&pipeline_run),
        "{}",
        stdout(&output)
    );
    let page = json_of(&orchestrator.cli(&["status", "--tasks", "--json"]));
    assert_eq!(page["total"], 3, "{page}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_host_trigger_wait_exits_with_the_outcome_and_status_logs_and_dlq_show_the_runs()
-> Result<()> {
    let orchestrator = Orchestrator::start();
    orchestrator.register("hello");
    orchestrator.register("misbehave");
    orchestrator.pipeline("greet", &["hello"]).await?;
    let _host = orchestrator.host();

    // A pipeline run that succeeds: exit 0, each task's output on stdout.
    let output = orchestrator.cli(&["trigger", "greet", "-i", r#"{"name": "Ada"}"#, "--wait"]);
    exits(&output, 0);
    let outputs = json_of(&output);
    assert_eq!(outputs["hello"]["greeting"], "Hello, Ada!", "{outputs}");
    assert!(
        stderr(&output).contains("hello: succeeded"),
        "{}",
        stderr(&output)
    );
    let output = orchestrator.cli(&[
        "trigger",
        "greet",
        "-i",
        r#"{"name": "Bo"}"#,
        "--wait",
        "--json",
    ]);
    exits(&output, 0);
    let run = json_of(&output);
    assert_eq!(run["status"], "succeeded", "{run}");
    let pipeline_run = run["pipelineRunId"]
        .as_str()
        .context("pipelineRunId")?
        .to_owned();

    let output = orchestrator.cli(&["status", &pipeline_run]);
    exits(&output, 0);
    let tree = stdout(&output);
    for expected in ["greet v1", "succeeded", "hello", "v1 ", "TOOK"] {
        assert!(tree.contains(expected), "{expected:?} in:\n{tree}");
    }
    let output = orchestrator.cli(&["logs", &pipeline_run]);
    exits(&output, 0);
    let logs = stdout(&output);
    assert!(
        logs.contains("[hello]") && logs.contains("(attempt 1)"),
        "{logs}"
    );

    // A task run that dies: exit 1, and the dead run in --json.
    let output = orchestrator.cli(&[
        "trigger",
        "hello",
        "--task",
        "-i",
        r#"{"name": ""}"#,
        "--wait",
        "--json",
    ]);
    exits(&output, 1);
    let dead = json_of(&output);
    assert_eq!(dead["status"], "dead", "{dead}");
    assert_eq!(dead["error"]["code"], "EMPTY_NAME", "{dead}");
    let dead_id = dead["runId"].as_str().context("runId")?.to_owned();
    let output = orchestrator.cli(&[
        "trigger",
        "hello",
        "--task",
        "-i",
        r#"{"name": ""}"#,
        "--wait",
    ]);
    exits(&output, 1);
    assert!(
        stderr(&output).contains("dead after attempt 1"),
        "{}",
        stderr(&output)
    );

    let output = orchestrator.cli(&["status", &dead_id]);
    exits(&output, 0);
    let detail = stdout(&output);
    assert!(
        detail.contains("EMPTY_NAME") && detail.contains("ATTEMPT"),
        "{detail}"
    );
    // hello fails on an empty name before it logs anything.
    let output = orchestrator.cli(&["logs", &dead_id]);
    exits(&output, 0);
    assert!(
        stderr(&output).contains("No log lines"),
        "{}",
        stderr(&output)
    );
    let logs = json_of(&orchestrator.cli(&["logs", &dead_id, "--json"]));
    assert_eq!(logs["attempts"][0]["status"], "failed", "{logs}");
    assert_eq!(logs["attempts"][0]["lines"], json!([]), "{logs}");

    // Following a running attempt's log: its first line arrives while the
    // attempt still runs (the host stores the log so far at each
    // heartbeat, every 500 ms for misbehave), and -f ends with the run.
    let sleeper = printed_id(&orchestrator.cli(&[
        "trigger",
        "misbehave",
        "--task",
        "-i",
        r#"{"mode": "sleep", "ms": 4000}"#,
    ]));
    let mut follow = Command::new(env!("CARGO_BIN_EXE_pipeweave"))
        .args(["logs", &sleeper, "-f", "--timeout", "60s"])
        .args(["--url", orchestrator.url()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let lines = follow.stdout.take().context("stdout")?;
    let (first, lines) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(lines).lines();
        (lines.next(), lines)
    })
    .await?;
    let first = first.context("logs -f printed nothing")??;
    assert!(first.contains("DEBUG mode sleep"), "{first}");
    let run: Value = http()
        .get(format!("{}/api/task-runs/{sleeper}", orchestrator.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(run["status"], "running", "the line came live: {run}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = follow.wait_with_output()?;
    exits(&output, 0);
    assert!(rest.is_empty(), "each line is printed once: {rest:?}");
    assert!(stderr(&output).contains("succeeded"), "{}", stderr(&output));
    let logs = json_of(&orchestrator.cli(&["logs", &sleeper, "--json"]));
    assert_eq!(logs["attempts"][0]["status"], "succeeded", "{logs}");
    assert!(
        logs["attempts"][0]["lines"][0]["timestampMs"].is_u64(),
        "{logs}"
    );

    // The dead-letter queue: both dead runs.
    let output = orchestrator.cli(&["dlq", "list"]);
    exits(&output, 0);
    assert!(stdout(&output).contains(&dead_id), "{}", stdout(&output));
    let page = json_of(&orchestrator.cli(&["dlq", "list", "--json"]));
    assert_eq!(page["total"], 2, "{page}");
    let output = orchestrator.cli(&["dlq", "show", &dead_id]);
    exits(&output, 0);
    assert!(
        stdout(&output).contains("EMPTY_NAME"),
        "{}",
        stdout(&output)
    );
    exits(
        &orchestrator.cli(&["dlq", "show", "trun_019ac2a1f3e27c55a1b2c3d4e5f60718"]),
        5,
    );

    let retried = printed_id(&orchestrator.cli(&["dlq", "retry", &dead_id]));
    let output = orchestrator.cli(&["dlq", "retry", &dead_id]);
    exits(&output, 6);
    assert!(
        stderr(&output).contains("already retried"),
        "{}",
        stderr(&output)
    );
    assert_eq!(orchestrator.wait_final(&retried).await?["status"], "dead");

    // Two dead runs not retried: the other first one and the retry.
    let output = orchestrator.cli(&["dlq", "retry-all"]);
    exits(&output, 0);
    assert!(
        stderr(&output).contains("2 dead runs"),
        "{}",
        stderr(&output)
    );
    // They die again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while json_of(&orchestrator.cli(&["dlq", "list", "--json"]))["total"] != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retries did not die"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let output = orchestrator.cli(&["dlq", "purge", "--older-than", "1ms"]);
    exits(&output, 2);
    assert!(stderr(&output).contains("--yes"), "{}", stderr(&output));
    let output = orchestrator.cli(&["dlq", "purge", "--older-than", "1ms", "--yes"]);
    exits(&output, 0);
    assert!(stderr(&output).contains("purged"), "{}", stderr(&output));
    let page = json_of(&orchestrator.cli(&["dlq", "list", "--json"]));
    assert_eq!(page["total"], 0, "{page}");
    Ok(())
}

#[test]
fn an_orchestrator_with_an_api_key_needs_it_for_writes_and_logs_and_says_so() {
    const KEY: &str = "open-sesame-0123456789";
    let orchestrator = Orchestrator::start_with_env(&[("PIPEWEAVE_API_KEY", KEY)]);
    let output = orchestrator.cli(&["dlq", "retry-all"]);
    exits(&output, 2);
    assert!(
        stderr(&output).contains("requires an API key: pass --api-key or set PIPEWEAVE_API_KEY"),
        "{}",
        stderr(&output)
    );
    let output = orchestrator.cli(&["dlq", "retry-all", "--api-key", "wrong"]);
    exits(&output, 2);
    assert!(
        stderr(&output).contains("refused the API key"),
        "{}",
        stderr(&output)
    );
    exits(
        &orchestrator.cli(&["dlq", "retry-all", "--api-key", KEY]),
        0,
    );
    // Reads of stored data need it too; other reads do not.
    let run = "trun_019ac2a1f3e27c55a1b2c3d4e5f60718";
    exits(&orchestrator.cli(&["logs", run]), 2);
    exits(&orchestrator.cli(&["logs", run, "--api-key", KEY]), 5);
    exits(&orchestrator.cli(&["status", run]), 5);
}

#[test]
fn db_commands_init_migrate_show_status_and_reset_a_real_database() {
    let url = pipeweave_testkit::postgres::create_database(None);
    let db = |args: &[&str]| {
        let mut all = vec!["db"];
        all.extend_from_slice(args);
        all.extend(["--url", &url]);
        pipeweave(&all)
    };

    let output = db(&["status"]);
    exits(&output, 0);
    assert!(
        stdout(&output).contains("Not initialised"),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("pending"), "{}", stdout(&output));

    let output = db(&["init"]);
    exits(&output, 0);
    assert!(
        stderr(&output).contains("migrations applied"),
        "{}",
        stderr(&output)
    );
    let output = db(&["init"]);
    exits(&output, 6);
    assert!(
        stderr(&output).contains("already has PipeWeave's schema"),
        "{}",
        stderr(&output)
    );
    let output = db(&["migrate"]);
    exits(&output, 0);
    assert!(
        stderr(&output).contains("nothing to apply"),
        "{}",
        stderr(&output)
    );

    // DATABASE_URL instead of --url.
    let output = Command::new(env!("CARGO_BIN_EXE_pipeweave"))
        .args(["db", "status", "--json"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap_or_else(|e| panic!("pipeweave: {e}"));
    exits(&output, 0);
    let status = json_of(&output);
    assert_eq!(status["pending"], 0, "{status}");
    assert!(status["applied"].as_u64().unwrap_or(0) >= 10, "{status}");
    assert_eq!(status["taskRuns"]["dead"], 0, "{status}");
    assert_eq!(status["pipelineRuns"]["running"], 0, "{status}");
    let output = db(&["status"]);
    exits(&output, 0);
    assert!(
        stdout(&output).contains("Up to date."),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("Task runs"), "{}", stdout(&output));

    // Reset refuses without --yes, and with it leaves an empty schema.
    pipeweave_testkit::postgres::query(
        &url,
        "insert into hosts (id, url, capacity) values ('h', 'http://127.0.0.1:1', 1)",
    );
    let output = db(&["reset"]);
    exits(&output, 2);
    assert!(stderr(&output).contains("--yes"), "{}", stderr(&output));
    assert_eq!(
        pipeweave_testkit::postgres::query(&url, "select count(*) from hosts"),
        "1"
    );
    let output = db(&["reset", "--yes"]);
    exits(&output, 0);
    assert_eq!(
        pipeweave_testkit::postgres::query(&url, "select count(*) from hosts"),
        "0"
    );
    let status = json_of(&db(&["status", "--json"]));
    assert_eq!(status["pending"], 0, "{status}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_pipeweave()"),
        ("zsh", "#compdef pipeweave"),
        ("fish", "complete -c pipeweave"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let output = pipeweave(&["completions", shell]);
        exits(&output, 0);
        let script = stdout(&output);
        assert!(script.contains(marker), "{shell}: {marker:?} missing");
        assert!(
            script.contains("dlq"),
            "{shell}: the subcommands are completed"
        );
    }
    exits(&pipeweave(&["completions", "tcsh"]), 2);
}
