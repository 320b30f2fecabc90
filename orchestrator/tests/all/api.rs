//! The HTTP API's contract: registration and code versions, module
//! uploads, the attempt token, and the errors a client gets for bad input.

use anyhow::{Result, ensure};
use pipeweave_orchestrator::config::Mode;
use serde_json::{Value, json};

use crate::TestOrchestrator;

fn worker_registration(version: &str, hash: &str) -> Value {
    json!({
        "serviceId": "docs",
        "version": version,
        "baseUrl": "http://127.0.0.1:9",
        "tasks": [
            { "id": "download", "codeHash": hash, "heartbeatIntervalMs": 30000, "allowedNext": ["extract"] },
            { "id": "extract", "codeHash": "e1" }
        ]
    })
}

#[tokio::test]
async fn a_changed_code_hash_bumps_the_version_and_is_recorded() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let (status, first) = orchestrator
        .post("/api/register", &worker_registration("1.0.0", "a1"))
        .await?;
    assert_eq!((status, first["codeChanges"].clone()), (200, json!([])));

    let (_, same) = orchestrator
        .post("/api/register", &worker_registration("1.0.1", "a1"))
        .await?;
    assert_eq!(
        same["codeChanges"],
        json!([]),
        "an unchanged hash is no change"
    );

    let (_, changed) = orchestrator
        .post("/api/register", &worker_registration("1.1.0", "b2"))
        .await?;
    assert_eq!(
        changed["codeChanges"],
        json!([{ "taskId": "download", "oldHash": "a1", "newHash": "b2", "oldVersion": 1, "newVersion": 2 }])
    );

    let (_, history) = orchestrator.get("/api/tasks/download/history").await?;
    let versions: Vec<(i64, &str, &str)> = history
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r["code_version"].as_i64().unwrap_or(0),
                        r["code_hash"].as_str().unwrap_or(""),
                        r["service_version"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        versions,
        [(2, "b2", "1.1.0"), (1, "a1", "1.0.0")],
        "newest first"
    );

    let (_, tasks) = orchestrator.get("/api/services/docs/tasks").await?;
    assert_eq!(tasks[0]["id"], "download");
    assert_eq!(tasks[0]["codeVersion"], 2);
    assert_eq!(tasks[0]["heartbeatIntervalMs"], 30000);
    assert_eq!(tasks[1]["codeVersion"], 1);

    let (_, services) = orchestrator.get("/api/services").await?;
    assert_eq!(services[0]["id"], "docs");
    assert_eq!(services[0]["version"], "1.1.0");
    assert_eq!(services[0]["taskCount"], 2);

    assert_eq!(orchestrator.get("/api/services/nope/tasks").await?.0, 404);
    assert_eq!(orchestrator.get("/api/tasks/nope/history").await?.0, 404);
    Ok(())
}

#[tokio::test]
async fn a_task_id_belongs_to_one_service() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    orchestrator
        .post("/api/register", &worker_registration("1.0.0", "a1"))
        .await?;
    let mut other = worker_registration("1.0.0", "a1");
    other["serviceId"] = json!("thief");
    let (status, answer) = orchestrator.post("/api/register", &other).await?;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("belongs to service \"docs\"")),
        "{answer}"
    );
    Ok(())
}

#[tokio::test]
async fn a_module_upload_is_checked_against_its_digest() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let bytes = std::fs::read(pipeweave_testkit::guest("hello"))?;
    let digest = pipeweave_protocol::CodeHash::of(&bytes).to_string();
    let wrong = "0".repeat(64);
    let http = reqwest::Client::new();

    let refused = http
        .put(format!("{}/api/modules/{wrong}", orchestrator.url))
        .body(bytes.clone())
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 400);
    let answer: Value = refused.json().await?;
    assert_eq!(answer["field"], "codeHash");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("digest mismatch") && e.contains(&digest)),
        "{answer}"
    );

    let registration =
        json!({ "serviceId": "hello", "tasks": [{ "id": "hello", "codeHash": digest }] });
    let (status, answer) = orchestrator.post("/api/register", &registration).await?;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("tasks[0].codeHash")),
        "not uploaded yet: {answer}"
    );

    let uploaded = http
        .put(format!("{}/api/modules/{digest}", orchestrator.url))
        .body(bytes.clone())
        .send()
        .await?;
    assert_eq!(uploaded.status().as_u16(), 201);
    let (status, answer) = orchestrator.post("/api/register", &registration).await?;
    assert_eq!(status, 200, "{answer}");

    let fetched = http
        .get(format!("{}/api/modules/{digest}", orchestrator.url))
        .send()
        .await?
        .bytes()
        .await?;
    assert_eq!(fetched.as_ref(), bytes.as_slice());
    let stored = orchestrator
        .storage_dir
        .path()
        .join(format!("data/modules/{digest}.wasm"));
    assert_eq!(
        std::fs::read(&stored)?,
        bytes,
        "the module lives in the default storage backend"
    );
    assert_eq!(
        http.get(format!("{}/api/modules/{wrong}", orchestrator.url))
            .send()
            .await?
            .status()
            .as_u16(),
        404
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_field_and_writes_nothing() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    orchestrator
        .post("/api/register", &worker_registration("1.0.0", "a1"))
        .await?;

    let (status, answer) = orchestrator
        .post("/api/queue/task", &json!({ "taskId": "nope" }))
        .await?;
    assert_eq!(status, 404, "unknown task: {answer}");
    assert_eq!(
        answer["error"], "task \"nope\" does not exist",
        "names the task"
    );

    let (status, answer) = orchestrator
        .post(
            "/api/queue/task",
            &json!({ "taskId": "download", "priority": -1 }),
        )
        .await?;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("priority")),
        "{answer}"
    );

    let (status, answer) = orchestrator
        .post(
            "/api/queue/task",
            &json!({ "taskId": "download", "priority": "high" }),
        )
        .await?;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("priority")),
        "wrong type: {answer}"
    );

    let (status, answer) = orchestrator
        .post(
            "/api/queue/task",
            &json!({ "taskId": "download", "colour": 1 }),
        )
        .await?;
    assert_eq!(status, 400, "unknown field: {answer}");

    let batch = json!({ "tasks": [
        { "taskId": "download", "input": {} },
        { "taskId": "download", "priority": -5 },
    ]});
    let (status, answer) = orchestrator.post("/api/queue/batch", &batch).await?;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("tasks[1].priority")),
        "{answer}"
    );

    let malformed = reqwest::Client::new()
        .post(format!("{}/api/queue/task", orchestrator.url))
        .header("content-type", "application/json")
        .body("{\"taskId\": ")
        .send()
        .await?;
    assert_eq!(malformed.status().as_u16(), 400);

    // Found by schemathesis: serde takes a struct from an array of its
    // fields, and PostgreSQL stores a NUL in neither text nor jsonb.
    let (status, answer) = orchestrator
        .post("/api/queue/task", &json!(["download"]))
        .await?;
    assert_eq!(status, 400, "an array is not an object: {answer}");
    for nul in [
        json!({ "taskId": "download", "metadata": { "note": "a\u{0}b" } }),
        json!({ "taskId": "download", "input": { "a\u{0}": 1 } }),
        json!({ "taskId": "download", "idempotencyKey": "k\u{0}" }),
    ] {
        let (status, answer) = orchestrator.post("/api/queue/task", &nul).await?;
        assert_eq!(status, 400, "{nul}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or("").contains("NUL"),
            "{answer}"
        );
    }
    let (status, answer) = orchestrator.get("/api/services/a%00b/tasks").await?;
    assert_eq!(status, 400, "a NUL in the path: {answer}");
    let (status, answer) = orchestrator.get("/api/queue/items?taskId=a%00b").await?;
    assert_eq!(status, 400, "a NUL in the query: {answer}");

    let huge = json!({ "taskId": "download", "input": { "blob": "x".repeat(100 * 1024) } });
    let (status, _) = orchestrator.post("/api/queue/task", &huge).await?;
    assert_eq!(status, 413);

    let (status, answer) = orchestrator
        .post(
            "/api/register",
            &json!({ "serviceId": "s", "tasks": [{ "id": "Bad Id", "codeHash": "x" }] }),
        )
        .await?;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("tasks[0].id")),
        "{answer}"
    );

    let (status, answer) = orchestrator.get("/api/queue/items?status=bogus").await?;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("status")),
        "{answer}"
    );
    assert_eq!(orchestrator.get("/api/task-runs/trun_nope").await?.0, 400);
    assert_eq!(
        orchestrator
            .get(&format!("/api/task-runs/trun_{}", "0".repeat(32)))
            .await?
            .0,
        404
    );

    let (_, items) = orchestrator.get("/api/queue/items").await?;
    assert_eq!(items["total"], 0, "no request above wrote a row: {items}");
    Ok(())
}

#[tokio::test]
async fn only_the_current_attempt_may_heartbeat_or_call_back() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    orchestrator
        .post("/api/register", &worker_registration("1.0.0", "a1"))
        .await?;
    let run_id = orchestrator
        .enqueue("download", json!({ "url": "x" }))
        .await?;
    let claimed = pipeweave_orchestrator::storage::runs::claim(
        &orchestrator.pool,
        &["download".to_owned()],
        10,
        chrono::Utc::now(),
        "docs",
        i64::MAX,
    )
    .await?;
    assert_eq!(claimed.len(), 1);
    let token = claimed[0].attempt_token.to_string();
    let beat = |token: &str| json!({ "runId": run_id, "attempt": 1, "attemptToken": token, "progress": 40 });

    let (status, answer) = orchestrator
        .post("/api/heartbeat", &beat(&uuid::Uuid::new_v4().to_string()))
        .await?;
    assert_eq!(status, 409, "a wrong token: {answer}");
    let (status, answer) = orchestrator
        .post("/api/heartbeat", &json!({ "runId": run_id, "attempt": 1 }))
        .await?;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("attemptToken"))
    );
    let (status, answer) = orchestrator.post("/api/progress", &beat(&token)).await?;
    assert_eq!((status, answer), (200, json!({ "cancel": false })));
    let (_, run) = orchestrator
        .get(&format!("/api/task-runs/{run_id}"))
        .await?;
    assert_eq!(
        (run["status"].clone(), run["progress"].clone()),
        (json!("running"), json!(40))
    );

    let done = json!({ "status": "success", "attempt": 1, "attemptToken": token, "output": { "ok": true } });
    let (status, answer) = orchestrator
        .post(&format!("/api/callback/{run_id}"), &done)
        .await?;
    assert_eq!(
        (status, answer["status"].clone()),
        (200, json!("succeeded")),
        "{answer}"
    );

    let (status, answer) = orchestrator
        .post(&format!("/api/callback/{run_id}"), &done)
        .await?;
    assert_eq!(status, 409, "a second callback changes nothing: {answer}");
    let failed = json!({ "status": "failure", "attempt": 1, "attemptToken": token, "error": { "message": "late" } });
    assert_eq!(
        orchestrator
            .post(&format!("/api/callback/{run_id}"), &failed)
            .await?
            .0,
        409
    );
    assert_eq!(
        orchestrator.post("/api/heartbeat", &beat(&token)).await?.0,
        409
    );

    let (_, run) = orchestrator
        .get(&format!("/api/task-runs/{run_id}"))
        .await?;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"], json!({ "ok": true }));
    assert_eq!(run["attempts"].as_array().map(Vec::len), Some(1));
    assert_eq!(run["attempts"][0]["outcome"], "succeeded");
    Ok(())
}

#[tokio::test]
async fn a_batch_of_callbacks_decides_each_as_if_sent_alone() -> Result<()> {
    let orchestrator = TestOrchestrator::start_with(Mode::Serverless, |config| {
        config.max_body_bytes = 1 << 20;
    })
    .await?;
    orchestrator
        .post("/api/register", &worker_registration("1.0.0", "a1"))
        .await?;
    let mut run_ids = Vec::new();
    for i in 0..4 {
        run_ids.push(orchestrator.enqueue("download", json!({ "n": i })).await?);
    }
    let claimed = pipeweave_orchestrator::storage::runs::claim(
        &orchestrator.pool,
        &["download".to_owned()],
        10,
        chrono::Utc::now(),
        "docs",
        i64::MAX,
    )
    .await?;
    assert_eq!(claimed.len(), 4);
    let token_of = |run_id: &str| {
        claimed
            .iter()
            .find(|c| pipeweave_orchestrator::RunId(c.id).to_string() == run_id)
            .map(|c| c.attempt_token.to_string())
            .unwrap_or_default()
    };
    let success = |run_id: &str, token: &str, n: i64| json!({ "runId": run_id, "status": "success", "attempt": 1, "attemptToken": token, "output": { "n": n } });
    let batch = json!({ "callbacks": [
        success(&run_ids[0], &token_of(&run_ids[0]), 0),
        success(&run_ids[1], &uuid::Uuid::new_v4().to_string(), 1),
        { "runId": run_ids[2], "status": "failure", "attempt": 1, "attemptToken": token_of(&run_ids[2]),
          "error": { "message": "upstream 503", "retryable": true } },
        success("trun_0196a0b00000700080000000000000ff", &uuid::Uuid::new_v4().to_string(), 3),
        success("not-a-run", &uuid::Uuid::new_v4().to_string(), 4),
        success(&run_ids[3], &token_of(&run_ids[3]), 5),
        success(&run_ids[3], &token_of(&run_ids[3]), 6),
    ]});
    let (status, answer) = orchestrator.post("/api/callbacks", &batch).await?;
    assert_eq!(status, 200, "{answer}");
    let results: Vec<(Value, Value, Value)> = answer["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|r| {
                    (
                        r["runId"].clone(),
                        r["httpStatus"].clone(),
                        r["status"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        results,
        vec![
            (json!(run_ids[0]), json!(200), json!("succeeded")),
            (json!(run_ids[1]), json!(409), Value::Null),
            (json!(run_ids[2]), json!(200), json!("awaiting_retry")),
            (
                json!("trun_0196a0b00000700080000000000000ff"),
                json!(404),
                Value::Null
            ),
            (json!("not-a-run"), json!(400), Value::Null),
            (json!(run_ids[3]), json!(200), json!("succeeded")),
            (json!(run_ids[3]), json!(409), Value::Null),
        ],
        "{answer}"
    );
    assert_eq!(answer["results"][4]["field"], "runId", "{answer}");
    assert_eq!(answer["results"][1]["code"], "conflict", "{answer}");

    // What each run is now: the batch recorded exactly what it said.
    let mut states = Vec::new();
    for run_id in &run_ids {
        let (_, run) = orchestrator
            .get(&format!("/api/task-runs/{run_id}"))
            .await?;
        states.push((run["status"].clone(), run["output"].clone()));
    }
    assert_eq!(
        states,
        vec![
            (json!("succeeded"), json!({ "n": 0 })),
            (json!("running"), Value::Null),
            (json!("awaiting_retry"), Value::Null),
            (json!("succeeded"), json!({ "n": 5 })),
        ]
    );

    let (status, answer) = orchestrator
        .post("/api/callbacks", &json!({ "callbacks": [] }))
        .await?;
    assert_eq!((status, answer["field"].clone()), (400, json!("callbacks")));
    let too_many: Vec<Value> = (0..1001)
        .map(|_| success(&run_ids[1], &token_of(&run_ids[1]), 0))
        .collect();
    let (status, answer) = orchestrator
        .post("/api/callbacks", &json!({ "callbacks": too_many }))
        .await?;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("callbacks")),
        "{answer}"
    );
    let (_, run) = orchestrator
        .get(&format!("/api/task-runs/{}", run_ids[1]))
        .await?;
    assert_eq!(run["status"], "running", "a refused batch records nothing");
    Ok(())
}

#[tokio::test]
async fn queue_status_counts_runs_by_state() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    orchestrator
        .post("/api/register", &worker_registration("1.0.0", "a1"))
        .await?;
    let batch = json!({ "tasks": [
        { "taskId": "download" },
        { "taskId": "extract", "priority": 10 },
        { "taskId": "extract", "delayMs": 3_600_000 },
    ]});
    let (status, answer) = orchestrator.post("/api/queue/batch", &batch).await?;
    assert_eq!(
        (status, answer["queued"].clone()),
        (201, json!(3)),
        "{answer}"
    );
    let (_, counts) = orchestrator.get("/api/queue/status").await?;
    assert_eq!(
        (
            counts["pending"].clone(),
            counts["waiting"].clone(),
            counts["running"].clone()
        ),
        (json!(2), json!(1), json!(0))
    );
    assert!(counts["oldestPending"].is_string());

    let (_, items) = orchestrator
        .get("/api/queue/items?taskId=extract&limit=1")
        .await?;
    assert_eq!(
        (
            items["total"].clone(),
            items["items"].as_array().map(Vec::len)
        ),
        (json!(2), Some(1))
    );
    Ok(())
}

#[tokio::test]
async fn a_tick_in_maintenance_mode_claims_nothing_until_it_ends() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    orchestrator
        .post("/api/register", &worker_registration("1.0.0", "a1"))
        .await?;
    orchestrator.enqueue("download", json!({})).await?;

    // Bad requests change nothing.
    for (body, field) in [
        (json!({ "reason": 5 }), "reason"),
        (json!({ "reason": "x".repeat(501) }), "reason"),
        (json!({ "why": "typo" }), "why"),
    ] {
        let (status, answer) = orchestrator.post("/api/maintenance/enter", &body).await?;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.to_string().contains(field), "{answer}");
    }
    let (_, status) = orchestrator.get("/api/maintenance").await?;
    assert_eq!(status["enabled"], false, "{status}");

    // An empty body is fine; entering twice keeps the first entry.
    let response = reqwest::Client::new()
        .post(format!("{}/api/maintenance/enter", orchestrator.url))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let first: Value = response.json().await?;
    let (_, again) = orchestrator
        .post("/api/maintenance/enter", &json!({ "reason": "later" }))
        .await?;
    assert_eq!(again["since"], first["since"], "{again}");
    assert_eq!(again["reason"], Value::Null, "{again}");

    let (_, tick) = orchestrator.post("/api/tick", &json!({})).await?;
    assert_eq!(
        (tick["claimed"].clone(), tick["maintenance"].clone()),
        (json!(0), json!(true)),
        "{tick}"
    );
    let (_, counts) = orchestrator.get("/api/queue/status").await?;
    assert_eq!(counts["pending"], 1, "{counts}");

    orchestrator
        .post("/api/maintenance/exit", &json!({}))
        .await?;
    let (_, tick) = orchestrator.post("/api/tick", &json!({})).await?;
    assert_eq!(
        (tick["claimed"].clone(), tick["maintenance"].clone()),
        (json!(1), json!(false)),
        "{tick}"
    );
    Ok(())
}

#[tokio::test]
async fn a_cancelled_attempt_hears_it_from_its_heartbeat_and_its_callback_changes_nothing()
-> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let registration = json!({
        "serviceId": "ops",
        "baseUrl": "http://127.0.0.1:9",
        "tasks": [{ "id": "limited", "codeHash": "l1", "concurrency": 1 }],
    });
    orchestrator.post("/api/register", &registration).await?;
    let first = orchestrator.enqueue("limited", json!(1)).await?;
    let second = orchestrator.enqueue("limited", json!(2)).await?;
    let limited = ["limited".to_owned()];
    let claim = || {
        pipeweave_orchestrator::storage::runs::claim(
            &orchestrator.pool,
            &limited,
            10,
            chrono::Utc::now(),
            "ops",
            i64::MAX,
        )
    };
    let claimed = claim().await?;
    assert_eq!(claimed.len(), 1, "the limit of 1 holds");
    let token = claimed[0].attempt_token.to_string();

    // Bad requests change nothing.
    for (path, body, field) in [
        ("/api/task-runs/nope/cancel", json!({}), "id"),
        (
            &format!("/api/task-runs/{first}/cancel")[..],
            json!({ "by": "x" }),
            "by",
        ),
        (
            &format!("/api/task-runs/{first}/cancel"),
            json!({ "reason": "x".repeat(501) }),
            "reason",
        ),
    ] {
        let (status, answer) = orchestrator.post(path, &body).await?;
        assert_eq!(status, 400, "{answer}");
        assert!(answer.to_string().contains(field), "{answer}");
    }
    let (status, _) = orchestrator
        .post(
            "/api/task-runs/trun_0000000000000000000000000000abcd/cancel",
            &json!({}),
        )
        .await?;
    assert_eq!(status, 404);
    let (_, still) = orchestrator.get(&format!("/api/task-runs/{first}")).await?;
    assert_eq!(still["status"], "running", "{still}");

    let (status, answer) = orchestrator
        .post(
            &format!("/api/task-runs/{first}/cancel"),
            &json!({ "cancelledBy": "alice", "reason": "wrong input" }),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["previousStatus"], "running");

    let beat = json!({ "runId": first, "attempt": 1, "attemptToken": token });
    let (status, answer) = orchestrator.post("/api/heartbeat", &beat).await?;
    assert_eq!((status, answer), (200, json!({ "cancel": true })));
    let late = json!({ "status": "success", "attempt": 1, "attemptToken": token, "output": 1 });
    let (status, answer) = orchestrator
        .post(&format!("/api/callback/{first}"), &late)
        .await?;
    assert_eq!(status, 409, "a late callback changes nothing: {answer}");

    let (_, run) = orchestrator.get(&format!("/api/task-runs/{first}")).await?;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["cancelledBy"], "alice", "{run}");
    assert_eq!(run["cancelReason"], "wrong input", "{run}");
    assert!(run.get("output").is_none(), "{run}");
    assert_eq!(run["attempts"][0]["outcome"], "cancelled", "{run}");

    // Its concurrency slot is free again.
    let next = claim().await?;
    assert_eq!(next.len(), 1, "the cancelled attempt released its slot");
    assert_eq!(
        pipeweave_orchestrator::RunId(next[0].id).to_string(),
        second
    );
    Ok(())
}

#[tokio::test]
async fn orphan_cleanup_cancels_only_removed_task_types_and_only_on_a_version_change() -> Result<()>
{
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    orchestrator
        .post("/api/register", &worker_registration("1.0.0", "a1"))
        .await?;
    let running = orchestrator.enqueue("extract", json!(1)).await?;
    pipeweave_orchestrator::storage::runs::claim(
        &orchestrator.pool,
        &["extract".to_owned()],
        1,
        chrono::Utc::now(),
        "docs",
        i64::MAX,
    )
    .await?;
    let queued = orchestrator.enqueue("extract", json!(2)).await?;
    let kept = orchestrator.enqueue("download", json!(3)).await?;
    let without_extract = |version: &str| {
        let mut registration = worker_registration(version, "a1");
        registration["tasks"] = json!([registration["tasks"][0].clone()]);
        registration
    };

    // A restart of the same version keeps everything.
    let (status, answer) = orchestrator
        .post("/api/register", &without_extract("1.0.0"))
        .await?;
    assert_eq!(
        (status, answer["orphansCancelled"].clone()),
        (200, json!(0)),
        "{answer}"
    );
    let status_of = |id: String| {
        let orchestrator = &orchestrator;
        async move {
            let (_, run) = orchestrator.get(&format!("/api/task-runs/{id}")).await?;
            anyhow::Ok(run)
        }
    };
    assert_eq!(status_of(queued.clone()).await?["status"], "queued");

    // A new version without `extract` cancels its waiting runs only.
    let (status, answer) = orchestrator
        .post("/api/register", &without_extract("1.1.0"))
        .await?;
    assert_eq!(
        (status, answer["orphansCancelled"].clone()),
        (200, json!(1)),
        "{answer}"
    );
    let cancelled = status_of(queued).await?;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["cancelledBy"], "orphan cleanup");
    assert_eq!(
        cancelled["cancelReason"],
        "Task type removed in version 1.1.0"
    );
    assert_eq!(
        status_of(running).await?["status"],
        "running",
        "running attempts finish"
    );
    assert_eq!(status_of(kept).await?["status"], "queued");
    let (status, refused) = orchestrator
        .post("/api/queue/task", &json!({ "taskId": "extract" }))
        .await?;
    assert_eq!(status, 404, "a removed task takes no new runs: {refused}");

    // Registering it again brings it back.
    orchestrator
        .post("/api/register", &worker_registration("1.2.0", "a1"))
        .await?;
    orchestrator.enqueue("extract", json!(4)).await?;
    Ok(())
}

#[tokio::test]
async fn with_an_api_key_writes_need_it_and_attempts_use_their_token() -> Result<()> {
    const KEY: &str = "k3y-for-the-tests-0123456789";
    let orchestrator = TestOrchestrator::start_with(Mode::Serverless, |config| {
        config.api_key = Some(KEY.to_owned());
    })
    .await?;
    let http = reqwest::Client::new();
    let register = |key: Option<&str>| {
        let mut request = http
            .post(format!("{}/api/register", orchestrator.url))
            .json(&worker_registration("1.0.0", "a1"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };

    let refused = register(None).await?;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let body: Value = refused.json().await?;
    assert_eq!(body["code"], "unauthorized", "{body}");
    assert_eq!(register(Some("not-the-key-at-all")).await?.status(), 401);
    let (_, services) = orchestrator.get("/api/services").await?;
    assert_eq!(services, json!([]), "a refused write writes nothing");
    assert_eq!(register(Some(KEY)).await?.status(), 200);

    // Reads stay open; enqueueing is a write.
    assert_eq!(orchestrator.get("/api/queue/status").await?.0, 200);
    let (status, _) = orchestrator
        .post("/api/queue/task", &json!({ "taskId": "download" }))
        .await?;
    assert_eq!(status, 401);
    let queued: Value = http
        .post(format!("{}/api/queue/task", orchestrator.url))
        .bearer_auth(KEY)
        .json(&json!({ "taskId": "download" }))
        .send()
        .await?
        .json()
        .await?;
    let run_id = queued["runId"].as_str().unwrap_or_default().to_owned();

    // An attempt's heartbeat and callback need only its token.
    let claimed = pipeweave_orchestrator::storage::runs::claim(
        &orchestrator.pool,
        &["download".to_owned()],
        1,
        chrono::Utc::now(),
        "docs",
        i64::MAX,
    )
    .await?;
    let token = claimed[0].attempt_token.to_string();
    let beat = json!({ "runId": run_id, "attempt": 1, "attemptToken": token });
    assert_eq!(orchestrator.post("/api/heartbeat", &beat).await?.0, 200);
    let done = json!({ "status": "success", "attempt": 1, "attemptToken": token, "output": 1 });
    assert_eq!(
        orchestrator
            .post(&format!("/api/callback/{run_id}"), &done)
            .await?
            .0,
        200
    );
    Ok(())
}

/// A host gets a round's attempts in one request; when it cannot be
/// reached, every attempt of that request fails as `dispatch_failed` and
/// goes back to the queue, and the host leaves the rotation until it pings.
#[tokio::test]
async fn a_batch_to_an_unreachable_host_fails_each_attempt_and_takes_the_host_out() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let hash = orchestrator.upload_module(b"a module").await?;
    let service = json!({ "serviceId": "wasm", "tasks": [{ "id": "download", "codeHash": hash }] });
    let (status, answer) = orchestrator.post("/api/register", &service).await?;
    ensure!(status == 200, "{answer}");
    // Nothing listens on port 9.
    let host = json!({ "hostId": "host-gone", "url": "http://127.0.0.1:9", "capacity": 8 });
    let (status, answer) = orchestrator.post("/api/hosts", &host).await?;
    ensure!(status == 200, "{answer}");
    for i in 0..3 {
        orchestrator.enqueue("download", json!(i)).await?;
    }

    let (_, tick) = orchestrator.post("/api/tick", &json!({})).await?;
    assert_eq!(
        (tick["claimed"].clone(), tick["dispatchFailed"].clone()),
        (json!(3), json!(3)),
        "{tick}"
    );
    let text = reqwest::get(format!("{}/metrics", orchestrator.url))
        .await?
        .text()
        .await?;
    for line in [
        "pipeweave_dispatch_duration_seconds_count 1",
        "pipeweave_dispatch_failures_total 3",
        r#"pipeweave_attempts_total{outcome="failed",reason="dispatch_failed"} 3"#,
        r#"pipeweave_runs{state="awaiting_retry"} 3"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    let out_of_rotation: bool =
        sqlx::query_scalar("select last_seen_at = '-infinity' from hosts where id = 'host-gone'")
            .fetch_one(&orchestrator.pool)
            .await?;
    assert!(out_of_rotation, "the host stays out until its next ping");
    Ok(())
}

/// A host that registers a prefetch gets up to capacity + prefetch
/// attempts in flight; a prefetch out of range is refused by name.
#[tokio::test]
async fn a_host_with_a_prefetch_is_sent_its_capacity_plus_its_prefetch() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let hash = orchestrator.upload_module(b"a module").await?;
    let service = json!({ "serviceId": "wasm", "tasks": [{ "id": "download", "codeHash": hash }] });
    let (status, answer) = orchestrator.post("/api/register", &service).await?;
    ensure!(status == 200, "{answer}");
    for (prefetch, why) in [
        (json!(3_000_000_000_u64), "above i32"),
        (json!(-1), "negative"),
        (json!("4"), "a string"),
    ] {
        let host = json!({ "hostId": "host-p", "url": "http://127.0.0.1:9", "capacity": 2, "prefetch": prefetch });
        let (status, answer) = orchestrator.post("/api/hosts", &host).await?;
        assert_eq!(
            (status, answer["field"].clone()),
            (400, json!("prefetch")),
            "{why}: {answer}"
        );
    }
    // Nothing listens on port 9: the dispatch fails, but the claim shows
    // how many attempts the host was given.
    let host =
        json!({ "hostId": "host-p", "url": "http://127.0.0.1:9", "capacity": 2, "prefetch": 3 });
    let (status, answer) = orchestrator.post("/api/hosts", &host).await?;
    ensure!(status == 200, "{answer}");
    for i in 0..8 {
        orchestrator.enqueue("download", json!(i)).await?;
    }
    let (_, tick) = orchestrator.post("/api/tick", &json!({})).await?;
    assert_eq!(tick["claimed"], 5, "capacity 2 + prefetch 3: {tick}");
    Ok(())
}

/// A heartbeat with `started` from a host (an attempt that waited there
/// for a slot) moves the attempt's start and deadline to now, keeping its
/// timeout; a plain heartbeat moves neither, and neither does `started`
/// from a plain HTTP worker, which could otherwise push its deadline back
/// forever.
#[tokio::test]
async fn a_started_heartbeat_from_a_host_counts_the_timeout_from_the_real_start() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    orchestrator
        .post("/api/register", &worker_registration("1.0.0", "a1"))
        .await?;
    let host = json!({ "hostId": "host-p", "url": "http://127.0.0.1:9", "capacity": 1 });
    let (status, answer) = orchestrator.post("/api/hosts", &host).await?;
    ensure!(status == 200, "{answer}");
    let mut attempts = Vec::new();
    for target in ["host-p", "docs"] {
        let run_id = orchestrator.enqueue("download", json!({})).await?;
        let claimed = pipeweave_orchestrator::storage::runs::claim(
            &orchestrator.pool,
            &["download".to_owned()],
            1,
            chrono::Utc::now(),
            target,
            i64::MAX,
        )
        .await?;
        ensure!(claimed.len() == 1, "{claimed:?}");
        attempts.push((run_id, claimed[0].id, claimed[0].attempt_token.to_string()));
    }
    let times = |id: uuid::Uuid| {
        let pool = orchestrator.pool.clone();
        async move {
            sqlx::query_as::<_, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>(
                "select started_at, deadline_at from runs where id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
        }
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let beat = |run_id: &str, token: &str, started: bool| json!({ "runId": run_id, "attempt": 1, "attemptToken": token, "started": started });

    let (run_id, id, token) = &attempts[0];
    let (claimed_at, first_deadline) = times(*id).await?;
    let timeout = first_deadline - claimed_at;
    let (status, answer) = orchestrator
        .post("/api/heartbeat", &beat(run_id, token, false))
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        times(*id).await?,
        (claimed_at, first_deadline),
        "a plain beat"
    );
    let (status, answer) = orchestrator
        .post("/api/heartbeat", &beat(run_id, token, true))
        .await?;
    assert_eq!(status, 200, "{answer}");
    let (started_at, deadline) = times(*id).await?;
    assert!(
        started_at - claimed_at >= chrono::Duration::milliseconds(200),
        "the start moved from {claimed_at} to {started_at}"
    );
    assert_eq!(deadline - started_at, timeout, "the timeout is kept");

    let (run_id, id, token) = &attempts[1];
    let before = times(*id).await?;
    let (status, answer) = orchestrator
        .post("/api/heartbeat", &beat(run_id, token, true))
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(times(*id).await?, before, "`started` from a worker");
    Ok(())
}

#[tokio::test]
async fn metrics_report_queue_depth_claims_dispatches_and_attempt_outcomes() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    // The worker's URL refuses connections: both dispatches fail.
    orchestrator
        .post("/api/register", &worker_registration("1.0.0", "a1"))
        .await?;
    orchestrator.enqueue("download", json!(1)).await?;
    orchestrator.enqueue("download", json!(2)).await?;
    orchestrator.enqueue("extract", json!({})).await?;
    let (_, tick) = orchestrator.post("/api/tick", &json!({})).await?;
    assert_eq!(tick["dispatchFailed"], 3, "{tick}");

    let response = reqwest::get(format!("{}/metrics", orchestrator.url)).await?;
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await?;
    for line in [
        "pipeweave_claims_total 3",
        "pipeweave_dispatch_failures_total 3",
        "pipeweave_dispatch_duration_seconds_count 3",
        r#"pipeweave_attempts_total{outcome="failed",reason="dispatch_failed"} 3"#,
        r#"pipeweave_runs{state="awaiting_retry"} 3"#,
        r#"pipeweave_runs{state="succeeded"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    Ok(())
}
