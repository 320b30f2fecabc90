//! Cron schedules: created and refused through the API, fired once per tick
//! with two replicas running, and the missed-ticks policies after
//! downtime.

use std::time::Duration;

use anyhow::Result;
use pipeweave_orchestrator::config::Mode;
use serde_json::{Value, json};

use crate::TestOrchestrator;

/// Registers task `t` and pipeline `p` (`t` alone) for a worker that
/// accepts every dispatch and never calls back.
async fn register(orchestrator: &TestOrchestrator) -> Result<()> {
    // The dispatches themselves are not looked at.
    let (worker, _dispatches) = crate::recording_worker().await?;
    let (status, answer) = orchestrator
        .post(
            "/api/register",
            &json!({ "serviceId": "w", "baseUrl": worker, "tasks": [{ "id": "t", "codeHash": "1" }] }),
        )
        .await?;
    anyhow::ensure!(status == 200, "register answered {status}: {answer}");
    let (status, answer) = orchestrator
        .put("/api/pipelines/p", &json!({ "entryTasks": ["t"] }))
        .await?;
    anyhow::ensure!(status == 200, "pipeline answered {status}: {answer}");
    Ok(())
}

#[tokio::test]
async fn schedules_are_validated_listed_and_deleted() -> Result<()> {
    let orchestrator = TestOrchestrator::start_with(Mode::Serverless, |config| {
        config.max_body_bytes = 1 << 20;
    })
    .await?;
    register(&orchestrator).await?;
    for (body, status, field) in [
        (json!({ "taskId": "t", "cron": "every day" }), 400, "cron"),
        (
            json!({ "taskId": "t", "pipelineId": "p", "cron": "@hourly" }),
            400,
            "pipelineId",
        ),
        (json!({ "cron": "@hourly" }), 400, "pipelineId"),
        (
            json!({ "id": "bad id", "taskId": "t", "cron": "@hourly" }),
            400,
            "id",
        ),
        (
            json!({ "taskId": "t", "cron": "@hourly", "input": "x".repeat(70_000) }),
            400,
            "input",
        ),
    ] {
        let (got, answer) = orchestrator.post("/api/schedules", &body).await?;
        assert_eq!(
            (got, answer["field"].as_str()),
            (status, Some(field)),
            "{answer}"
        );
    }
    let (status, answer) = orchestrator
        .post(
            "/api/schedules",
            &json!({ "taskId": "ghost", "cron": "@hourly" }),
        )
        .await?;
    assert_eq!(status, 404, "{answer}");

    let (status, created) = orchestrator
        .post(
            "/api/schedules",
            &json!({ "id": "nightly", "pipelineId": "p", "cron": "0 9 * * *", "input": { "a": 1 } }),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["missed"], "run-once");
    let next: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(created["nextFireAt"].clone())?;
    assert!(next > chrono::Utc::now());
    assert_eq!(next.format("%H:%M:%S").to_string(), "09:00:00");
    let (status, _) = orchestrator
        .post(
            "/api/schedules",
            &json!({ "id": "nightly", "taskId": "t", "cron": "@daily" }),
        )
        .await?;
    assert_eq!(status, 409);
    let (_, list) = orchestrator.get("/api/schedules").await?;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let response = reqwest::Client::new()
        .delete(format!("{}/api/schedules/nightly", orchestrator.url))
        .send()
        .await?;
    assert_eq!(response.status(), 204);
    let (status, _) = orchestrator.get("/api/schedules/nightly").await?;
    assert_eq!(status, 404);
    Ok(())
}

/// The `scheduledFor` ticks of the runs a schedule made, in order.
async fn ticks_of(orchestrator: &TestOrchestrator) -> Result<Vec<chrono::DateTime<chrono::Utc>>> {
    let (_, page) = orchestrator
        .get("/api/queue/items?taskId=t&limit=1000")
        .await?;
    let mut ticks: Vec<chrono::DateTime<chrono::Utc>> = page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|run| run["metadata"]["scheduleId"] == "every-second")
        .filter_map(|run| serde_json::from_value(run["metadata"]["scheduledFor"].clone()).ok())
        .collect();
    ticks.sort();
    Ok(ticks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_each_tick_fires_exactly_once() -> Result<()> {
    let first = TestOrchestrator::start(Mode::Standalone).await?;
    let second = first.replica(Mode::Standalone).await?;
    register(&first).await?;
    let (status, created) = first
        .post(
            "/api/schedules",
            &json!({ "id": "every-second", "taskId": "t", "cron": "* * * * * *" }),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    tokio::time::sleep(Duration::from_millis(4_300)).await;
    let response = reqwest::Client::new()
        .delete(format!("{}/api/schedules/every-second", second.url))
        .send()
        .await?;
    assert_eq!(response.status(), 204);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let ticks = ticks_of(&first).await?;
    assert!(
        (3..=5).contains(&ticks.len()),
        "about one run per second for 4.3 s: {ticks:?}"
    );
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(1),
            "one run per tick, none twice, none skipped: {ticks:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn after_downtime_run_once_fires_once_and_skip_fires_nothing() -> Result<()> {
    // Serverless: nothing fires until a tick, as if no orchestrator ran.
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    register(&orchestrator).await?;
    for (id, missed) in [("catch-up", "run-once"), ("skipper", "skip")] {
        let (status, answer) = orchestrator
            .post(
                "/api/schedules",
                &json!({ "id": id, "pipelineId": "p", "cron": "* * * * *", "missed": missed }),
            )
            .await?;
        assert_eq!(status, 201, "{answer}");
    }
    // Ten minutes of downtime: ten ticks of each were missed.
    sqlx::query("update schedules set next_fire_at = now() - interval '10 minutes'")
        .execute(&orchestrator.pool)
        .await?;
    let (_, tick) = orchestrator.post("/api/tick", &json!({})).await?;
    assert_eq!(tick["schedulesFired"], 1, "{tick}");
    let (_, tick) = orchestrator.post("/api/tick", &json!({})).await?;
    assert_eq!(tick["schedulesFired"], 0, "no burst: {tick}");

    let (_, catch_up) = orchestrator.get("/api/schedules/catch-up").await?;
    let run_id = catch_up["lastRunId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(run_id.starts_with("prun_"), "{catch_up}");
    let (_, skipper) = orchestrator.get("/api/schedules/skipper").await?;
    assert!(skipper.get("lastRunId").is_none(), "{skipper}");
    for schedule in [&catch_up, &skipper] {
        let next: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(schedule["nextFireAt"].clone())?;
        assert!(next > chrono::Utc::now(), "back on schedule: {schedule}");
    }
    let (_, runs) = orchestrator.get("/api/runs?pipelineId=p").await?;
    assert_eq!(runs["total"], 1, "{runs}");
    let run: Value = runs["items"][0].clone();
    assert_eq!(run["pipelineRunId"], run_id.as_str());
    assert_eq!(run["metadata"]["scheduleId"], "catch-up");
    Ok(())
}
