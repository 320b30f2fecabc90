//! The orchestrator, hosts and workers as separate processes of the real
//! `pipeweave` binary: a task through the queue on a host, its assets in
//! storage (a 200 MiB one streamed to a real S3-protocol server, with the
//! host's memory measured), a host killed mid-run, the orchestrator killed
//! mid-dispatch, and two orchestrators sharing one database.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use pipeweave_testkit::process::{Server, python_worker};
use serde_json::{Value, json};

use super::{path_str, pipeweave};

const SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A test database migrated by `pipeweave db migrate`.
pub(super) fn database() -> String {
    pipeweave_testkit::postgres::migrated_database(|url| {
        let output = pipeweave(&["db", "migrate", "--database-url", url]);
        assert!(
            output.status.success(),
            "db migrate: {}",
            super::stderr(&output)
        );
    })
}

/// The local storage backend every orchestrator here uses (objects are
/// keyed by run id and code hash, so they can share it).
pub(super) fn storage_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-storage")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// `pipeweave orchestrator` on `port` (0 for any).
pub(super) fn orchestrator(database_url: &str, port: u16) -> Server {
    orchestrator_with_env(database_url, port, &[])
}

/// `pipeweave orchestrator` with extra environment variables.
pub(super) fn orchestrator_with_env(database_url: &str, port: u16, env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipeweave"));
    command.envs(env.iter().copied());
    command
        .arg("orchestrator")
        .env("DATABASE_URL", database_url)
        .env("PIPEWEAVE_SECRET_KEY", SECRET)
        .env("PIPEWEAVE_STORAGE_DIR", storage_dir())
        .env("PORT", port.to_string())
        .env("PIPEWEAVE_LISTEN_HOST", "127.0.0.1")
        .env("POLL_INTERVAL_MS", "100")
        .env("MAX_CONCURRENCY", "64")
        .env("LOG_LEVEL", "minimal");
    Server::start(command, Duration::from_secs(30))
}

/// `pipeweave host` taking work from `orchestrator_url`, 4 at a time.
fn host(orchestrator_url: &str, id: &str) -> Server {
    host_with_capacity(orchestrator_url, id, 4)
}

/// `pipeweave host` running `capacity` attempts at a time.
fn host_with_capacity(orchestrator_url: &str, id: &str, capacity: u32) -> Server {
    host_with_args(orchestrator_url, id, capacity, &[])
}

/// `pipeweave host` with extra arguments.
fn host_with_args(orchestrator_url: &str, id: &str, capacity: u32, extra: &[&str]) -> Server {
    Server::start(
        host_command(orchestrator_url, id, capacity, extra),
        Duration::from_secs(30),
    )
}

/// The command that starts `pipeweave host`.
pub(super) fn host_command(
    orchestrator_url: &str,
    id: &str,
    capacity: u32,
    extra: &[&str],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipeweave"));
    command
        .args([
            "host",
            "--orchestrator",
            orchestrator_url,
            "--listen",
            "127.0.0.1:0",
            "--capacity",
            &capacity.to_string(),
        ])
        .args(["--host-id", id])
        .args(extra)
        .env("PIPEWEAVE_SECRET_KEY", SECRET)
        .env(
            "PIPEWEAVE_CACHE_DIR",
            pipeweave_testkit::compile_cache_dir(),
        );
    command
}

pub(super) fn register(orchestrator_url: &str, guest: &str) {
    register_with_args(orchestrator_url, guest, &[]);
}

pub(super) fn register_with_args(orchestrator_url: &str, guest: &str, extra: &[&str]) {
    let wasm = pipeweave_testkit::guest(guest);
    let mut args = vec![
        "register",
        path_str(&wasm),
        "--orchestrator",
        orchestrator_url,
    ];
    args.extend_from_slice(extra);
    let output = pipeweave(&args);
    assert!(
        output.status.success(),
        "register {guest}: {}",
        super::stderr(&output)
    );
}

pub(super) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub(super) async fn enqueue(url: &str, task_id: &str, input: Value) -> Result<String> {
    let answer: Value = client()
        .post(format!("{url}/api/queue/task"))
        .json(&json!({ "taskId": task_id, "input": input }))
        .send()
        .await?
        .json()
        .await?;
    answer["runId"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("enqueue: {answer}"))
}

/// `POST /api/queue/batch` with `tasks`; returns the answer.
async fn enqueue_batch(url: &str, tasks: &[Value]) -> Result<Value> {
    Ok(client()
        .post(format!("{url}/api/queue/batch"))
        .json(&json!({ "tasks": tasks }))
        .send()
        .await?
        .json()
        .await?)
}

/// GETs `{url}{path}` until `ended` holds for the answer, and returns it.
async fn poll(
    url: &str,
    path: &str,
    patience: Duration,
    ended: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let answer: Value = client()
            .get(format!("{url}{path}"))
            .send()
            .await?
            .json()
            .await?;
        if ended(&answer) {
            return Ok(answer);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{path} did not end within {patience:?}: {answer}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a task run ends and returns it.
pub(super) async fn wait_final(url: &str, run_id: &str, patience: Duration) -> Result<Value> {
    poll(url, &format!("/api/task-runs/{run_id}"), patience, |run| {
        matches!(
            run["status"].as_str(),
            Some("succeeded" | "dead" | "cancelled")
        )
    })
    .await
}

async fn queue_status(url: &str) -> Result<Value> {
    Ok(client()
        .get(format!("{url}/api/queue/status"))
        .send()
        .await?
        .json()
        .await?)
}

/// Waits until `completed` reaches `expected`, or fails after `patience`.
async fn wait_completed(url: &str, expected: i64, patience: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let status = queue_status(url).await?;
        if status["completed"].as_i64() == Some(expected) {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "not all runs completed within {patience:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_task_runs_through_the_queue_on_a_host() -> Result<()> {
    let database_url = database();
    let orchestrator = orchestrator(&database_url, 0);
    register(&orchestrator.url, "hello");
    let _host = host(&orchestrator.url, "host-a");
    let run_id = enqueue(&orchestrator.url, "hello", json!({ "name": "Ada" })).await?;
    let run = wait_final(&orchestrator.url, &run_id, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["greeting"], "Hello, Ada!");
    assert_eq!(run["target"], "host-a");

    let failing = enqueue(&orchestrator.url, "hello", json!({ "name": "" })).await?;
    let run = wait_final(&orchestrator.url, &failing, Duration::from_secs(60)).await?;
    assert_eq!(
        run["status"], "dead",
        "an empty name fails without retries: {run}"
    );
    assert_eq!(run["error"]["code"], "EMPTY_NAME");

    // An input over 64 KiB is stored and read back by the host: the
    // greeting holds the whole name, and being that long it comes back by
    // path too.
    let name = "A".repeat(70_000);
    let large = enqueue(&orchestrator.url, "hello", json!({ "name": name })).await?;
    let run = wait_final(&orchestrator.url, &large, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["inputPath"],
        format!("standalone/{large}/input.json").as_str()
    );
    let output_path = run["outputPath"].as_str().unwrap_or_default();
    let stored: Value = client()
        .get(format!("{}/api/storage/{output_path}", orchestrator.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        stored["content"]["greeting"].as_str(),
        Some(format!("Hello, {name}!").as_str())
    );
    // Its log names the attempt.
    let logs_path = run["attempts"][0]["logsPath"].as_str().unwrap_or_default();
    let log = client()
        .get(format!("{}/api/storage/{logs_path}", orchestrator.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(log.contains("(attempt 1)"), "{log}");
    Ok(())
}

/// A round's attempts reach a host in as few requests as fit under the
/// batch's byte limit (1 MiB): 30 small inputs and 20 of 60 KB (inline,
/// under 64 KiB) make about 1.25 MB of dispatches, so two requests; every
/// run gets its own input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rounds_attempts_reach_a_host_batched_under_the_size_limit() -> Result<()> {
    let database_url = database();
    let orchestrator = orchestrator(&database_url, 0);
    register(&orchestrator.url, "hello");
    let names: Vec<String> = (0..50)
        .map(|i| {
            let name = format!("guest-{i:02}-");
            if i % 5 < 2 {
                name + &"x".repeat(60_000)
            } else {
                name
            }
        })
        .collect();
    // Enqueued in two requests (each under the API's 1 MiB body limit)
    // before any host is up; the host's first round claims all 50.
    let mut run_ids = Vec::new();
    for half in names.chunks(25) {
        let tasks: Vec<Value> = half
            .iter()
            .map(|name| json!({ "taskId": "hello", "input": { "name": name } }))
            .collect();
        let answer = enqueue_batch(&orchestrator.url, &tasks).await?;
        ensure!(answer["queued"] == 25, "{answer}");
        for item in answer["results"].as_array().into_iter().flatten() {
            run_ids.push(item["runId"].as_str().context("a run id")?.to_owned());
        }
    }
    let _host = host_with_capacity(&orchestrator.url, "host-a", 64);
    wait_completed(&orchestrator.url, 50, Duration::from_secs(120)).await?;
    ensure!(run_ids.len() == names.len(), "{run_ids:?}");
    for (name, run_id) in names.iter().zip(&run_ids) {
        let run = wait_final(&orchestrator.url, run_id, Duration::from_secs(10)).await?;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(
            run["output"]["greeting"].as_str(),
            Some(format!("Hello, {name}!").as_str()),
            "run {run_id}"
        );
    }
    let metrics = client()
        .get(format!("{}/metrics", orchestrator.url))
        .send()
        .await?
        .text()
        .await?;
    for line in [
        "pipeweave_claims_total 50",
        "pipeweave_dispatch_duration_seconds_count 2",
        "pipeweave_dispatch_failures_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stores_its_assets_and_large_output_in_storage_and_a_failed_run_stores_only_its_log()
-> Result<()> {
    let database_url = database();
    let orchestrator = orchestrator(&database_url, 0);
    register(&orchestrator.url, "assets");
    register(&orchestrator.url, "misbehave");
    let _host = host(&orchestrator.url, "host-storage");
    let http = client();

    let run_id = enqueue(&orchestrator.url, "assets", json!({})).await?;
    let run = wait_final(&orchestrator.url, &run_id, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    for key in ["report.txt", "data.json", "scratch.bin"] {
        let asset = &run["assets"][key];
        let path = format!("runs/{run_id}/assets/{key}");
        assert_eq!(asset["path"], path.as_str(), "{run}");
        let stored = http
            .get(format!("{}/api/storage/{path}?raw=true", orchestrator.url))
            .send()
            .await?
            .bytes()
            .await?;
        assert_eq!(Some(stored.len() as u64), asset["size"].as_u64(), "{key}");
    }
    assert!(
        run["output"]["assets"].is_array(),
        "a small output stays inline: {run}"
    );

    let big = enqueue(
        &orchestrator.url,
        "misbehave",
        json!({ "mode": "huge_output", "mib": 1 }),
    )
    .await?;
    let run = wait_final(&orchestrator.url, &big, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    let output_path = format!("runs/{big}/outputs/{big}.json");
    assert_eq!(run["outputPath"], output_path.as_str(), "{run}");
    assert!(
        run.get("output").is_none(),
        "a large output travels by path"
    );
    assert!(run["outputSize"].as_u64().unwrap_or(0) > 1 << 20, "{run}");
    let stored: Value = http
        .get(format!("{}/api/storage/{output_path}", orchestrator.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        stored["content"]["data"].as_str().map(str::len),
        Some(1 << 20)
    );

    let failed = enqueue(&orchestrator.url, "misbehave", json!({ "mode": "fail" })).await?;
    let run = wait_final(&orchestrator.url, &failed, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "dead", "{run}");
    let run_dir = storage_dir().join("data/runs").join(&failed);
    for kept in ["outputs", "assets"] {
        assert!(
            !run_dir.join(kept).exists(),
            "a failed run leaves no {kept}"
        );
    }
    // Only its log, for the dead-letter queue.
    let logs_path = format!("runs/{failed}/logs/{failed}/1.jsonl");
    assert_eq!(run["attempts"][0]["logsPath"], logs_path.as_str(), "{run}");
    let log = std::fs::read_to_string(storage_dir().join("data").join(&logs_path))?;
    let first: Value = serde_json::from_str(log.lines().next().unwrap_or_default())?;
    assert_eq!(
        (first["level"].as_str(), first["message"].as_str()),
        (Some("debug"), Some("mode fail")),
        "{log}"
    );
    assert!(first["timestampMs"].as_u64().is_some(), "{log}");
    // The dead-letter entry shows it with the attempt.
    let entry: Value = client()
        .get(format!("{}/api/dlq/{failed}", orchestrator.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        entry["attemptHistory"][0]["logsPath"],
        logs_path.as_str(),
        "{entry}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_asset_streams_to_an_s3_server_while_the_hosts_memory_stays_bounded() -> Result<()>
{
    const SCRATCH_BYTES: u64 = 200 << 20;
    /// Growth of the host's peak RSS that fails the test: half the asset,
    /// so holding it whole (or even half of it) in memory cannot pass.
    const GROWTH_LIMIT: u64 = 100 << 20;
    let s3 = tokio::task::spawn_blocking(pipeweave_testkit::s3::S3Server::start).await?;
    let backends = json!([{
        "id": "s3", "provider": "minio", "endpoint": s3.endpoint(), "bucket": s3.bucket,
        "credentials": { "accessKey": s3.access_key, "secretKey": s3.secret_key }
    }])
    .to_string();
    let database_url = database();
    let orchestrator = orchestrator_with_env(
        &database_url,
        0,
        &[
            ("STORAGE_BACKENDS", &backends),
            ("DEFAULT_STORAGE_BACKEND_ID", "s3"),
        ],
    );
    register(&orchestrator.url, "assets");
    let host = Server::start_keeping_stderr(
        host_command(&orchestrator.url, "host-large", 1, &[]),
        Duration::from_secs(30),
    );

    // A small run first, so the module is fetched and loaded before the
    // measurement.
    let warm_up = enqueue(&orchestrator.url, "assets", json!({})).await?;
    let run = wait_final(&orchestrator.url, &warm_up, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");

    pipeweave_testkit::process::Memory::reset_peak(host.pid())?;
    let before = host.memory()?;
    let run_id = enqueue(
        &orchestrator.url,
        "assets",
        json!({ "scratchBytes": SCRATCH_BYTES }),
    )
    .await?;
    let run = wait_final(&orchestrator.url, &run_id, Duration::from_secs(280)).await?;
    let after = host.memory()?;
    assert_eq!(run["status"], "succeeded", "{run}");
    let path = format!("runs/{run_id}/assets/scratch.bin");
    let asset = &run["assets"]["scratch.bin"];
    assert_eq!(asset["path"], path.as_str(), "{run}");
    assert_eq!(asset["size"].as_u64(), Some(SCRATCH_BYTES), "{run}");
    assert_eq!(
        std::fs::metadata(s3.file(&path))?.len(),
        SCRATCH_BYTES,
        "the object is in the S3 server's bucket"
    );

    // Read it back through the orchestrator as a stream and check every
    // byte against the pattern the task wrote (byte i is i % 251).
    let mut response = client()
        .get(format!("{}/api/storage/{path}?raw=true", orchestrator.url))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let mut offset = 0_u64;
    while let Some(chunk) = response.chunk().await? {
        let wrong = chunk
            .iter()
            .zip(offset..)
            .find(|(byte, at)| u64::from(**byte) != at % 251);
        assert!(wrong.is_none(), "byte {wrong:?} differs from the pattern");
        offset += chunk.len() as u64;
    }
    assert_eq!(offset, SCRATCH_BYTES, "bytes read back");

    let dehydrated = host
        .stderr_lines()
        .into_iter()
        .find(|line| {
            line.contains("dehydrated")
                && pipeweave_testkit::process::log_field(line, "run_id") == Some(run_id.as_str())
        })
        .with_context(|| format!("no `dehydrated` line for {run_id} in the host's log"))?;
    let growth = after.peak.saturating_sub(before.rss);
    eprintln!(
        "host memory: {:.1} MiB resident before the {} MiB run, peak {:.1} MiB during it \
         (+{:.1} MiB); upload {} ms",
        mib(before.rss),
        SCRATCH_BYTES >> 20,
        mib(after.peak),
        mib(growth),
        pipeweave_testkit::process::log_field(&dehydrated, "elapsed_ms").unwrap_or("?"),
    );
    assert!(
        growth < GROWTH_LIMIT,
        "the host's peak resident memory grew by {:.1} MiB while storing a {} MiB asset",
        mib(growth),
        SCRATCH_BYTES >> 20
    );
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Waits until a run is running.
async fn wait_running(url: &str, run_id: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let run: Value = client()
            .get(format!("{url}/api/task-runs/{run_id}"))
            .send()
            .await?
            .json()
            .await?;
        if run["status"] == "running" {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "never started: {run}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cancel(url: &str, run_id: &str, body: Value) -> Result<(u16, Value)> {
    let response = client()
        .post(format!("{url}/api/task-runs/{run_id}/cancel"))
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_and_a_spinning_run_on_a_host_are_each_cancelled_within_a_second() -> Result<()>
{
    let database_url = database();
    let orchestrator = orchestrator(&database_url, 0);
    register(&orchestrator.url, "misbehave");
    let _host = host_with_capacity(&orchestrator.url, "host-one", 1);
    let spinning = enqueue(&orchestrator.url, "misbehave", json!({ "mode": "spin" })).await?;
    wait_running(&orchestrator.url, &spinning).await?;
    // The host's one slot is taken, so this one waits in the queue.
    let quick = json!({ "mode": "sleep", "ms": 1 });
    let queued = enqueue(&orchestrator.url, "misbehave", quick.clone()).await?;

    let started = std::time::Instant::now();
    let (status, answer) = cancel(
        &orchestrator.url,
        &queued,
        json!({ "cancelledBy": "ops@example.com", "reason": "not needed" }),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["previousStatus"], "queued", "{answer}");
    let run = wait_final(&orchestrator.url, &queued, Duration::from_secs(1)).await?;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["cancelledBy"], "ops@example.com", "{run}");
    assert_eq!(run["cancelReason"], "not needed", "{run}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let (status, again) = cancel(&orchestrator.url, &queued, json!({})).await?;
    assert_eq!(status, 409, "cancelling twice: {again}");

    // The spinning guest never yields; its task's timeout is 5 s. The host
    // interrupts it on the cancel notice, which frees its only slot: a new
    // run completes long before the timeout could have done it.
    let started = std::time::Instant::now();
    let (status, answer) = cancel(&orchestrator.url, &spinning, json!({})).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["previousStatus"], "running", "{answer}");
    assert_eq!(answer["cancelledBy"], "api", "{answer}");
    let next = enqueue(&orchestrator.url, "misbehave", quick).await?;
    let run = wait_final(&orchestrator.url, &next, Duration::from_secs(30)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    let freed_after = started.elapsed();
    assert!(
        freed_after < Duration::from_millis(1500),
        "the host's slot came free {freed_after:?} after the cancel"
    );
    let run = wait_final(&orchestrator.url, &spinning, Duration::from_secs(1)).await?;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["attempts"][0]["outcome"], "cancelled", "{run}");
    // The host sends no callback for it, and nothing changes it later.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let counts = queue_status(&orchestrator.url).await?;
    assert_eq!(
        (counts["cancelled"].clone(), counts["completed"].clone()),
        (json!(2), json!(1)),
        "{counts}"
    );
    Ok(())
}

/// A host with one slot and a prefetch of one holds the second attempt
/// while the first runs; it starts the moment the slot frees, reports that
/// start, and is timed from it: each run sleeps 4 s under the task's 5 s
/// timeout, so the held one ends about 8 s after its claim, past the
/// deadline and grace that the claim alone would have set (7 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetching_host_holds_an_attempt_and_times_it_from_its_real_start() -> Result<()> {
    let database_url = database();
    let orchestrator = orchestrator(&database_url, 0);
    register(&orchestrator.url, "misbehave");
    let _host = host_with_args(&orchestrator.url, "host-held", 1, &["--prefetch", "1"]);
    let sleep = json!({ "mode": "sleep", "ms": 4000 });
    let first = enqueue(&orchestrator.url, "misbehave", sleep.clone()).await?;
    wait_running(&orchestrator.url, &first).await?;
    let held = enqueue(&orchestrator.url, "misbehave", sleep).await?;
    // Dispatched to the host at once, though its only slot is taken.
    wait_running(&orchestrator.url, &held).await?;
    let first = wait_final(&orchestrator.url, &first, Duration::from_secs(30)).await?;
    assert_eq!(first["status"], "succeeded", "{first}");
    let held = wait_final(&orchestrator.url, &held, Duration::from_secs(30)).await?;
    assert_eq!(held["status"], "succeeded", "{held}");
    assert_eq!(
        held["attempts"].as_array().map(Vec::len),
        Some(1),
        "no timeout, no retry: {held}"
    );
    let started = |run: &Value| {
        chrono::DateTime::parse_from_rfc3339(run["startedAt"].as_str().unwrap_or_default())
    };
    let waited = started(&held)? - started(&first)?;
    assert!(
        waited >= chrono::Duration::milliseconds(3500),
        "the held attempt's start is when its slot freed, {waited} after the first's"
    );
    Ok(())
}

/// A TCP proxy to `target` that forwards both ways until `frozen` is set,
/// and from then on holds every byte without closing anything: a database
/// that stopped answering.
async fn freezable_proxy(
    target: std::net::SocketAddr,
) -> Result<(std::net::SocketAddr, Arc<std::sync::atomic::AtomicBool>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(forward(client_read, server_write, flag.clone()));
            tokio::spawn(forward(server_read, client_write, flag.clone()));
        }
    });
    Ok((address, frozen))
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(n) = from.read(&mut buffer).await {
        if n == 0 {
            return;
        }
        while frozen.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// SIGTERM stops the orchestrator within its shutdown grace even when the
/// database stops answering mid-request: the request and the scheduler's
/// round would otherwise wait for it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_stops_within_its_grace_when_the_database_stops_answering() -> Result<()> {
    let mut url = reqwest::Url::parse(&database())?;
    let host = url
        .host_str()
        .context("no host in the database URL")?
        .to_owned();
    let target = tokio::net::lookup_host((host.as_str(), url.port().unwrap_or(5432)))
        .await?
        .next()
        .context("the database host does not resolve")?;
    let (proxy, frozen) = freezable_proxy(target).await?;
    url.set_host(Some("127.0.0.1"))?;
    url.set_port(Some(proxy.port()))
        .map_err(|()| anyhow::anyhow!("cannot set the port"))?;
    let mut orchestrator = orchestrator(url.as_str(), 0);
    let status = client()
        .get(format!("{}/api/queue/status", orchestrator.url))
        .send()
        .await?
        .status();
    ensure!(status.is_success(), "before the freeze: {status}");

    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let hanging = tokio::spawn(
        client()
            .get(format!("{}/api/queue/status", orchestrator.url))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        !hanging.is_finished(),
        "the request did not wait for the database"
    );
    let grace = pipeweave_orchestrator::SHUTDOWN_GRACE;
    let started = std::time::Instant::now();
    let exit = tokio::task::block_in_place(|| orchestrator.terminate(grace * 3))?;
    let took = started.elapsed();
    hanging.abort();
    frozen.store(false, std::sync::atomic::Ordering::SeqCst);
    let exit = exit.with_context(|| format!("still running {took:?} after SIGTERM"))?;
    assert!(exit.success(), "{exit}");
    assert!(
        took < grace + Duration::from_secs(2),
        "stopped {took:?} after SIGTERM; the grace is {grace:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_api_key_register_and_host_send_it_and_a_task_runs() -> Result<()> {
    const KEY: &str = "0123456789abcdef-host-key";
    let database_url = database();
    let orchestrator = orchestrator_with_env(&database_url, 0, &[("PIPEWEAVE_API_KEY", KEY)]);
    // Without the key, registration is refused and says what to do.
    let wasm = pipeweave_testkit::guest("hello");
    let refused = pipeweave(&[
        "register",
        path_str(&wasm),
        "--orchestrator",
        &orchestrator.url,
    ]);
    assert!(!refused.status.success());
    let message = super::stderr(&refused);
    assert!(
        message.contains("401") && message.contains("API key"),
        "{message}"
    );

    register_with_args(&orchestrator.url, "hello", &["--api-key", KEY]);
    let _host = host_with_args(&orchestrator.url, "host-key", 2, &["--api-key", KEY]);
    let answer: Value = client()
        .post(format!("{}/api/queue/task", orchestrator.url))
        .bearer_auth(KEY)
        .json(&json!({ "taskId": "hello", "input": { "name": "Key" } }))
        .send()
        .await?
        .json()
        .await?;
    let run_id = answer["runId"]
        .as_str()
        .with_context(|| format!("{answer}"))?;
    let run = wait_final(&orchestrator.url, run_id, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["target"], "host-key");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_run_loses_the_attempt_and_another_host_completes_the_run() -> Result<()>
{
    let database_url = database();
    let orchestrator = orchestrator(&database_url, 0);
    register(&orchestrator.url, "misbehave");
    let mut first = host(&orchestrator.url, "host-first");
    let run_id = enqueue(
        &orchestrator.url,
        "misbehave",
        json!({ "mode": "sleep", "ms": 2000 }),
    )
    .await?;
    wait_running(&orchestrator.url, &run_id).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill();
    let _second = host(&orchestrator.url, "host-second");
    let run = wait_final(&orchestrator.url, &run_id, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["target"], "host-second");
    assert_eq!(
        run["attempts"][0]["error"]["reason"], "heartbeat_timeout",
        "{run}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_killed_mid_dispatch_restarts_and_every_run_completes_once() -> Result<()>
{
    const RUNS: usize = 150;
    let database_url = database();
    let port = free_port();
    let mut first = orchestrator(&database_url, port);
    let url = first.url.clone();
    // Heartbeats every second, so an attempt is lost only after 2 s of
    // silence: this test is about the orchestrator's crash, and on a busy
    // machine a 300 ms interval can lose attempts to CPU starvation alone.
    let worker = python_worker(&url, &["--sleep-heartbeat-ms", "1000"]);
    let tasks: Vec<Value> = (0..RUNS)
        .map(|_| json!({ "taskId": "sleep", "input": { "ms": 200 } }))
        .collect();
    let answer = enqueue_batch(&url, &tasks).await?;
    ensure!(answer["queued"] == RUNS, "{answer}");

    // Kill it while runs are being claimed, dispatched and completed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = queue_status(&url).await?;
        if status["completed"].as_i64().unwrap_or(0) >= 20 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no progress: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = orchestrator(&database_url, port);
    wait_completed(&second.url, RUNS as i64, Duration::from_secs(120)).await?;

    let stats: Value = client()
        .get(format!("{}/stats", worker.url))
        .send()
        .await?
        .json()
        .await?;
    let executions = stats["executions"].as_object().context("no executions")?;
    assert_eq!(executions.len(), RUNS, "every run executed");
    let repeated: Vec<_> = executions.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "runs executed more than once: {repeated:?}"
    );
    let succeeded = pipeweave_testkit::postgres::query(
        &database_url,
        "select count(*) from runs where state = 'succeeded'",
    );
    assert_eq!(succeeded, RUNS.to_string(), "every run succeeded once");
    Ok(())
}

/// A worker inside the test process: it records each dispatch and calls
/// back at once.
#[derive(Debug, Clone, Default)]
struct RecordingWorker {
    /// (runId, attempt) → dispatches received.
    dispatches: Arc<Mutex<HashMap<(String, u64), u32>>>,
    /// Callback host:port → dispatches received from that orchestrator.
    by_orchestrator: Arc<Mutex<HashMap<String, u32>>>,
}

async fn recording_worker() -> Result<(String, RecordingWorker)> {
    use axum::routing::post;
    let worker = RecordingWorker::default();
    let recorder = worker.clone();
    let http = client();
    let app = axum::Router::new().route(
        "/tasks/{task_id}",
        post(move |axum::Json(dispatch): axum::Json<Value>| {
            let recorder = recorder.clone();
            let http = http.clone();
            async move {
                let run_id = dispatch["runId"].as_str().unwrap_or_default().to_owned();
                let attempt = dispatch["attempt"].as_u64().unwrap_or(0);
                let callback_url = dispatch["callbackUrl"].as_str().unwrap_or_default().to_owned();
                if let Ok(mut seen) = recorder.dispatches.lock() {
                    *seen.entry((run_id, attempt)).or_default() += 1;
                }
                let origin = callback_url.split('/').nth(2).unwrap_or_default().to_owned();
                if let Ok(mut by) = recorder.by_orchestrator.lock() {
                    *by.entry(origin).or_default() += 1;
                }
                let body = json!({ "status": "success", "attempt": attempt, "attemptToken": dispatch["attemptToken"], "output": {} });
                tokio::spawn(async move {
                    for _ in 0..50 {
                        match http.post(&callback_url).json(&body).send().await {
                            Ok(r) if !r.status().is_server_error() => return,
                            _ => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                    }
                });
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, worker))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_on_one_database_dispatch_every_attempt_exactly_once() -> Result<()> {
    const RUNS: usize = 10_000;
    let database_url = database();
    let first = orchestrator(&database_url, 0);
    let second = orchestrator(&database_url, 0);
    let (worker_url, worker) = recording_worker().await?;
    let registration = json!({
        "serviceId": "recorder", "baseUrl": worker_url, "capacity": 400,
        "tasks": [{ "id": "record", "codeHash": "r1", "heartbeatIntervalMs": 60000 }]
    });
    let registered = client()
        .post(format!("{}/api/register", first.url))
        .json(&registration)
        .send()
        .await?;
    ensure!(
        registered.status().is_success(),
        "register: {}",
        registered.text().await?
    );
    for chunk in 0..RUNS / 1000 {
        let tasks: Vec<Value> = (0..1000)
            .map(|i| json!({ "taskId": "record", "input": { "n": chunk * 1000 + i } }))
            .collect();
        let target = if chunk % 2 == 0 {
            &first.url
        } else {
            &second.url
        };
        let answer = enqueue_batch(target, &tasks).await?;
        ensure!(answer["queued"] == 1000, "{answer}");
    }
    wait_completed(&first.url, RUNS as i64, Duration::from_secs(300)).await?;

    let dispatches = worker
        .dispatches
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert_eq!(dispatches.len(), RUNS, "one attempt per run");
    assert!(
        dispatches
            .iter()
            .all(|((_, attempt), n)| *attempt == 1 && *n == 1),
        "an attempt was dispatched twice"
    );
    let by_orchestrator = worker
        .by_orchestrator
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert_eq!(
        by_orchestrator.len(),
        2,
        "both orchestrators dispatched: {by_orchestrator:?}"
    );
    let first_attempts = pipeweave_testkit::postgres::query(
        &database_url,
        "select count(*) from runs where state = 'succeeded' and attempt = 1",
    );
    assert_eq!(
        first_attempts,
        RUNS.to_string(),
        "every run succeeded on its first attempt"
    );
    let other_attempts =
        pipeweave_testkit::postgres::query(&database_url, "select count(*) from attempts");
    assert_eq!(other_attempts, "0", "no attempt failed");
    Ok(())
}

#[test]
fn dev_runs_a_task_through_the_queue_and_leaves_nothing_behind() {
    let hello = pipeweave_testkit::guest("hello");
    let output = pipeweave(&[
        "dev",
        path_str(&hello),
        "--input",
        r#"{"name": "Ada"}"#,
        "--once",
        "--port",
        "0",
    ]);
    let stderr = super::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    let printed: Value = serde_json::from_str(&super::stdout(&output)).unwrap_or_default();
    assert_eq!(printed["greeting"], "Hello, Ada!", "{stderr}");
    for step in [
        "PostgreSQL",
        "orchestrator",
        "host",
        "registered",
        "succeeded",
        "stopped",
    ] {
        assert!(stderr.contains(step), "no {step:?} in:\n{stderr}");
    }
    let cluster_port = stderr
        .split("private cluster on 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    assert!(!cluster_port.is_empty(), "{stderr}");
    assert!(
        TcpListener::bind(("127.0.0.1", cluster_port.parse::<u16>().unwrap_or(0))).is_ok(),
        "PostgreSQL still listens on {cluster_port}"
    );
}

#[test]
fn dev_stops_everything_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    // In a folder with no project: nothing to build, the rest serves.
    let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipeweave"))
        .args(["dev", "--port", "0"])
        .current_dir(empty.path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start pipeweave dev: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Press Ctrl-C to stop") {
            break;
        }
    }
    assert!(seen.contains("Press Ctrl-C"), "{seen}");
    let data_dirs = |pid: u32| {
        std::fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("pipeweave-pg-{pid}-"))
            })
            .count()
    };
    let pid = child.id();
    assert_eq!(
        data_dirs(pid),
        1,
        "a private cluster directory while running"
    );
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "exit {status}: {}", rest.join("\n"));
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    assert_eq!(data_dirs(pid), 0, "the cluster directory is removed");
    let postgres_left = Command::new("pgrep")
        .args(["-f", &format!("pipeweave-pg-{pid}-")])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    assert!(
        postgres_left.is_empty(),
        "postgres still running: {}",
        String::from_utf8_lossy(&postgres_left)
    );
}

/// Waits until a pipeline run ends and returns it.
async fn wait_pipeline(url: &str, run_id: &str, patience: Duration) -> Result<Value> {
    poll(url, &format!("/api/runs/{run_id}"), patience, |run| {
        run["status"] != "running"
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_pdf_pipeline_runs_on_a_host_and_the_python_worker_with_real_storage() -> Result<()>
{
    let tools = tokio::task::spawn_blocking(pipeweave_testkit::python_tools).await?;
    let database_url = database();
    let orchestrator = orchestrator(&database_url, 0);
    let url = orchestrator.url.clone();
    for task in ["download", "extract-text", "summarize", "archive"] {
        register(&url, task);
    }
    let _host = host(&url, "host-pdf");
    // extract-tables and notify, served by the plain HTTP worker.
    let _worker = pipeweave_testkit::process::python_worker_on(
        &tools.join("python"),
        &url,
        &["--secret-key", SECRET],
    );
    let http = client();
    let answer: Value = http
        .put(format!("{url}/api/pipelines/pdf-processor"))
        .json(&json!({ "entryTasks": ["download"], "tasks": [
            "download", "extract-text", "extract-tables", "summarize", "notify", "archive"] }))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(answer["valid"], true, "{answer}");
    let dry: Value = http
        .post(format!("{url}/api/pipelines/pdf-processor/dry-run"))
        .send()
        .await?
        .json()
        .await?;
    assert!(
        dry["text"]
            .as_str()
            .unwrap_or_default()
            .contains("3. summarize (join, waits for: extract-tables, extract-text)"),
        "{dry}"
    );

    let trigger = |input: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let answer: Value = http
                .post(format!("{url}/api/pipelines/pdf-processor/trigger"))
                .json(&json!({ "input": input }))
                .send()
                .await?
                .json()
                .await?;
            answer["pipelineRunId"]
                .as_str()
                .map(str::to_owned)
                .context(format!("no pipelineRunId: {answer}"))
        }
    };
    let run_id = trigger(json!({ "pdfUrl": "https://example.com/doc.pdf", "pages": 4 })).await?;
    let run = wait_pipeline(&url, &run_id, Duration::from_secs(120)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    let task_run = |name: &str| {
        run["taskRuns"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["taskId"] == name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(run["taskRuns"].as_array().map(Vec::len), Some(6), "{run}");
    // 4 pages of 13 words and 2 table rows each: the WebAssembly join got
    // the text from extract-text (which read download's asset on the host)
    // and the rows from the Python worker (which read it through its token).
    assert_eq!(
        task_run("summarize")["output"]["summary"],
        "https://example.com/doc.pdf: 4 pages, 52 words, 8 table rows"
    );
    assert_eq!(task_run("extract-tables")["target"], "python-worker");
    assert_eq!(task_run("download")["target"], "host-pdf");
    assert_eq!(
        task_run("notify")["output"]["notified"],
        task_run("summarize")["output"]["summary"]
    );
    // archive stored its asset under the pipeline run, in its own folder.
    let archive = task_run("archive");
    let path = archive["assets"]["archive.json"]["path"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        path,
        format!(
            "runs/{run_id}/assets/{}/archive.json",
            archive["runId"].as_str().unwrap_or_default()
        )
    );
    let stored: Value = http
        .get(format!("{url}/api/storage/{path}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        stored["content"]["summary"],
        task_run("summarize")["output"]["summary"]
    );

    // summarize selects only archive when the input says so.
    let quiet = trigger(json!({ "pdfUrl": "https://example.com/q.pdf", "notify": false })).await?;
    let run = wait_pipeline(&url, &quiet, Duration::from_secs(120)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    let ran: Vec<&str> = run["taskRuns"]
        .as_array()
        .map(|runs| runs.iter().filter_map(|r| r["taskId"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        !ran.contains(&"notify") && ran.contains(&"archive"),
        "{ran:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_killed_amid_pipeline_completions_loses_no_join_and_fires_none_twice()
-> Result<()> {
    const RUNS: usize = 30;
    const BRANCHES: usize = 6;
    let database_url = database();
    let port = free_port();
    let mut first = orchestrator(&database_url, port);
    let url = first.url.clone();
    let (worker_url, _worker) = recording_worker().await?;
    let branches: Vec<String> = (0..BRANCHES).map(|i| format!("branch-{i}")).collect();
    // Heartbeats every second: an attempt claimed just before the kill and
    // never sent is lost after 2 s and retried.
    let task = |id: &str, next: Value| json!({ "id": id, "codeHash": "1", "allowedNext": next, "heartbeatIntervalMs": 1000 });
    let mut tasks = vec![task("split", json!(branches))];
    for branch in &branches {
        tasks.push(task(branch, json!(["join"])));
    }
    tasks.push(task("join", json!(["end"])));
    tasks.push(task("end", json!([])));
    let http = client();
    let registered = http
        .post(format!("{url}/api/register"))
        .json(&json!({ "serviceId": "recorder", "baseUrl": worker_url, "capacity": 32, "tasks": tasks }))
        .send()
        .await?;
    ensure!(
        registered.status().is_success(),
        "{}",
        registered.text().await?
    );
    let registered = http
        .put(format!("{url}/api/pipelines/fan"))
        .json(&json!({ "entryTasks": ["split"] }))
        .send()
        .await?;
    ensure!(
        registered.status().is_success(),
        "{}",
        registered.text().await?
    );
    for i in 0..RUNS {
        let triggered = http
            .post(format!("{url}/api/pipelines/fan/trigger"))
            .json(&json!({ "input": { "i": i } }))
            .send()
            .await?;
        ensure!(
            triggered.status().is_success(),
            "{}",
            triggered.text().await?
        );
    }

    // SIGKILL while branches complete and joins are decided.
    let count = |sql: &str| pipeweave_testkit::postgres::query(&database_url, sql);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let joined: i64 = count("select count(*) from runs where task_id = 'join'")
            .parse()
            .unwrap_or(0);
        if joined >= 3 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no join within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    let in_flight = count("select count(*) from pipeline_runs where state = 'running'");
    eprintln!("killed with {in_flight} of {RUNS} pipeline runs under way");
    ensure!(in_flight != "0", "the kill came after every run had ended");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = orchestrator(&database_url, port);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let running = count("select count(*) from pipeline_runs where state = 'running'");
        if running == "0" {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{running} pipeline runs still running after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);
    assert_eq!(
        count("select count(*) from pipeline_runs where state = 'succeeded'"),
        RUNS.to_string(),
        "every pipeline run succeeded"
    );
    assert_eq!(
        count("select count(*) from runs where task_id = 'join'"),
        RUNS.to_string(),
        "one join per pipeline run"
    );
    assert_eq!(
        count("select count(*) from runs where state = 'succeeded'"),
        (RUNS * (BRANCHES + 3)).to_string(),
        "every task of every pipeline run succeeded once"
    );
    Ok(())
}
