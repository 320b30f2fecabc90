//! The dead-letter queue API: dead runs listed and shown, retried on the
//! current code or the failed attempt's pinned code, retried all at once,
//! and purged by age, each touching only what it should.

use anyhow::{Result, ensure};
use chrono::Utc;
use pipeweave_orchestrator::config::Mode;
use pipeweave_orchestrator::storage;
use serde_json::{Value, json};

use crate::TestOrchestrator;

fn registration(download_hash: &str, worker: bool) -> Value {
    // A plain HTTP worker has a base URL; a WebAssembly service's hashes
    // name uploaded modules (here both tasks share one).
    let extract_hash = if worker { "e1" } else { download_hash };
    let mut registration = json!({
        "serviceId": "docs",
        "tasks": [
            { "id": "download", "codeHash": download_hash },
            { "id": "extract", "codeHash": extract_hash }
        ]
    });
    if worker {
        registration["baseUrl"] = json!("http://127.0.0.1:9");
    }
    registration
}

/// Claims the one due run of `task` as the worker "docs" would.
async fn claim_one(orchestrator: &TestOrchestrator, task: &str) -> Result<storage::runs::Claimed> {
    let mut claimed = storage::runs::claim(
        &orchestrator.pool,
        &[task.to_owned()],
        1,
        Utc::now(),
        "docs",
        i64::MAX,
    )
    .await?;
    ensure!(claimed.len() == 1, "nothing of {task} to claim");
    Ok(claimed.remove(0))
}

/// Reports `run` as the worker would.
async fn call_back(
    orchestrator: &TestOrchestrator,
    run: &storage::runs::Claimed,
    body: Value,
) -> Result<Value> {
    let mut body = body;
    body["attempt"] = json!(run.attempt);
    body["attemptToken"] = json!(run.attempt_token.to_string());
    let id = pipeweave_orchestrator::RunId(run.id);
    let (status, answer) = orchestrator
        .post(&format!("/api/callback/{id}"), &body)
        .await?;
    ensure!(status == 200, "callback answered {status}: {answer}");
    Ok(answer)
}

/// Enqueues a run of `task` and kills it with a fatal error.
async fn dead_run(orchestrator: &TestOrchestrator, task: &str, input: Value) -> Result<String> {
    let run_id = orchestrator.enqueue(task, input).await?;
    let claimed = claim_one(orchestrator, task).await?;
    let fatal = json!({ "status": "failure", "error": {
        "message": "the file is corrupt", "code": "CORRUPT", "retryable": false } });
    let answer = call_back(orchestrator, &claimed, fatal).await?;
    ensure!(answer["status"] == "dead", "{answer}");
    Ok(run_id)
}

fn dlq_id(run_id: &str) -> String {
    run_id.replacen("trun_", "dlq_", 1)
}

#[tokio::test]
async fn dead_runs_are_listed_shown_and_retried_on_the_current_code() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    orchestrator
        .post("/api/register", &registration("d1", true))
        .await?;
    let download = dead_run(&orchestrator, "download", json!({ "url": "a" })).await?;
    let extract = dead_run(&orchestrator, "extract", json!({ "page": 2 })).await?;

    let (status, list) = orchestrator.get("/api/dlq").await?;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2, "{list}");
    let newest = &list["items"][0];
    assert_eq!(newest["id"], dlq_id(&extract), "{list}");
    assert_eq!(newest["taskRunId"], extract);
    assert_eq!(newest["error"], "the file is corrupt");
    assert_eq!(newest["errorCode"], "CORRUPT");
    assert_eq!(newest["attempts"], 1);
    assert_eq!(newest["codeVersion"], 1);
    assert_eq!(newest["input"], json!({ "page": 2 }));
    let (_, only) = orchestrator.get("/api/dlq?taskId=download").await?;
    assert_eq!(only["total"], 1, "{only}");
    let (_, later) = orchestrator
        .get(&format!(
            "/api/dlq?since={}",
            (Utc::now() + chrono::Duration::minutes(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
        .await?;
    assert_eq!(later["total"], 0, "{later}");

    let (status, shown) = orchestrator
        .get(&format!("/api/dlq/{}", dlq_id(&download)))
        .await?;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["attemptHistory"][0]["codeHash"], "d1", "{shown}");
    assert_eq!(
        shown["attemptHistory"][0]["error"]["code"], "CORRUPT",
        "{shown}"
    );
    assert_eq!(shown["retriedAs"], Value::Null);
    // The run id works as well as the entry id.
    assert_eq!(
        orchestrator.get(&format!("/api/dlq/{download}")).await?.0,
        200
    );

    // New code is deployed; the retry runs it, as the spec says.
    orchestrator
        .post("/api/register", &registration("d2", true))
        .await?;
    let (status, retried) = orchestrator
        .post(&format!("/api/dlq/{}/retry", dlq_id(&download)), &json!({}))
        .await?;
    assert_eq!(status, 201, "{retried}");
    assert_eq!(retried["codeVersion"], 2, "{retried}");
    let new_run = retried["newRunId"].as_str().unwrap_or_default().to_owned();
    let claimed = claim_one(&orchestrator, "download").await?;
    assert_eq!(
        pipeweave_orchestrator::RunId(claimed.id).to_string(),
        new_run
    );
    assert_eq!(
        (claimed.code_version, claimed.code_hash.as_str()),
        (2, "d2")
    );
    assert_eq!(claimed.input, Some(json!({ "url": "a" })));
    call_back(
        &orchestrator,
        &claimed,
        json!({ "status": "success", "output": { "ok": true } }),
    )
    .await?;
    let (_, run) = orchestrator
        .get(&format!("/api/task-runs/{new_run}"))
        .await?;
    assert_eq!(run["status"], "succeeded", "{run}");

    // The entry leaves the list, says where it went, and is retried once.
    let (_, list) = orchestrator.get("/api/dlq").await?;
    assert_eq!(list["total"], 1, "{list}");
    let (_, shown) = orchestrator
        .get(&format!("/api/dlq/{}", dlq_id(&download)))
        .await?;
    assert_eq!(shown["retriedAs"], json!(new_run));
    let (status, again) = orchestrator
        .post(&format!("/api/dlq/{}/retry", dlq_id(&download)), &json!({}))
        .await?;
    assert_eq!(status, 409, "{again}");
    assert!(again.to_string().contains(&new_run), "{again}");

    // A plain HTTP worker runs only its current code.
    let (status, refused) = orchestrator
        .post(
            &format!("/api/dlq/{}/retry", dlq_id(&extract)),
            &json!({ "pinCodeHash": true }),
        )
        .await?;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["field"], "pinCodeHash", "{refused}");

    // Bad ids.
    assert_eq!(orchestrator.get("/api/dlq/dlq_nothex").await?.0, 400);
    assert_eq!(
        orchestrator
            .get("/api/dlq/dlq_0000000000000000000000000000abcd")
            .await?
            .0,
        404
    );
    assert_eq!(
        orchestrator.get(&format!("/api/dlq/{new_run}")).await?.0,
        404,
        "not dead"
    );
    Ok(())
}

#[tokio::test]
async fn a_pinned_retry_runs_the_failed_attempts_code() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    // A WebAssembly service: its tasks run on hosts, which fetch any
    // uploaded module by hash, old ones included.
    let old = orchestrator.upload_module(b"module a").await?;
    let new = orchestrator.upload_module(b"module b").await?;
    let (status, answer) = orchestrator
        .post("/api/register", &registration(&old, false))
        .await?;
    ensure!(status == 200, "{answer}");
    let dead = dead_run(&orchestrator, "download", json!({ "url": "b" })).await?;
    let (status, answer) = orchestrator
        .post("/api/register", &registration(&new, false))
        .await?;
    ensure!(
        status == 200 && answer["codeChanges"][0]["newVersion"] == 2,
        "{answer}"
    );

    let (status, retried) = orchestrator
        .post(
            &format!("/api/dlq/{dead}/retry"),
            &json!({ "pinCodeHash": true }),
        )
        .await?;
    assert_eq!(status, 201, "{retried}");
    assert_eq!(retried["codeVersion"], 1, "{retried}");
    assert_eq!(retried["codeHashPinned"], true);
    let claimed = claim_one(&orchestrator, "download").await?;
    assert_eq!(
        (claimed.code_version, claimed.code_hash.clone()),
        (1, old.clone())
    );
    call_back(
        &orchestrator,
        &claimed,
        json!({ "status": "success", "output": 1 }),
    )
    .await?;
    let id = pipeweave_orchestrator::RunId(claimed.id);
    let (_, run) = orchestrator.get(&format!("/api/task-runs/{id}")).await?;
    assert_eq!(
        (run["status"].clone(), run["codeHash"].clone()),
        (json!("succeeded"), json!(old)),
        "{run}"
    );

    // A run enqueued now gets the current code.
    orchestrator.enqueue("download", json!({})).await?;
    assert_eq!(claim_one(&orchestrator, "download").await?.code_hash, new);
    Ok(())
}

#[tokio::test]
async fn concurrent_retries_of_one_entry_make_one_run() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    orchestrator
        .post("/api/register", &registration("d1", true))
        .await?;
    let dead = dead_run(&orchestrator, "download", json!({})).await?;
    let url = format!("{}/api/dlq/{}/retry", orchestrator.url, dlq_id(&dead));
    let attempts = (0..8).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    });
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await??);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let (_, counts) = orchestrator.get("/api/queue/status").await?;
    assert_eq!(counts["pending"], 1, "{counts}");
    Ok(())
}

#[tokio::test]
async fn retry_all_and_purge_touch_only_what_they_should() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    orchestrator
        .post("/api/register", &registration("d1", true))
        .await?;
    for page in 0..3 {
        dead_run(&orchestrator, "extract", json!({ "page": page })).await?;
    }
    let download = dead_run(&orchestrator, "download", json!({})).await?;
    let alive = orchestrator
        .enqueue("download", json!({ "queued": true }))
        .await?;

    let (status, all) = orchestrator
        .post("/api/dlq/retry-all", &json!({ "taskId": "extract" }))
        .await?;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["retried"], 3, "{all}");
    let (_, list) = orchestrator.get("/api/dlq").await?;
    assert_eq!(list["total"], 1, "only download's entry is left: {list}");
    let (_, counts) = orchestrator.get("/api/queue/status").await?;
    assert_eq!(
        (counts["pending"].clone(), counts["dlq"].clone()),
        (json!(4), json!(4))
    );
    let (_, again) = orchestrator
        .post("/api/dlq/retry-all", &json!({ "taskId": "extract" }))
        .await?;
    assert_eq!(again["retried"], 0, "{again}");

    // Bad durations are refused and delete nothing.
    for older_than in ["soon", "", "-1d"] {
        let (status, answer) = orchestrator
            .post("/api/dlq/purge", &json!({ "olderThan": older_than }))
            .await?;
        assert_eq!(status, 400, "{older_than:?}: {answer}");
        assert_eq!(answer["field"], "olderThan");
    }
    let (_, kept) = orchestrator
        .post("/api/dlq/purge", &json!({ "olderThan": "1h" }))
        .await?;
    assert_eq!(kept["purged"], 0, "nothing died an hour ago: {kept}");

    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (_, purged) = orchestrator
        .post("/api/dlq/purge", &json!({ "olderThan": "10ms" }))
        .await?;
    assert_eq!(purged["purged"], 4, "{purged}");
    let (_, counts) = orchestrator.get("/api/queue/status").await?;
    assert_eq!(
        (counts["dlq"].clone(), counts["pending"].clone()),
        (json!(0), json!(4)),
        "the retries and the queued run stay: {counts}"
    );
    assert_eq!(
        orchestrator.get(&format!("/api/dlq/{download}")).await?.0,
        404
    );
    assert_eq!(
        orchestrator
            .get(&format!("/api/task-runs/{alive}"))
            .await?
            .1["status"],
        "queued"
    );
    let gone: i64 = sqlx::query_scalar("select count(*) from attempts")
        .fetch_one(&orchestrator.pool)
        .await?;
    assert_eq!(gone, 0, "the purged runs' attempts went with them");
    Ok(())
}
