//! Idempotency: an explicit key or one derived from the input and code
//! version, a TTL, duplicates answered with the run that holds the key (and
//! its result), concurrent duplicates making one run, and a dead or
//! cancelled holder freeing its key.

use std::collections::HashSet;

use anyhow::{Result, ensure};
use chrono::Utc;
use pipeweave_orchestrator::config::Mode;
use pipeweave_orchestrator::storage;
use serde_json::{Value, json};

use crate::TestOrchestrator;

async fn register(orchestrator: &TestOrchestrator, charge_hash: &str) -> Result<()> {
    let registration = json!({
        "serviceId": "shop",
        "version": charge_hash,
        "baseUrl": "http://127.0.0.1:9",
        "tasks": [
            { "id": "charge", "codeHash": charge_hash,
              "idempotency": { "inputFields": ["/orderId"], "ttlSecs": 2 } },
            { "id": "email", "codeHash": "e1" }
        ]
    });
    let (status, answer) = orchestrator.post("/api/register", &registration).await?;
    ensure!(status == 200, "{answer}");
    Ok(())
}

async fn enqueue(orchestrator: &TestOrchestrator, body: Value) -> Result<(u16, Value)> {
    orchestrator.post("/api/queue/task", &body).await
}

async fn run_count(orchestrator: &TestOrchestrator) -> Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from runs")
        .fetch_one(&orchestrator.pool)
        .await?)
}

/// Claims the one due run of `task` and reports it with `callback`.
async fn finish(orchestrator: &TestOrchestrator, task: &str, callback: Value) -> Result<()> {
    let claimed = storage::runs::claim(
        &orchestrator.pool,
        &[task.to_owned()],
        1,
        Utc::now(),
        "shop",
        i64::MAX,
    )
    .await?;
    ensure!(claimed.len() == 1, "nothing to claim");
    let mut callback = callback;
    callback["attempt"] = json!(claimed[0].attempt);
    callback["attemptToken"] = json!(claimed[0].attempt_token.to_string());
    let id = pipeweave_orchestrator::RunId(claimed[0].id);
    let (status, answer) = orchestrator
        .post(&format!("/api/callback/{id}"), &callback)
        .await?;
    ensure!(status == 200, "{answer}");
    Ok(())
}

#[tokio::test]
async fn an_explicit_key_returns_the_holder_and_its_result() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    register(&orchestrator, "c1").await?;
    let body =
        json!({ "taskId": "email", "input": { "to": "ada" }, "idempotencyKey": "welcome-ada" });
    let (status, first) = enqueue(&orchestrator, body.clone()).await?;
    assert_eq!(status, 201, "{first}");
    let (status, again) = enqueue(&orchestrator, body.clone()).await?;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["runId"], first["runId"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["status"], "queued");
    // Keys are per task.
    let (status, other) = enqueue(
        &orchestrator,
        json!({ "taskId": "charge", "input": { "orderId": 9 }, "idempotencyKey": "welcome-ada" }),
    )
    .await?;
    assert_eq!(status, 201, "{other}");

    finish(
        &orchestrator,
        "email",
        json!({ "status": "success", "output": { "sent": true } }),
    )
    .await?;
    let (status, done) = enqueue(&orchestrator, body).await?;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (
            done["runId"].clone(),
            done["status"].clone(),
            done["output"].clone()
        ),
        (
            first["runId"].clone(),
            json!("succeeded"),
            json!({ "sent": true })
        ),
        "a duplicate gets the holder's result: {done}"
    );
    assert_eq!(run_count(&orchestrator).await?, 2);

    let (status, refused) = enqueue(
        &orchestrator,
        json!({ "taskId": "email", "idempotencyKey": "" }),
    )
    .await?;
    assert_eq!(
        (status, refused["field"].clone()),
        (400, json!("idempotencyKey"))
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_duplicates_make_one_run() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    register(&orchestrator, "c1").await?;
    let url = format!("{}/api/queue/task", orchestrator.url);
    let sends = (0..16).map(|n| {
        let url = url.clone();
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&json!({ "taskId": "charge", "input": { "orderId": 7, "try": n } }))
                .send()
                .await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await?;
            anyhow::Ok((
                status,
                body["runId"].as_str().unwrap_or_default().to_owned(),
            ))
        })
    });
    let mut created = 0;
    let mut ids = HashSet::new();
    for send in sends {
        let (status, run_id) = send.await??;
        created += usize::from(status == 201);
        ids.insert(run_id);
    }
    assert_eq!(created, 1, "exactly one enqueue creates a run");
    assert_eq!(ids.len(), 1, "every answer names that run: {ids:?}");
    assert_eq!(run_count(&orchestrator).await?, 1);

    // In one batch, the second of two duplicates gets the first's run.
    let batch = json!({ "tasks": [
        { "taskId": "charge", "input": { "orderId": 8 } },
        { "taskId": "charge", "input": { "orderId": 8 } },
    ]});
    let (status, answer) = orchestrator.post("/api/queue/batch", &batch).await?;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["queued"], 1, "{answer}");
    assert_eq!(answer["results"][1]["duplicate"], true, "{answer}");
    assert_eq!(answer["results"][1]["runId"], answer["results"][0]["runId"]);
    Ok(())
}

/// The race a loaded CI machine once hit: a duplicate whose statement
/// started before the holder's transaction committed must wait for it and
/// answer with its run, not take the key over (the holder's run is not in
/// its snapshot).
#[tokio::test]
async fn a_duplicate_waiting_on_an_uncommitted_holder_gets_that_holder() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    register(&orchestrator, "c1").await?;
    let holder = uuid::Uuid::now_v7();
    let mut first = orchestrator.pool.begin().await?;
    sqlx::query(
        "insert into runs (id, task_id, priority, scheduled_at, input, created_at)
         values ($1, 'email', 100, now(), '{}', now())",
    )
    .bind(holder)
    .execute(&mut *first)
    .await?;
    sqlx::query(
        "insert into idempotency_keys (task_id, key, run_id, expires_at)
         values ('email', 'key:k-race', $1, now() + interval '1 hour')",
    )
    .bind(holder)
    .execute(&mut *first)
    .await?;

    let url = format!("{}/api/queue/task", orchestrator.url);
    let second = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .json(&json!({ "taskId": "email", "idempotencyKey": "k-race" }))
            .send()
            .await?;
        let status = response.status().as_u16();
        anyhow::Ok((status, response.json::<Value>().await?))
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    ensure!(
        !second.is_finished(),
        "the duplicate should wait for the holder's transaction"
    );
    first.commit().await?;
    let (status, answer) = second.await??;
    assert_eq!(status, 200, "a duplicate, not a new run: {answer}");
    assert_eq!(
        answer["runId"],
        pipeweave_orchestrator::RunId(holder).to_string(),
        "{answer}"
    );
    assert_eq!(answer["duplicate"], true);
    assert_eq!(run_count(&orchestrator).await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_derived_key_follows_the_input_the_code_version_and_the_ttl() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    register(&orchestrator, "c1").await?;
    let order = |id: i64, note: &str| json!({ "taskId": "charge", "input": { "orderId": id, "note": note } });

    let (status, first) = enqueue(&orchestrator, order(1, "a")).await?;
    assert_eq!(status, 201, "{first}");
    // Only /orderId is in the key.
    let (status, same) = enqueue(&orchestrator, order(1, "b")).await?;
    assert_eq!(
        (status, same["runId"].clone()),
        (200, first["runId"].clone())
    );
    let (status, _) = enqueue(&orchestrator, order(2, "a")).await?;
    assert_eq!(status, 201, "another order is another key");

    // New code, new key (includeCodeVersion defaults to true).
    register(&orchestrator, "c2").await?;
    let (status, recharged) = enqueue(&orchestrator, order(1, "a")).await?;
    assert_eq!(status, 201, "{recharged}");

    // After the TTL (2 s here) the key is free again.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, later) = enqueue(&orchestrator, order(1, "a")).await?;
    assert_eq!(status, 201, "{later}");
    assert_ne!(later["runId"], recharged["runId"]);
    Ok(())
}

#[tokio::test]
async fn a_dead_or_cancelled_holder_frees_its_key() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    register(&orchestrator, "c1").await?;
    let body = json!({ "taskId": "email", "idempotencyKey": "k" });
    let (_, first) = enqueue(&orchestrator, body.clone()).await?;
    finish(
        &orchestrator,
        "email",
        json!({ "status": "failure", "error": { "message": "bounced", "retryable": false } }),
    )
    .await?;
    let (status, second) = enqueue(&orchestrator, body.clone()).await?;
    assert_eq!(status, 201, "a dead holder frees the key: {second}");
    assert_ne!(second["runId"], first["runId"]);

    let run_id = second["runId"].as_str().unwrap_or_default();
    let (status, _) = orchestrator
        .post(&format!("/api/task-runs/{run_id}/cancel"), &json!({}))
        .await?;
    assert_eq!(status, 200);
    let (status, third) = enqueue(&orchestrator, body).await?;
    assert_eq!(status, 201, "a cancelled holder frees the key: {third}");
    Ok(())
}
