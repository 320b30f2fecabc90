//! End to end with a real worker process: the Python example worker
//! registers, receives dispatches over HTTP, heartbeats and calls back.

use std::time::Duration;

use anyhow::Result;
use pipeweave_orchestrator::config::Mode;
use pipeweave_testkit::process::python_worker;
use serde_json::json;

use crate::{TestOrchestrator, worker_stats};

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_end_to_end_through_the_python_worker() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Standalone).await?;
    let _worker = python_worker(&orchestrator.url, &[]);
    let run_id = orchestrator
        .enqueue("greet", json!({ "name": "Ada" }))
        .await?;
    let run = orchestrator.wait_final(&run_id, PATIENCE).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], json!({ "greeting": "Hello, Ada!" }));
    assert_eq!(run["codeVersion"], 1);
    assert_eq!(run["target"], "python-worker");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_succeeds_on_retry_and_sees_its_earlier_errors() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Standalone).await?;
    let _worker = python_worker(&orchestrator.url, &[]);
    let run_id = orchestrator
        .enqueue("flaky", json!({ "failTimes": 2 }))
        .await?;
    let run = orchestrator.wait_final(&run_id, PATIENCE).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["output"],
        json!({ "attempt": 3, "previousErrorCodes": ["FLAKY", "FLAKY"] })
    );
    let outcomes: Vec<_> = run["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["outcome"].clone())
        .collect();
    assert_eq!(
        outcomes,
        [json!("failed"), json!("failed"), json!("succeeded")]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_always_fails_ends_dead_after_its_retries() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Standalone).await?;
    let _worker = python_worker(&orchestrator.url, &[]);
    let run_id = orchestrator.enqueue("always-fails", json!({})).await?;
    let run = orchestrator.wait_final(&run_id, PATIENCE).await?;
    assert_eq!(run["status"], "dead", "{run}");
    assert_eq!(run["attempt"], 3, "retries: 2 means three attempts");
    assert_eq!(run["error"]["code"], "ALWAYS");
    let (_, counts) = orchestrator.get("/api/queue/status").await?;
    assert_eq!(counts["dlq"], 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_is_never_exceeded_at_the_worker() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Standalone).await?;
    let worker = python_worker(&orchestrator.url, &["--limit-concurrency", "2"]);
    let tasks: Vec<_> = (0..12)
        .map(|_| json!({ "taskId": "limited", "input": { "ms": 150 } }))
        .collect();
    let (_, answer) = orchestrator
        .post("/api/queue/batch", &json!({ "tasks": tasks }))
        .await?;
    for result in answer["results"].as_array().into_iter().flatten() {
        let run = orchestrator
            .wait_final(result["runId"].as_str().unwrap_or_default(), PATIENCE)
            .await?;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let stats = worker_stats(&worker).await?;
    assert_eq!(
        stats["maxConcurrent"]["limited"], 2,
        "the worker counted {stats}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_run_does_not_start_early() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Standalone).await?;
    let _worker = python_worker(&orchestrator.url, &[]);
    let (_, answer) = orchestrator
        .post(
            "/api/queue/task",
            &json!({ "taskId": "noop", "delayMs": 1500 }),
        )
        .await?;
    let run = orchestrator
        .wait_final(answer["runId"].as_str().unwrap_or_default(), PATIENCE)
        .await?;
    assert_eq!(run["status"], "succeeded");
    let created: chrono::DateTime<chrono::Utc> = serde_json::from_value(run["createdAt"].clone())?;
    let started: chrono::DateTime<chrono::Utc> = serde_json::from_value(run["startedAt"].clone())?;
    assert!(
        started - created >= chrono::Duration::milliseconds(1500),
        "started {} ms after enqueue",
        (started - created).num_milliseconds()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_is_replaced_and_the_run_retried_after_the_heartbeat_timeout()
-> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Standalone).await?;
    let mut first = python_worker(&orchestrator.url, &[]);
    let run_id = orchestrator.enqueue("sleep", json!({ "ms": 1500 })).await?;
    // Wait for the first attempt to be running on the first worker.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stats = worker_stats(&first).await?;
        if stats["executions"][&run_id] == 1 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never dispatched: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let second = python_worker(&orchestrator.url, &[]);
    let run = orchestrator.wait_final(&run_id, PATIENCE).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["attempts"][0]["error"]["reason"], "heartbeat_timeout",
        "{run}"
    );
    // A dispatch may have hit the dead worker before the new one
    // registered; the service then gets no dispatches until it registers
    // again, so that costs one attempt, not all of them.
    assert!(
        run["attempt"]
            .as_i64()
            .is_some_and(|a| (2..=3).contains(&a)),
        "{run}"
    );
    assert_eq!(worker_stats(&second).await?["executions"][&run_id], 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_serverless_mode_runs_wait_for_a_tick() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let _worker = python_worker(&orchestrator.url, &[]);
    let run_id = orchestrator
        .enqueue("greet", json!({ "name": "Tick" }))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, run) = orchestrator
        .get(&format!("/api/task-runs/{run_id}"))
        .await?;
    assert_eq!(
        run["status"], "queued",
        "nothing runs without a tick: {run}"
    );

    let (status, tick) = orchestrator.post("/api/tick", &json!({})).await?;
    assert_eq!(status, 200, "{tick}");
    assert_eq!(
        (tick["claimed"].clone(), tick["dispatched"].clone()),
        (json!(1), json!(1)),
        "{tick}"
    );
    let run = orchestrator.wait_final(&run_id, PATIENCE).await?;
    assert_eq!(run["output"], json!({ "greeting": "Hello, Tick!" }));

    let (_, idle) = orchestrator.post("/api/tick", &json!({})).await?;
    assert_eq!(idle["claimed"], 0, "{idle}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_mode_lets_a_running_attempt_finish_and_starts_nothing_new() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Standalone).await?;
    let worker = python_worker(&orchestrator.url, &[]);
    let running = orchestrator.enqueue("sleep", json!({ "ms": 1500 })).await?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while worker_stats(&worker).await?["executions"][&running] != 1 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never dispatched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, entered) = orchestrator
        .post(
            "/api/maintenance/enter",
            &json!({ "reason": "database upgrade" }),
        )
        .await?;
    assert_eq!(status, 200, "{entered}");
    assert_eq!(entered["enabled"], true);
    assert_eq!(entered["reason"], "database upgrade");
    assert_eq!(entered["runningAttempts"], 1);
    let waiting = orchestrator
        .enqueue("greet", json!({ "name": "Grace" }))
        .await?;

    let (_, info) = orchestrator.get("/api/info").await?;
    assert_eq!(info["maintenance"]["enabled"], true, "{info}");
    assert_eq!(info["maintenance"]["reason"], "database upgrade", "{info}");
    assert_eq!(info["mode"], "standalone", "{info}");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"), "{info}");
    assert_eq!(info["queue"]["running"], 1, "{info}");
    assert_eq!(info["queue"]["pending"], 1, "{info}");
    let (_, health) = orchestrator.get("/health").await?;
    assert_eq!(health["maintenance"], true, "{health}");

    // The attempt that was running finishes normally …
    let finished = orchestrator.wait_final(&running, PATIENCE).await?;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    // … while the new run is not started, across many scheduler polls
    // (every 100 ms here) and wake-ups.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, still) = orchestrator
        .get(&format!("/api/task-runs/{waiting}"))
        .await?;
    assert_eq!(still["status"], "queued", "{still}");
    assert!(worker_stats(&worker).await?["executions"][&waiting].is_null());

    let (status, exited) = orchestrator
        .post("/api/maintenance/exit", &json!({}))
        .await?;
    assert_eq!(status, 200, "{exited}");
    assert_eq!(exited["enabled"], false);
    let run = orchestrator.wait_final(&waiting, PATIENCE).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_the_api_key_registers_and_runs_tasks() -> Result<()> {
    const KEY: &str = "k3y-for-the-python-worker-0123";
    let orchestrator = TestOrchestrator::start_with(Mode::Standalone, |config| {
        config.api_key = Some(KEY.to_owned());
    })
    .await?;
    let _worker = python_worker(&orchestrator.url, &["--api-key", KEY]);
    let queued: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/queue/task", orchestrator.url))
        .bearer_auth(KEY)
        .json(&json!({ "taskId": "greet", "input": { "name": "Key" } }))
        .send()
        .await?
        .json()
        .await?;
    let run_id = queued["runId"].as_str().unwrap_or_default();
    let run = orchestrator.wait_final(run_id, PATIENCE).await?;
    assert_eq!(run["output"], json!({ "greeting": "Hello, Key!" }), "{run}");
    Ok(())
}
