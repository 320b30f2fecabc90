//! Pipelines through the API, with the test acting as the worker: each
//! scheduler round (`POST /api/tick`) dispatches what is ready to a
//! recording HTTP worker, and the test calls back with outputs and
//! selections, so every routing shape and failure mode is checked step by
//! step against a real orchestrator and PostgreSQL.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pipeweave_orchestrator::config::Mode;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::TestOrchestrator;

/// An orchestrator in serverless mode and a worker that records what it
/// is sent.
struct Harness {
    orchestrator: TestOrchestrator,
    dispatches: UnboundedReceiver<Value>,
    /// The recording worker's base URL.
    worker: String,
}

impl Harness {
    /// Registers `tasks` (`(id, allowedNext)`) for the recording worker
    /// and the pipeline `p` with entry `entry`.
    async fn start(tasks: &[(&str, &[&str])], entry: &[&str], failure_mode: &str) -> Result<Self> {
        let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
        let (worker, dispatches) = crate::recording_worker().await?;
        let tasks: Vec<Value> = tasks
            .iter()
            .map(|(id, next)| json!({ "id": id, "codeHash": format!("{id}-v1"), "allowedNext": next, "retries": 0 }))
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
        let (status, answer) = orchestrator
            .put(
                "/api/pipelines/p",
                &json!({ "entryTasks": entry, "failureMode": failure_mode }),
            )
            .await?;
        if status != 200 {
            bail!("pipeline registration answered {status}: {answer}");
        }
        Ok(Self {
            orchestrator,
            dispatches,
            worker,
        })
    }

    async fn trigger(&self, input: Value) -> Result<String> {
        let (status, answer) = self
            .orchestrator
            .post("/api/pipelines/p/trigger", &json!({ "input": input }))
            .await?;
        if status != 201 {
            bail!("trigger answered {status}: {answer}");
        }
        answer["pipelineRunId"]
            .as_str()
            .map(str::to_owned)
            .context("no pipelineRunId")
    }

    /// One scheduler round; returns what it dispatched, by task id.
    async fn round(&mut self) -> Result<Vec<Value>> {
        let (status, report) = self.orchestrator.post("/api/tick", &json!({})).await?;
        if status != 200 {
            bail!("tick answered {status}: {report}");
        }
        let expected = report["dispatched"].as_u64().unwrap_or(0);
        let mut sent = Vec::new();
        while (sent.len() as u64) < expected {
            let dispatch = tokio::time::timeout(Duration::from_secs(10), self.dispatches.recv())
                .await?
                .context("the worker stopped")?;
            sent.push(dispatch);
        }
        sent.sort_by(|a, b| a["taskId"].as_str().cmp(&b["taskId"].as_str()));
        Ok(sent)
    }

    /// Reports success with `output`; `selected` is the `selectedNext`.
    async fn succeed(
        &self,
        dispatch: &Value,
        output: Value,
        selected: Option<&[&str]>,
    ) -> Result<Value> {
        let mut body = json!({
            "status": "success", "attempt": dispatch["attempt"],
            "attemptToken": dispatch["attemptToken"], "output": output,
        });
        if let Some(selected) = selected {
            body["selectedNext"] = json!(selected);
        }
        let run_id = dispatch["runId"].as_str().unwrap_or_default();
        let (status, answer) = self
            .orchestrator
            .post(&format!("/api/callback/{run_id}"), &body)
            .await?;
        if status != 200 {
            bail!("callback answered {status}: {answer}");
        }
        Ok(answer)
    }

    /// Reports a failure that no retry would fix.
    async fn fail(&self, dispatch: &Value) -> Result<Value> {
        let run_id = dispatch["runId"].as_str().unwrap_or_default();
        let (status, answer) = self
            .orchestrator
            .post(
                &format!("/api/callback/{run_id}"),
                &json!({ "status": "failure", "attempt": dispatch["attempt"],
                         "attemptToken": dispatch["attemptToken"],
                         "error": { "message": "broken", "code": "BROKEN", "retryable": false } }),
            )
            .await?;
        if status != 200 {
            bail!("callback answered {status}: {answer}");
        }
        Ok(answer)
    }

    async fn pipeline_run(&self, id: &str) -> Result<Value> {
        let (status, run) = self.orchestrator.get(&format!("/api/runs/{id}")).await?;
        if status != 200 {
            bail!("GET /api/runs/{id} answered {status}: {run}");
        }
        Ok(run)
    }
}

fn tasks_of(dispatches: &[Value]) -> Vec<&str> {
    dispatches
        .iter()
        .map(|d| d["taskId"].as_str().unwrap_or_default())
        .collect()
}

fn upstream_of(dispatch: &Value) -> Vec<&str> {
    dispatch["upstreamRefs"]
        .as_object()
        .map(|refs| refs.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The spec's PDF pipeline shape.
const PDF: &[(&str, &[&str])] = &[
    ("download", &["extract-text", "extract-tables"]),
    ("extract-text", &["summarize"]),
    ("extract-tables", &["summarize"]),
    ("summarize", &["notify", "archive"]),
    ("notify", &[]),
    ("archive", &[]),
];

#[tokio::test]
async fn the_pdf_pipeline_splits_joins_once_both_branches_are_done_and_ends_succeeded() -> Result<()>
{
    let mut harness = Harness::start(PDF, &["download"], "fail-fast").await?;
    let run = harness
        .trigger(json!({ "pdfUrl": "https://example.com/a.pdf" }))
        .await?;

    let sent = harness.round().await?;
    assert_eq!(tasks_of(&sent), ["download"]);
    assert_eq!(sent[0]["pipelineRunId"], run.as_str());
    assert_eq!(
        sent[0]["initialInput"]["pdfUrl"],
        "https://example.com/a.pdf"
    );
    harness
        .succeed(&sent[0], json!({ "pages": 3 }), None)
        .await?;

    // The split: both branches at once, each with download's output.
    let branches = harness.round().await?;
    assert_eq!(tasks_of(&branches), ["extract-tables", "extract-text"]);
    for branch in &branches {
        assert_eq!(upstream_of(branch), ["download"]);
        assert_eq!(branch["upstreamRefs"]["download"]["output"]["pages"], 3);
        assert_eq!(
            branch["initialInput"]["pdfUrl"],
            "https://example.com/a.pdf"
        );
    }
    // The join waits while one branch is still running.
    harness
        .succeed(&branches[1], json!({ "text": "hello" }), None)
        .await?;
    assert!(
        harness.round().await?.is_empty(),
        "summarize must wait for extract-tables"
    );
    harness
        .succeed(&branches[0], json!({ "tables": 2 }), None)
        .await?;

    let join = harness.round().await?;
    assert_eq!(tasks_of(&join), ["summarize"]);
    assert_eq!(upstream_of(&join[0]), ["extract-tables", "extract-text"]);
    harness
        .succeed(&join[0], json!({ "summary": "ok" }), None)
        .await?;

    let ends = harness.round().await?;
    assert_eq!(tasks_of(&ends), ["archive", "notify"]);
    assert_eq!(harness.pipeline_run(&run).await?["status"], "running");
    for end in &ends {
        harness.succeed(end, json!({}), None).await?;
    }
    assert!(harness.round().await?.is_empty());

    let detail = harness.pipeline_run(&run).await?;
    assert_eq!(detail["status"], "succeeded", "{detail}");
    assert!(detail["finishedAt"].is_string());
    let task_runs = detail["taskRuns"].as_array().cloned().unwrap_or_default();
    assert_eq!(task_runs.len(), 6, "each task ran once: {detail}");
    for task_run in &task_runs {
        assert_eq!(task_run["status"], "succeeded", "{task_run}");
        assert_eq!(task_run["codeVersion"], 1);
        assert_eq!(task_run["codeChanged"], false);
        assert!(task_run["startedAt"].is_string() && task_run["finishedAt"].is_string());
    }
    assert_eq!(
        detail["structureSnapshot"]["tasks"]["summarize"]["predecessors"],
        json!(["extract-tables", "extract-text"])
    );
    let (_, list) = harness.orchestrator.get("/api/runs?pipelineId=p").await?;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["status"], "succeeded");
    Ok(())
}

#[tokio::test]
async fn a_join_waits_only_for_the_branches_selected_and_an_empty_selection_ends_the_branch()
-> Result<()> {
    let tasks: &[(&str, &[&str])] = &[
        ("router", &["fast", "slow"]),
        ("fast", &["merge"]),
        ("slow", &["merge"]),
        ("merge", &["after"]),
        ("after", &[]),
    ];
    let mut harness = Harness::start(tasks, &["router"], "fail-fast").await?;
    let run = harness.trigger(json!({})).await?;
    let router = harness.round().await?;
    harness
        .succeed(&router[0], json!({}), Some(&["fast"]))
        .await?;

    let picked = harness.round().await?;
    assert_eq!(tasks_of(&picked), ["fast"], "only the selected branch runs");
    harness.succeed(&picked[0], json!({ "n": 1 }), None).await?;

    // merge does not wait for `slow`, which was never selected.
    let merge = harness.round().await?;
    assert_eq!(tasks_of(&merge), ["merge"]);
    assert_eq!(upstream_of(&merge[0]), ["fast"]);
    // An empty selection ends this branch: `after` never runs.
    harness.succeed(&merge[0], json!({}), Some(&[])).await?;
    assert!(harness.round().await?.is_empty());

    let detail = harness.pipeline_run(&run).await?;
    assert_eq!(detail["status"], "succeeded", "{detail}");
    let ran: Vec<&str> = detail["taskRuns"]
        .as_array()
        .map(|runs| runs.iter().filter_map(|r| r["taskId"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ran, ["router", "fast", "merge"]);
    Ok(())
}

#[tokio::test]
async fn a_selection_outside_allowed_next_fails_the_task_and_fail_fast_cancels_the_rest()
-> Result<()> {
    let tasks: &[(&str, &[&str])] = &[("a", &["b", "c"]), ("b", &[]), ("c", &["d"]), ("d", &[])];
    let mut harness = Harness::start(tasks, &["a"], "fail-fast").await?;
    let run = harness.trigger(json!({})).await?;
    let a = harness.round().await?;
    harness.succeed(&a[0], json!({}), None).await?;
    let split = harness.round().await?;
    assert_eq!(tasks_of(&split), ["b", "c"]);

    // c selects a task it may not.
    let answer = harness
        .succeed(&split[1], json!({}), Some(&["nope"]))
        .await?;
    assert_eq!(answer["status"], "dead", "{answer}");
    let c = harness
        .orchestrator
        .get(&format!(
            "/api/task-runs/{}",
            split[1]["runId"].as_str().unwrap_or_default()
        ))
        .await?
        .1;
    assert_eq!(c["error"]["code"], "INVALID_NEXT", "{c}");
    assert!(
        c["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"nope\""),
        "{c}"
    );

    // fail-fast: b, still running, is cancelled, and the run failed.
    let detail = harness.pipeline_run(&run).await?;
    assert_eq!(detail["status"], "failed", "{detail}");
    let b = detail["taskRuns"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["taskId"] == "b"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(b["status"], "cancelled", "{detail}");
    // b's late callback changes nothing.
    let run_id = split[0]["runId"].as_str().unwrap_or_default();
    let (status, _) = harness
        .orchestrator
        .post(
            &format!("/api/callback/{run_id}"),
            &json!({ "status": "success", "attempt": 1, "attemptToken": split[0]["attemptToken"], "output": {} }),
        )
        .await?;
    assert_eq!(status, 409);
    assert!(harness.round().await?.is_empty(), "nothing more runs");
    Ok(())
}

/// a → (b, c) → d, where b dies.
const FAN: &[(&str, &[&str])] = &[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"]), ("d", &[])];

async fn fan_with_b_dead(mode: &str) -> Result<(Harness, String)> {
    let mut harness = Harness::start(FAN, &["a"], mode).await?;
    let run = harness.trigger(json!({})).await?;
    let a = harness.round().await?;
    harness.succeed(&a[0], json!({}), None).await?;
    let split = harness.round().await?;
    assert_eq!(tasks_of(&split), ["b", "c"]);
    harness.fail(&split[0]).await?;
    assert_eq!(
        harness.pipeline_run(&run).await?["status"],
        "running",
        "{mode}: c is still running"
    );
    harness
        .succeed(&split[1], json!({ "c": true }), None)
        .await?;
    Ok((harness, run))
}

#[tokio::test]
async fn continue_lets_other_branches_finish_and_skips_the_merge() -> Result<()> {
    let (mut harness, run) = fan_with_b_dead("continue").await?;
    assert!(
        harness.round().await?.is_empty(),
        "d waits for the dead b: skipped"
    );
    let detail = harness.pipeline_run(&run).await?;
    assert_eq!(detail["status"], "failed", "{detail}");
    assert_eq!(detail["taskRuns"].as_array().map(Vec::len), Some(3));
    Ok(())
}

#[tokio::test]
async fn partial_merge_runs_the_join_with_what_succeeded_and_ends_partial() -> Result<()> {
    let (mut harness, run) = fan_with_b_dead("partial-merge").await?;
    let join = harness.round().await?;
    assert_eq!(tasks_of(&join), ["d"]);
    assert_eq!(upstream_of(&join[0]), ["c"], "only what succeeded");
    assert_eq!(join[0]["failedUpstream"], json!(["b"]), "and which failed");
    harness.succeed(&join[0], json!({}), None).await?;
    let detail = harness.pipeline_run(&run).await?;
    assert_eq!(detail["status"], "partial", "{detail}");
    Ok(())
}

#[tokio::test]
async fn registration_and_dry_run_report_problems_by_name_and_print_the_plan() -> Result<()> {
    let tasks: &[(&str, &[&str])] = &[
        ("download", &["extract-text", "extract-tables"]),
        ("extract-text", &["summarize"]),
        ("extract-tables", &["summarize"]),
        ("summarize", &["notify", "archive"]),
        ("notify", &[]),
        ("archive", &[]),
        ("loop-a", &["loop-b"]),
        ("loop-b", &["loop-a"]),
    ];
    let harness = Harness::start(tasks, &["download"], "fail-fast").await?;
    let orchestrator = &harness.orchestrator;

    let (status, dry) = orchestrator
        .post(
            "/api/pipelines/p/dry-run",
            &json!({ "input": { "test": true } }),
        )
        .await?;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["valid"], true);
    assert_eq!(
        dry["text"],
        "✓ Pipeline 'p' validated\n\nExecution plan:\n  1. download (entry)\n  2. extract-tables, extract-text (parallel)\n  3. summarize (join, waits for: extract-tables, extract-text)\n  4. archive, notify (parallel, end)\n"
    );

    // A cycle, an unknown task and a listed task out of reach, all named.
    let (status, answer) = orchestrator
        .put(
            "/api/pipelines/bad",
            &json!({ "entryTasks": ["loop-a", "ghost"] }),
        )
        .await?;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("cycle: loop-a → loop-b → loop-a"), "{error}");
    assert!(error.contains("\"ghost\""), "{error}");
    let (status, answer) = orchestrator
        .put(
            "/api/pipelines/listed",
            &json!({ "entryTasks": ["download"], "tasks": ["download", "loop-a"] }),
        )
        .await?;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("\"loop-a\" is listed but not reachable"),
        "{error}"
    );
    assert!(error.contains("\"summarize\" is reachable"), "{error}");
    let (status, answer) = orchestrator
        .put(
            "/api/pipelines/bad%20id",
            &json!({ "entryTasks": ["download"] }),
        )
        .await?;
    assert_eq!((status, answer["field"].as_str()), (400, Some("id")));
    let (status, _) = orchestrator
        .post("/api/pipelines/missing/trigger", &json!({}))
        .await?;
    assert_eq!(status, 404);

    // Registering the same definition again keeps the version; a change
    // bumps it.
    let (_, same) = orchestrator
        .put(
            "/api/pipelines/p",
            &json!({ "entryTasks": ["download"], "failureMode": "fail-fast" }),
        )
        .await?;
    assert_eq!(same["version"], 1, "{same}");
    let (_, changed) = orchestrator
        .put(
            "/api/pipelines/p",
            &json!({ "entryTasks": ["download"], "failureMode": "continue" }),
        )
        .await?;
    assert_eq!(changed["version"], 2, "{changed}");
    let (_, list) = orchestrator.get("/api/pipelines").await?;
    assert_eq!(list[0]["id"], "p");
    Ok(())
}

#[tokio::test]
async fn a_code_change_mid_run_is_flagged_on_the_run() -> Result<()> {
    let tasks: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &[])];
    let mut harness = Harness::start(tasks, &["a"], "fail-fast").await?;
    let run = harness.trigger(json!({})).await?;
    let a = harness.round().await?;
    // b's code changes while the run is under way.
    let (status, answer) = harness
        .orchestrator
        .post(
            "/api/register",
            &json!({ "serviceId": "w", "baseUrl": harness.worker, "tasks": [
                { "id": "a", "codeHash": "a-v1", "allowedNext": ["b"], "retries": 0 },
                { "id": "b", "codeHash": "b-v2", "retries": 0 },
            ] }),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    harness.succeed(&a[0], json!({}), None).await?;
    let b = harness.round().await?;
    assert_eq!(tasks_of(&b), ["b"], "the run goes on with its snapshot");
    harness.succeed(&b[0], json!({}), None).await?;

    let detail = harness.pipeline_run(&run).await?;
    assert_eq!(detail["status"], "succeeded", "{detail}");
    assert_eq!(detail["codeChanges"], json!(["b"]));
    let b_run = detail["taskRuns"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["taskId"] == "b"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(b_run["codeChanged"], true, "{detail}");
    assert_eq!(b_run["snapshotCodeHash"], "b-v1");
    Ok(())
}

impl Harness {
    /// Retries a dead task run from the dead-letter queue.
    async fn retry_from_dlq(&self, run_id: &str) -> Result<Value> {
        let (status, entry) = self.orchestrator.get(&format!("/api/dlq/{run_id}")).await?;
        if status != 200 {
            bail!("GET /api/dlq/{run_id} answered {status}: {entry}");
        }
        let id = entry["id"].as_str().unwrap_or_default();
        let (status, retried) = self
            .orchestrator
            .post(&format!("/api/dlq/{id}/retry"), &json!({}))
            .await?;
        if status != 201 {
            bail!("retry answered {status}: {retried}");
        }
        Ok(retried)
    }
}

#[tokio::test]
async fn retrying_a_dead_task_from_the_dlq_resumes_its_pipeline_run() -> Result<()> {
    // continue: the merge was skipped; the retry makes it run.
    let (mut harness, run) = fan_with_b_dead("continue").await?;
    assert!(harness.round().await?.is_empty());
    assert_eq!(harness.pipeline_run(&run).await?["status"], "failed");
    let dead_b = harness.pipeline_run(&run).await?["taskRuns"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["taskId"] == "b"))
        .and_then(|b| b["runId"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let (_, entry) = harness
        .orchestrator
        .get(&format!("/api/dlq/{dead_b}"))
        .await?;
    assert_eq!(entry["pipelineRunId"], run.as_str(), "{entry}");
    let (_, of_p) = harness.orchestrator.get("/api/dlq?pipelineId=p").await?;
    assert_eq!(of_p["total"], 1, "{of_p}");
    let (_, of_other) = harness
        .orchestrator
        .get("/api/dlq?pipelineId=other")
        .await?;
    assert_eq!(of_other["total"], 0, "{of_other}");
    let (_, none) = harness
        .orchestrator
        .post("/api/dlq/retry-all", &json!({ "pipelineId": "other" }))
        .await?;
    assert_eq!(none["retried"], 0, "{none}");
    harness.retry_from_dlq(&dead_b).await?;
    assert_eq!(harness.pipeline_run(&run).await?["status"], "running");
    let b = harness.round().await?;
    assert_eq!(tasks_of(&b), ["b"]);
    assert_eq!(b[0]["pipelineRunId"], run.as_str());
    harness.succeed(&b[0], json!({ "b": true }), None).await?;
    let d = harness.round().await?;
    assert_eq!(tasks_of(&d), ["d"]);
    assert_eq!(upstream_of(&d[0]), ["b", "c"]);
    harness.succeed(&d[0], json!({}), None).await?;
    let detail = harness.pipeline_run(&run).await?;
    assert_eq!(detail["status"], "succeeded", "{detail}");

    // fail-fast: the retry also brings back what the death cancelled.
    let mut harness = Harness::start(FAN, &["a"], "fail-fast").await?;
    let run = harness.trigger(json!({})).await?;
    let a = harness.round().await?;
    harness.succeed(&a[0], json!({}), None).await?;
    let split = harness.round().await?;
    harness.fail(&split[0]).await?;
    assert_eq!(harness.pipeline_run(&run).await?["status"], "failed");
    let (_, retried) = harness
        .orchestrator
        .post("/api/dlq/retry-all", &json!({ "pipelineId": "p" }))
        .await?;
    assert_eq!(retried["retried"], 1, "{retried}");
    let again = harness.round().await?;
    assert_eq!(tasks_of(&again), ["b", "c"], "b retried, c enqueued again");
    for dispatch in &again {
        harness.succeed(dispatch, json!({}), None).await?;
    }
    let d = harness.round().await?;
    assert_eq!(tasks_of(&d), ["d"]);
    harness.succeed(&d[0], json!({}), None).await?;
    assert_eq!(harness.pipeline_run(&run).await?["status"], "succeeded");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_run_the_same_pipelines_and_every_join_fires_exactly_once() -> Result<()> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    const BRANCHES: usize = 8;
    const RUNS: usize = 16;
    let first = TestOrchestrator::start(Mode::Standalone).await?;
    let second = first.replica(Mode::Standalone).await?;

    // A worker that completes every dispatch after a moment, through
    // whichever replica sent it, and counts dispatches per task run.
    let seen: Arc<Mutex<HashMap<(String, String), usize>>> = Arc::default();
    let joins: Arc<Mutex<Vec<usize>>> = Arc::default();
    let app = {
        let (seen, joins) = (seen.clone(), joins.clone());
        axum::Router::new().route(
            "/tasks/{task_id}",
            axum::routing::post(move |axum::Json(dispatch): axum::Json<Value>| {
                let (seen, joins) = (seen.clone(), joins.clone());
                async move {
                    let key = (
                        dispatch["pipelineRunId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        dispatch["taskId"].as_str().unwrap_or_default().to_owned(),
                    );
                    if key.1 == "join"
                        && let Ok(mut joins) = joins.lock()
                    {
                        joins.push(dispatch["upstreamRefs"].as_object().map_or(0, |r| r.len()));
                    }
                    if let Ok(mut seen) = seen.lock() {
                        *seen.entry(key).or_default() += 1;
                    }
                    tokio::spawn(async move {
                        let wait = dispatch["runId"]
                            .as_str()
                            .map_or(0, |id| u64::from(id.bytes().last().unwrap_or(0) % 20));
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        let _ = reqwest::Client::new()
                            .post(dispatch["callbackUrl"].as_str().unwrap_or_default())
                            .json(
                                &json!({ "status": "success", "attempt": dispatch["attempt"],
                                           "attemptToken": dispatch["attemptToken"],
                                           "output": { "task": dispatch["taskId"] } }),
                            )
                            .send()
                            .await;
                    });
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let worker = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let branches: Vec<String> = (0..BRANCHES).map(|i| format!("branch-{i}")).collect();
    let mut tasks = vec![json!({ "id": "split", "codeHash": "1", "allowedNext": branches })];
    for branch in &branches {
        tasks.push(json!({ "id": branch, "codeHash": "1", "allowedNext": ["join"] }));
    }
    tasks.push(json!({ "id": "join", "codeHash": "1", "allowedNext": ["end"] }));
    tasks.push(json!({ "id": "end", "codeHash": "1" }));
    let (status, answer) = first
        .post(
            "/api/register",
            &json!({ "serviceId": "w", "baseUrl": worker, "capacity": 64, "tasks": tasks }),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = first
        .put("/api/pipelines/fan", &json!({ "entryTasks": ["split"] }))
        .await?;
    assert_eq!(status, 200, "{answer}");

    for i in 0..RUNS {
        let replica = if i % 2 == 0 { &first } else { &second };
        let (status, answer) = replica
            .post(
                "/api/pipelines/fan/trigger",
                &json!({ "input": { "i": i } }),
            )
            .await?;
        assert_eq!(status, 201, "{answer}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, running) = first.get("/api/runs?status=running&limit=1").await?;
        if running["total"] == 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("pipeline runs still running: {running}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, done) = first.get("/api/runs?status=succeeded&limit=100").await?;
    assert_eq!(done["total"], RUNS, "{done}");

    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        seen.len(),
        RUNS * (BRANCHES + 3),
        "every task of every run dispatched"
    );
    assert!(
        seen.values().all(|count| *count == 1),
        "each task run dispatched once: {seen:?}"
    );
    let joins = joins.lock().map(|j| j.clone()).unwrap_or_default();
    assert_eq!(
        joins,
        vec![BRANCHES; RUNS],
        "each join once, with every branch's output"
    );
    Ok(())
}
