//! Cancelling a pipeline run as a whole (`POST /api/runs/{id}/cancel`) and
//! reading a task run's attempt logs (`GET /api/task-runs/{id}/logs`), with
//! the test acting as the worker: scheduler rounds through `POST
//! /api/tick`, callbacks by hand, log objects written to the orchestrator's
//! own storage backend as a host would write them.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pipeweave_orchestrator::config::Mode;
use pipeweave_storage::object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::TestOrchestrator;

/// Registers `tasks` (`(id, allowedNext)`) for a recording worker, with one
/// retry 1 ms after a failure.
async fn start(tasks: &[(&str, &[&str])]) -> Result<(TestOrchestrator, UnboundedReceiver<Value>)> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let (worker, dispatches) = crate::recording_worker().await?;
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|(id, next)| {
            json!({ "id": id, "codeHash": format!("{id}-v1"), "allowedNext": next,
                    "retries": 1, "retryDelayMs": 1 })
        })
        .collect();
    let (status, answer) = orchestrator
        .post(
            "/api/register",
            &json!({ "serviceId": "w", "baseUrl": worker, "tasks": tasks }),
        )
        .await?;
    if status != 200 {
        bail!("register answered {status}: {answer}");
    }
    Ok((orchestrator, dispatches))
}

/// One scheduler round; returns what it dispatched.
async fn round(
    orchestrator: &TestOrchestrator,
    dispatches: &mut UnboundedReceiver<Value>,
) -> Result<Vec<Value>> {
    let (status, report) = orchestrator.post("/api/tick", &json!({})).await?;
    if status != 200 {
        bail!("tick answered {status}: {report}");
    }
    let mut sent = Vec::new();
    while (sent.len() as u64) < report["dispatched"].as_u64().unwrap_or(0) {
        let dispatch = tokio::time::timeout(Duration::from_secs(10), dispatches.recv())
            .await?
            .context("the worker stopped")?;
        sent.push(dispatch);
    }
    Ok(sent)
}

async fn callback(orchestrator: &TestOrchestrator, dispatch: &Value, body: Value) -> Result<u16> {
    let mut body = body;
    body["attempt"] = dispatch["attempt"].clone();
    body["attemptToken"] = dispatch["attemptToken"].clone();
    let run_id = dispatch["runId"].as_str().unwrap_or_default();
    let (status, _) = orchestrator
        .post(&format!("/api/callback/{run_id}"), &body)
        .await?;
    Ok(status)
}

async fn trigger(orchestrator: &TestOrchestrator) -> Result<String> {
    let (status, answer) = orchestrator
        .post("/api/pipelines/p/trigger", &json!({ "input": {} }))
        .await?;
    if status != 201 {
        bail!("trigger answered {status}: {answer}");
    }
    answer["pipelineRunId"]
        .as_str()
        .map(str::to_owned)
        .context("no pipelineRunId")
}

fn task_state<'a>(run: &'a Value, task: &str) -> Option<&'a str> {
    run["taskRuns"]
        .as_array()?
        .iter()
        .find(|r| r["taskId"] == task)?["status"]
        .as_str()
}

#[tokio::test]
async fn cancelling_a_pipeline_run_cancels_its_queued_and_running_task_runs_and_nothing_runs_after()
-> Result<()> {
    let (orchestrator, mut dispatches) =
        start(&[("a", &["b", "c"]), ("b", &[]), ("c", &[])]).await?;
    let (status, answer) = orchestrator
        .put("/api/pipelines/p", &json!({ "entryTasks": ["a"] }))
        .await?;
    assert_eq!(status, 200, "{answer}");

    // Two queued task runs: a succeeded and split into b and c.
    let queued = trigger(&orchestrator).await?;
    let sent = round(&orchestrator, &mut dispatches).await?;
    assert_eq!(sent.len(), 1);
    let status = callback(
        &orchestrator,
        &sent[0],
        json!({ "status": "success", "output": {} }),
    )
    .await?;
    assert_eq!(status, 200);
    let (status, answer) = orchestrator
        .post(
            &format!("/api/runs/{queued}/cancel"),
            &json!({ "cancelledBy": "ada", "reason": "wrong input" }),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "cancelled");
    assert_eq!(answer["previousStatus"], "running");
    assert_eq!(answer["cancelledBy"], "ada");
    let previous: Vec<&str> = answer["cancelledTaskRuns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["previousStatus"].as_str())
        .collect();
    assert_eq!(previous, ["queued", "queued"], "{answer}");
    let (_, run) = orchestrator.get(&format!("/api/runs/{queued}")).await?;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(run["finishedAt"].is_string(), "{run}");
    assert_eq!(task_state(&run, "a"), Some("succeeded"));
    assert_eq!(task_state(&run, "b"), Some("cancelled"));
    assert_eq!(task_state(&run, "c"), Some("cancelled"));
    assert!(
        round(&orchestrator, &mut dispatches).await?.is_empty(),
        "nothing of a cancelled pipeline run is dispatched"
    );

    // A running task run: its attempt is cancelled, and its late success
    // changes nothing.
    let running = trigger(&orchestrator).await?;
    let sent = round(&orchestrator, &mut dispatches).await?;
    assert_eq!(sent.len(), 1);
    let task_run = sent[0]["runId"].as_str().unwrap_or_default().to_owned();
    // Its log lives under the pipeline run's prefix.
    let (status, logs) = orchestrator
        .get(&format!("/api/task-runs/{task_run}/logs"))
        .await?;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(
        logs["attempts"][0]["logsPath"],
        format!("runs/{running}/logs/{task_run}/1.jsonl").as_str(),
        "{logs}"
    );
    assert_eq!(logs["pipelineRunId"], running.as_str());
    let (status, answer) = orchestrator
        .post(&format!("/api/runs/{running}/cancel"), &json!({}))
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cancelledBy"], "api");
    assert_eq!(
        answer["cancelledTaskRuns"][0]["previousStatus"], "running",
        "{answer}"
    );
    let status = callback(
        &orchestrator,
        &sent[0],
        json!({ "status": "success", "output": {} }),
    )
    .await?;
    assert_eq!(status, 409, "the cancelled attempt's callback is refused");
    let (_, run) = orchestrator.get(&format!("/api/runs/{running}")).await?;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(task_state(&run, "a"), Some("cancelled"));
    assert_eq!(run["taskRuns"].as_array().map(Vec::len), Some(1), "{run}");

    // Ended, unknown, malformed.
    let (status, answer) = orchestrator
        .post(&format!("/api/runs/{running}/cancel"), &json!({}))
        .await?;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("already ended: it is cancelled")),
        "{answer}"
    );
    let unknown = "prun_019ac2a1f3e27c55a1b2c3d4e5f60718";
    let (status, answer) = orchestrator
        .post(&format!("/api/runs/{unknown}/cancel"), &json!({}))
        .await?;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = orchestrator
        .post(&format!("/api/runs/{task_run}/cancel"), &json!({}))
        .await?;
    assert_eq!(
        status, 400,
        "a task run id is not a pipeline run id: {answer}"
    );
    Ok(())
}

#[tokio::test]
async fn a_task_runs_logs_come_per_attempt_from_the_recorded_path_or_while_running_from_the_layout()
-> Result<()> {
    let (orchestrator, mut dispatches) = start(&[("t", &[])]).await?;
    let store = orchestrator.state.stores.default_store().1.clone();
    let put = |path: String, text: &'static str| {
        let store = store.clone();
        async move {
            store
                .put(&path.as_str().into(), PutPayload::from(text.as_bytes()))
                .await
        }
    };
    let run_id = orchestrator.enqueue("t", json!({})).await?;
    let logs_of = |run_id: String| {
        let orchestrator = &orchestrator;
        async move {
            let (status, logs) = orchestrator
                .get(&format!("/api/task-runs/{run_id}/logs"))
                .await?;
            anyhow::ensure!(status == 200, "logs answered {status}: {logs}");
            Ok::<_, anyhow::Error>(logs)
        }
    };
    let logs = logs_of(run_id.clone()).await?;
    assert_eq!(logs["status"], "queued");
    assert_eq!(logs["attempts"], json!([]), "no attempt yet: {logs}");

    // Attempt 1 runs: its log is not stored yet, then the host's
    // heartbeat stores the log so far.
    let sent = round(&orchestrator, &mut dispatches).await?;
    assert_eq!(sent.len(), 1);
    let first_path = format!("runs/{run_id}/logs/{run_id}/1.jsonl");
    let logs = logs_of(run_id.clone()).await?;
    assert_eq!(
        logs["attempts"],
        json!([{ "attempt": 1, "status": "running", "logsPath": first_path, "lines": [] }])
    );
    put(
        first_path.clone(),
        "{\"timestampMs\":1,\"level\":\"info\",\"message\":\"starting\"}\n",
    )
    .await?;
    let logs = logs_of(run_id.clone()).await?;
    assert_eq!(logs["attempts"][0]["lines"][0]["message"], "starting");

    // It fails, and its worker records the log at a path of its own.
    let recorded = format!("runs/{run_id}/logs/{run_id}/attempt-1.jsonl");
    put(
        recorded.clone(),
        "{\"timestampMs\":1,\"level\":\"info\",\"message\":\"starting\"}\n\
         {\"timestampMs\":2,\"stream\":\"stderr\",\"message\":\"boom\"}\n\
         not json\n",
    )
    .await?;
    let status = callback(
        &orchestrator,
        &sent[0],
        json!({ "status": "failure", "logsPath": recorded,
                "error": { "message": "broken", "retryable": true } }),
    )
    .await?;
    assert_eq!(status, 200);
    let logs = logs_of(run_id.clone()).await?;
    assert_eq!(logs["status"], "awaiting_retry");
    let first = &logs["attempts"][0];
    assert_eq!(first["status"], "failed");
    assert_eq!(first["logsPath"], recorded.as_str());
    assert_eq!(
        first["lines"],
        json!([
            { "timestampMs": 1, "level": "info", "message": "starting" },
            { "timestampMs": 2, "stream": "stderr", "message": "boom" },
            "not json",
        ])
    );

    // Attempt 2 runs (1 ms later) and succeeds with its log at the
    // layout's path.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sent = round(&orchestrator, &mut dispatches).await?;
    assert_eq!(sent.len(), 1, "the retry is dispatched");
    let second_path = format!("runs/{run_id}/logs/{run_id}/2.jsonl");
    let logs = logs_of(run_id.clone()).await?;
    assert_eq!(logs["attempts"][1]["status"], "running");
    assert_eq!(logs["attempts"][1]["lines"], json!([]));
    put(
        second_path.clone(),
        "{\"timestampMs\":3,\"level\":\"info\",\"message\":\"again\"}\n",
    )
    .await?;
    let status = callback(
        &orchestrator,
        &sent[0],
        json!({ "status": "success", "output": {}, "logsPath": second_path }),
    )
    .await?;
    assert_eq!(status, 200);
    let logs = logs_of(run_id.clone()).await?;
    assert_eq!(logs["status"], "succeeded");
    let attempts: Vec<(i64, &str, usize)> = logs["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap_or(0),
                a["status"].as_str().unwrap_or_default(),
                a["lines"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(attempts, [(1, "failed", 3), (2, "succeeded", 1)]);

    let (status, _) = orchestrator
        .get("/api/task-runs/trun_019ac2a1f3e27c55a1b2c3d4e5f60718/logs")
        .await?;
    assert_eq!(status, 404);
    let (status, _) = orchestrator.get("/api/task-runs/nope/logs").await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test]
async fn dropping_everything_pipeweave_owns_leaves_nothing_of_its_schema() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let pool = &orchestrator.pool;
    let migrations = pipeweave_orchestrator::storage::schema::migrations(pool).await?;
    assert!(
        migrations.iter().all(|m| m.applied_at.is_some() && m.known),
        "a migrated test database has every migration: {migrations:?}"
    );
    pipeweave_orchestrator::storage::schema::drop_all(pool).await?;
    let left: Vec<String> = sqlx::query_scalar(
        "select kind || ' ' || name from (
             select 'table' as kind, relname::text as name from pg_class
              where relnamespace = 'public'::regnamespace
             union all
             select 'type', typname::text from pg_type
              where typnamespace = 'public'::regnamespace and typtype in ('e', 'c', 'd')
             union all
             select 'function', proname::text from pg_proc
              where pronamespace = 'public'::regnamespace
         ) objects order by 1",
    )
    .fetch_all(pool)
    .await?;
    assert!(
        left.is_empty(),
        "objects the migrations create that storage::schema does not list: {left:?}"
    );
    let migrations = pipeweave_orchestrator::storage::schema::migrations(pool).await?;
    assert!(migrations.iter().all(|m| m.applied_at.is_none()));
    pipeweave_orchestrator::storage::migrate(pool).await?;
    Ok(())
}
