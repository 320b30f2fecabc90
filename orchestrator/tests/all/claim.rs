//! The claim statement and the end of attempts, driven directly with time
//! as a parameter: priority order, delayed runs, concurrency limits across
//! concurrent claims, and retries by policy.

use std::collections::HashSet;

use anyhow::Result;
use chrono::{Duration, SubsecRound as _, Utc};
use pipeweave_orchestrator::config::Mode;
use pipeweave_orchestrator::queue::{self, AttemptRef};
use pipeweave_orchestrator::storage::{self, RunState};
use pipeweave_protocol::FailureReason;
use pipeweave_protocol::wire::AttemptError;
use serde_json::json;

use crate::TestOrchestrator;

async fn with_tasks(tasks: serde_json::Value) -> Result<TestOrchestrator> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let (status, answer) = orchestrator
        .post(
            "/api/register",
            &json!({ "serviceId": "svc", "baseUrl": "http://127.0.0.1:9", "tasks": tasks }),
        )
        .await?;
    anyhow::ensure!(status == 200, "register: {answer}");
    Ok(orchestrator)
}

/// A target capacity that never limits a claim.
const ANY_CAPACITY: i64 = i64::MAX;

fn ids(tasks: &[&str]) -> Vec<String> {
    tasks.iter().map(|t| (*t).to_owned()).collect()
}

#[tokio::test]
async fn claims_lower_priority_numbers_first_then_older_runs() -> Result<()> {
    let orchestrator = with_tasks(json!([{ "id": "work", "codeHash": "h" }])).await?;
    let batch = json!({ "tasks": [
        { "taskId": "work", "input": "default-100-first" },
        { "taskId": "work", "input": "p200", "priority": 200 },
        { "taskId": "work", "input": "p5", "priority": 5 },
        { "taskId": "work", "input": "default-100-second" },
    ]});
    orchestrator.post("/api/queue/batch", &batch).await?;
    let mut order = Vec::new();
    for _ in 0..4 {
        let claimed = storage::runs::claim(
            &orchestrator.pool,
            &ids(&["work"]),
            1,
            Utc::now(),
            "t",
            ANY_CAPACITY,
        )
        .await?;
        order.extend(claimed.into_iter().map(|c| {
            c.input
                .as_ref()
                .and_then(|i| i.as_str())
                .unwrap_or_default()
                .to_owned()
        }));
    }
    assert_eq!(
        order,
        ["p5", "default-100-first", "default-100-second", "p200"]
    );
    Ok(())
}

#[tokio::test]
async fn a_delayed_run_is_not_claimed_before_its_time() -> Result<()> {
    let orchestrator = with_tasks(json!([{ "id": "work", "codeHash": "h" }])).await?;
    let (status, _) = orchestrator
        .post(
            "/api/queue/task",
            &json!({ "taskId": "work", "delayMs": 60_000 }),
        )
        .await?;
    assert_eq!(status, 201);
    let now = Utc::now();
    let early = storage::runs::claim(
        &orchestrator.pool,
        &ids(&["work"]),
        10,
        now + Duration::seconds(59),
        "t",
        ANY_CAPACITY,
    )
    .await?;
    assert!(early.is_empty(), "claimed a minute early");
    let due = storage::runs::claim(
        &orchestrator.pool,
        &ids(&["work"]),
        10,
        now + Duration::seconds(61),
        "t",
        ANY_CAPACITY,
    )
    .await?;
    assert_eq!(due.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_concurrency_limit_holds_across_concurrent_claims() -> Result<()> {
    let orchestrator = with_tasks(json!([
        { "id": "limited", "codeHash": "h", "concurrency": 3 },
        { "id": "free", "codeHash": "h" },
    ]))
    .await?;
    let mut tasks = Vec::new();
    for index in 0..40 {
        tasks.push(json!({ "taskId": "limited", "priority": 1, "input": index }));
        tasks.push(json!({ "taskId": "free", "priority": 2, "input": index }));
    }
    orchestrator
        .post("/api/queue/batch", &json!({ "tasks": tasks }))
        .await?;

    // Eight replicas claim at the same instant.
    let claims = (0..8).map(|replica| {
        let pool = orchestrator.pool.clone();
        tokio::spawn(async move {
            storage::runs::claim(
                &pool,
                &ids(&["limited", "free"]),
                10,
                Utc::now(),
                &format!("replica-{replica}"),
                ANY_CAPACITY,
            )
            .await
        })
    });
    let mut claimed = Vec::new();
    for claim in claims {
        claimed.extend(claim.await??);
    }
    let limited: Vec<_> = claimed.iter().filter(|c| c.task_id == "limited").collect();
    assert_eq!(limited.len(), 3, "exactly the limit runs at once");
    assert!(
        claimed.iter().filter(|c| c.task_id == "free").count() >= 40,
        "the limited task does not crowd out the others"
    );
    let unique: HashSet<_> = claimed.iter().map(|c| c.id).collect();
    assert_eq!(unique.len(), claimed.len(), "no run claimed twice");

    // Ending one attempt frees one slot.
    let first = limited[0];
    let success = storage::runs::Success {
        run_id: first.id,
        attempt: first.attempt,
        attempt_token: first.attempt_token,
        result: json!({ "output": {} }),
        logs_path: None,
    };
    assert_eq!(
        storage::runs::succeed(&orchestrator.pool, &[success], Utc::now())
            .await?
            .len(),
        1
    );
    let next = storage::runs::claim(
        &orchestrator.pool,
        &ids(&["limited"]),
        10,
        Utc::now(),
        "t",
        ANY_CAPACITY,
    )
    .await?;
    assert_eq!(next.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_claim_leaves_its_target_at_most_its_capacity_running() -> Result<()> {
    let orchestrator = with_tasks(json!([{ "id": "work", "codeHash": "h" }])).await?;
    let tasks: Vec<_> = (0..10)
        .map(|index| json!({ "taskId": "work", "input": index }))
        .collect();
    orchestrator
        .post("/api/queue/batch", &json!({ "tasks": tasks }))
        .await?;
    let work = ids(&["work"]);
    let claim = |target: &'static str| {
        storage::runs::claim(&orchestrator.pool, &work, 10, Utc::now(), target, 3)
    };

    let first = claim("a").await?;
    assert_eq!(first.len(), 3, "a batch of 10 is cut to the capacity");
    assert!(claim("a").await?.is_empty(), "a full target claims nothing");
    assert_eq!(claim("b").await?.len(), 3, "capacity is per target");

    // Ending one of a's attempts frees exactly one of its slots.
    let done = &first[0];
    let success = storage::runs::Success {
        run_id: done.id,
        attempt: done.attempt,
        attempt_token: done.attempt_token,
        result: json!({ "output": {} }),
        logs_path: None,
    };
    storage::runs::succeed(&orchestrator.pool, &[success], Utc::now()).await?;
    assert_eq!(claim("a").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_batch_of_completions_gives_each_run_its_own_result_and_skips_stale_attempts()
-> Result<()> {
    let orchestrator =
        with_tasks(json!([{ "id": "limited", "codeHash": "h", "concurrency": 4 }])).await?;
    let tasks: Vec<_> = (0..8)
        .map(|index| json!({ "taskId": "limited", "input": index }))
        .collect();
    orchestrator
        .post("/api/queue/batch", &json!({ "tasks": tasks }))
        .await?;
    let limited = ids(&["limited"]);
    let claim = || {
        storage::runs::claim(
            &orchestrator.pool,
            &limited,
            10,
            Utc::now(),
            "t",
            ANY_CAPACITY,
        )
    };
    let claimed = claim().await?;
    assert_eq!(claimed.len(), 4, "the task's limit");

    // Reported in another order than claimed, each with its own result and
    // log; the third carries a token that is not the attempt's.
    let stale = claimed[2].id;
    let successes: Vec<_> = claimed
        .iter()
        .rev()
        .map(|run| storage::runs::Success {
            run_id: run.id,
            attempt: run.attempt,
            attempt_token: if run.id == stale {
                uuid::Uuid::now_v7()
            } else {
                run.attempt_token
            },
            result: json!({ "output": { "run": run.id } }),
            logs_path: Some(format!("logs/{}", run.id)),
        })
        .collect();
    let completions = pipeweave_orchestrator::scheduler::completions_pool(&orchestrator.pool, 1);
    let finished: HashSet<_> = storage::runs::succeed(&completions, &successes, Utc::now())
        .await?
        .into_iter()
        .collect();
    let expected: HashSet<_> = claimed
        .iter()
        .map(|r| r.id)
        .filter(|id| *id != stale)
        .collect();
    assert_eq!(finished, expected, "every current attempt, and only those");

    for run in &claimed {
        let row = storage::runs::get(&orchestrator.pool, run.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("run {} is gone", run.id))?;
        if run.id == stale {
            assert_eq!(
                row.state,
                RunState::Running,
                "a stale token changes nothing"
            );
            assert_eq!(row.result, None);
        } else {
            assert_eq!(row.state, RunState::Succeeded);
            assert_eq!(row.result, Some(json!({ "output": { "run": run.id } })));
            assert_eq!(row.logs_path, Some(format!("logs/{}", run.id)));
        }
    }
    // Three of the four slots are free again (the stale one still runs).
    let next = claim().await?;
    assert_eq!(
        next.len(),
        3,
        "the three finished attempts freed their slots"
    );
    let after = claim().await?;
    assert!(after.is_empty(), "the task is at its limit again");
    Ok(())
}

#[tokio::test]
async fn a_failed_attempt_is_retried_by_policy_until_the_run_is_dead() -> Result<()> {
    let orchestrator = with_tasks(json!([{
        "id": "flaky", "codeHash": "h", "retries": 2, "retryBackoff": "exponential", "retryDelayMs": 1000
    }]))
    .await?;
    let run_id = orchestrator.enqueue("flaky", json!({})).await?;
    let error = AttemptError::decided(FailureReason::Timeout, "too slow");
    // PostgreSQL keeps microseconds.
    let mut now = Utc::now().trunc_subsecs(6);
    let mut states = Vec::new();
    for attempt in 1..=3 {
        let claimed = storage::runs::claim(
            &orchestrator.pool,
            &ids(&["flaky"]),
            1,
            now,
            "t",
            ANY_CAPACITY,
        )
        .await?;
        assert_eq!(claimed.len(), 1, "attempt {attempt} is due at {now}");
        assert_eq!(claimed[0].attempt, attempt);
        let reference = AttemptRef {
            run_id: claimed[0].id,
            attempt,
            attempt_token: claimed[0].attempt_token,
        };
        let state = queue::fail_attempt(
            &orchestrator.pool,
            &orchestrator.state.metrics,
            reference,
            &error,
            None,
            now,
        )
        .await?;
        states.push(state);
        let (_, run) = orchestrator
            .get(&format!("/api/task-runs/{run_id}"))
            .await?;
        if state == Some(RunState::AwaitingRetry) {
            let scheduled: chrono::DateTime<Utc> =
                serde_json::from_value(run["scheduledAt"].clone())?;
            let delay = scheduled - now;
            assert_eq!(
                delay.num_milliseconds(),
                1000 << (attempt - 1),
                "exponential backoff after attempt {attempt}"
            );
            let early = storage::runs::claim(
                &orchestrator.pool,
                &ids(&["flaky"]),
                1,
                scheduled - Duration::milliseconds(1),
                "t",
                ANY_CAPACITY,
            )
            .await?;
            assert!(early.is_empty(), "no retry before its backoff");
            now = scheduled;
        }
    }
    assert_eq!(
        states,
        [
            Some(RunState::AwaitingRetry),
            Some(RunState::AwaitingRetry),
            Some(RunState::Dead)
        ]
    );
    let (_, run) = orchestrator
        .get(&format!("/api/task-runs/{run_id}"))
        .await?;
    assert_eq!(run["status"], "dead");
    assert_eq!(run["attempts"].as_array().map(Vec::len), Some(3));
    assert_eq!(run["attempts"][2]["error"]["code"], "TIMEOUT");
    Ok(())
}

#[tokio::test]
async fn a_fatal_error_ends_the_run_without_retries() -> Result<()> {
    let orchestrator =
        with_tasks(json!([{ "id": "strict", "codeHash": "h", "retries": 5 }])).await?;
    orchestrator.enqueue("strict", json!({})).await?;
    let claimed = storage::runs::claim(
        &orchestrator.pool,
        &ids(&["strict"]),
        1,
        Utc::now(),
        "t",
        ANY_CAPACITY,
    )
    .await?;
    let reference = AttemptRef {
        run_id: claimed[0].id,
        attempt: 1,
        attempt_token: claimed[0].attempt_token,
    };
    let fatal = AttemptError {
        message: "bad input".into(),
        code: Some("BAD_INPUT".into()),
        retryable: false,
        reason: Some(FailureReason::TaskError),
        details: None,
    };
    assert_eq!(
        queue::fail_attempt(
            &orchestrator.pool,
            &orchestrator.state.metrics,
            reference,
            &fatal,
            None,
            Utc::now()
        )
        .await?,
        Some(RunState::Dead)
    );
    assert_eq!(
        queue::fail_attempt(
            &orchestrator.pool,
            &orchestrator.state.metrics,
            reference,
            &fatal,
            None,
            Utc::now()
        )
        .await?,
        None,
        "the attempt is over"
    );
    Ok(())
}

/// Every node of a JSON plan, depth first.
fn plan_nodes(plan: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut nodes = vec![plan];
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            nodes.extend(plan_nodes(child));
        }
    }
    nodes
}

/// The generic plan the fixed-plan settings give `sql` (with `types` for
/// its parameters, and `arguments` to explain it with), as the scheduler's
/// and the callbacks' connections would cache it.
async fn generic_plan(
    pool: &sqlx::PgPool,
    sql: &str,
    types: &str,
    arguments: &str,
) -> Result<serde_json::Value> {
    let mut conn = pool.acquire().await?;
    // The text is this repository's own statements and literals.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "prepare statement_under_test ({types}) as {sql}"
    )))
    .execute(&mut *conn)
    .await?;
    let (plan,): (serde_json::Value,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "explain (format json) execute statement_under_test ({arguments})"
    )))
    .fetch_one(&mut *conn)
    .await?;
    sqlx::raw_sql("deallocate statement_under_test")
        .execute(&mut *conn)
        .await?;
    Ok(plan[0]["Plan"].clone())
}

#[tokio::test]
async fn claims_and_completions_keep_index_plans_when_runs_looked_empty() -> Result<()> {
    let orchestrator = with_tasks(json!([{ "id": "work", "codeHash": "h" }])).await?;
    // The statistics of a fresh install: `runs` analyzed while empty, the
    // state in which a generic plan of a join once scanned every run.
    sqlx::raw_sql("vacuum analyze runs")
        .execute(&orchestrator.pool)
        .await?;
    let statement = |text: &str| {
        text.lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace('"', "")
            .replace(" as attempt_token!", " as attempt_token")
            .replace(" as code_version!", " as code_version")
            .replace(" as code_hash!", " as code_hash")
            .replace(" as declares_secrets!", " as declares_secrets")
            .trim_end()
            .trim_end_matches(';')
            .to_owned()
    };

    let completions = pipeweave_orchestrator::scheduler::completions_pool(&orchestrator.pool, 1);
    let succeed = generic_plan(
        &completions,
        &statement(include_str!("../../queries/succeed.sql")),
        "uuid[], integer[], uuid[], jsonb[], timestamptz, text[]",
        "'{}', '{}', '{}', '{}', now(), '{}'",
    )
    .await?;
    let claims = pipeweave_orchestrator::scheduler::claims_pool(&orchestrator.pool, 1);
    let claim = generic_plan(
        &claims,
        &statement(include_str!("../../queries/claim.sql")),
        "text[], bigint, timestamptz, text, bigint",
        "'{work}', 100, now(), 't', 1000",
    )
    .await?;

    for (name, plan) in [("succeed.sql", &succeed), ("claim.sql", &claim)] {
        let runs: Vec<_> = plan_nodes(plan)
            .into_iter()
            .filter(|node| node["Relation Name"] == "runs")
            .collect();
        assert!(!runs.is_empty(), "{name} reads runs: {plan:#}");
        for node in runs {
            assert!(
                node["Node Type"] != "Seq Scan" && node["Node Type"] != "Bitmap Heap Scan",
                "{name} scans the table: {plan:#}"
            );
            // An index scan with no condition walks every entry.
            assert!(
                node["Index Cond"].is_string() || node["Node Type"] == "ModifyTable",
                "{name} walks a whole index of runs: {node:#}\nin {plan:#}"
            );
        }
    }
    Ok(())
}
