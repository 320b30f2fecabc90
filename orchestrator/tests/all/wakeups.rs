//! What wakes the scheduler besides its poll: a run queued behind a full
//! target is dispatched as soon as an attempt there ends, not at the next
//! poll (pipeweave-bench's e2e scenario found them waiting a whole poll
//! interval per batch).

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pipeweave_orchestrator::config::Mode;
use serde_json::json;

use crate::TestOrchestrator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_frees_a_slot_dispatches_the_next_run_without_waiting_for_the_poll()
-> Result<()> {
    // A poll so long that only a wake-up can explain a prompt dispatch.
    let orchestrator = TestOrchestrator::start_with(Mode::Standalone, |config| {
        config.poll_interval = Duration::from_secs(120);
    })
    .await?;
    let (worker, mut dispatches) = crate::recording_worker().await?;
    let (status, answer) = orchestrator
        .post(
            "/api/register",
            &json!({ "serviceId": "w", "baseUrl": worker, "capacity": 1,
                     "tasks": [{ "id": "t", "codeHash": "t-v1" }] }),
        )
        .await?;
    anyhow::ensure!(status == 200, "register: {answer}");
    let mut queued = Vec::new();
    for n in 0..4 {
        queued.push(orchestrator.enqueue("t", json!({ "n": n })).await?);
    }
    // Each ending, whether success or failure for good, frees the one slot;
    // the next run must arrive well within the poll interval.
    for n in 0..4 {
        let dispatch = tokio::time::timeout(Duration::from_secs(20), dispatches.recv())
            .await
            .with_context(|| {
                format!("dispatch {n} did not arrive within 20 s (the poll is 120 s)")
            })?
            .context("the worker stopped")?;
        let run_id = dispatch["runId"].as_str().unwrap_or_default().to_owned();
        let body = if n % 2 == 0 {
            json!({ "status": "success", "attempt": dispatch["attempt"],
                    "attemptToken": dispatch["attemptToken"], "output": { "n": n } })
        } else {
            json!({ "status": "failure", "attempt": dispatch["attempt"],
                    "attemptToken": dispatch["attemptToken"],
                    "error": { "message": "no", "code": "NO", "retryable": false } })
        };
        let (status, answer) = orchestrator
            .post(&format!("/api/callback/{run_id}"), &body)
            .await?;
        if status != 200 {
            bail!("callback answered {status}: {answer}");
        }
    }
    for run_id in &queued {
        let run = orchestrator
            .wait_final(run_id, Duration::from_secs(10))
            .await?;
        assert!(
            matches!(run["status"].as_str(), Some("succeeded" | "dead")),
            "{run}"
        );
    }
    Ok(())
}
