//! Secrets end to end, with the real `pipeweave` binary: a host reads a
//! secrets directory and hands a task the secrets it declared, the task's
//! credential reaches its API, and a value the task leaks never appears in
//! the stored log, the reported error, the host's own log or `pipeweave
//! run`'s report; an attempt's log can be read while it runs.

use std::time::Duration;

use anyhow::{Result, ensure};
use axum::http::HeaderMap;
use pipeweave_testkit::process::Server;
use serde_json::{Value, json};

use super::orchestrator::{
    client, database, enqueue, host_command, orchestrator, orchestrator_with_env, register,
    register_with_args, storage_dir, wait_final,
};
use crate::{path_str, pipeweave, stderr, stdout};

const TOKEN: &str = "tok-e2e-5c1f9a7b3d";
const KEY: &str = "key-e2e-2a6e8c0f4b";

/// A secrets directory as a Kubernetes Secret volume has it: one file per
/// secret, values ending in a newline, `..data` bookkeeping to skip.
fn secrets_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("api-token"), format!("{TOKEN}\n")).expect("write");
    std::fs::write(dir.path().join("api-key"), format!("{KEY}\n")).expect("write");
    std::fs::write(dir.path().join("unrelated"), "not-for-this-task\n").expect("write");
    std::fs::create_dir(dir.path().join("..data")).expect("mkdir");
    dir
}

/// A server whose `/echo` answers with the `Authorization` header it got.
async fn echo_peer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::get(|headers: HeaderMap| async move {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned()
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/echo")
}

/// `pipeweave host` with debug logging and these extra arguments, its
/// stderr kept.
fn host(orchestrator_url: &str, id: &str, extra: &[&str]) -> Server {
    let mut command = host_command(orchestrator_url, id, 2, extra);
    command.env("PIPEWEAVE_LOG", "debug");
    Server::start_keeping_stderr(command, Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_hands_out_declared_secrets_and_a_leaked_value_appears_nowhere() -> Result<()> {
    let database_url = database();
    let orchestrator = orchestrator(&database_url, 0);
    register(&orchestrator.url, "secrets");
    let secrets = secrets_dir();
    let host = host(
        &orchestrator.url,
        "host-secrets",
        &["--secrets-dir", path_str(secrets.path())],
    );

    // The task's credential carries the value from the secrets directory.
    let echo = echo_peer().await;
    let fetched = enqueue(
        &orchestrator.url,
        "secrets",
        json!({ "mode": "fetch", "urls": [echo] }),
    )
    .await?;
    let run = wait_final(&orchestrator.url, &fetched, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["output"]["responses"][0]["body"],
        format!("Bearer {TOKEN}").as_str(),
        "outputs are the task's own and are not rewritten: {run}"
    );

    // Everything the task does with the value is redacted.
    let leaked = enqueue(&orchestrator.url, "secrets", json!({ "mode": "leak" })).await?;
    let run = wait_final(&orchestrator.url, &leaked, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "dead", "{run}");
    assert_eq!(
        run["error"]["message"], "the API refused token [redacted:api-token]",
        "{run}"
    );
    assert!(!run.to_string().contains(TOKEN), "{run}");
    let logs_path = format!("runs/{leaked}/logs/{leaked}/1.jsonl");
    assert_eq!(run["attempts"][0]["logsPath"], logs_path.as_str(), "{run}");
    let log = std::fs::read_to_string(storage_dir().join("data").join(&logs_path))?;
    assert!(!log.contains(TOKEN), "{log}");
    for line in [
        "the token is [redacted:api-token]",
        "stdout has the token [redacted:api-token]",
        "stderr has the token [redacted:api-token]",
    ] {
        assert!(log.contains(line), "{line:?} is not in the log: {log}");
    }
    let dlq: Value = client()
        .get(format!("{}/api/dlq/{leaked}", orchestrator.url))
        .send()
        .await?
        .json()
        .await?;
    assert!(!dlq.to_string().contains(TOKEN), "{dlq}");

    let host_log = host.stderr_lines().join("\n");
    assert!(
        host_log.contains("secrets=3"),
        "the host says how many secrets it read: {host_log}"
    );
    assert!(!host_log.contains(TOKEN), "{host_log}");
    assert!(!host_log.contains(KEY), "{host_log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempts_log_is_stored_while_it_runs() -> Result<()> {
    let database_url = database();
    let orchestrator = orchestrator(&database_url, 0);
    register(&orchestrator.url, "secrets");
    let _host = host(&orchestrator.url, "host-live-log", &[]);
    let run_id = enqueue(
        &orchestrator.url,
        "secrets",
        json!({ "mode": "slow", "ms": 4000 }),
    )
    .await?;
    // Heartbeats come every 500 ms, so the log so far is stored within a
    // second of the first line, long before the attempt ends.
    let log_file = storage_dir()
        .join("data")
        .join(format!("runs/{run_id}/logs/{run_id}/1.jsonl"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let early = loop {
        if let Ok(log) = std::fs::read_to_string(&log_file)
            && log.contains("\"started\"")
        {
            break log;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no log at {} while the attempt ran",
            log_file.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let run: Value = client()
        .get(format!("{}/api/task-runs/{run_id}", orchestrator.url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        run["status"], "running",
        "the log was stored before the attempt ended: {run}"
    );
    assert!(!early.contains("\"finished\""), "{early}");

    let run = wait_final(&orchestrator.url, &run_id, Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    let last = std::fs::read_to_string(&log_file)?;
    assert!(
        last.contains("\"started\"") && last.contains("\"finished\""),
        "the final upload replaces the log so far: {last}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_keeps_secrets_sealed_and_dispatches_them_to_the_tasks_that_declare_them()
-> Result<()> {
    const API_KEY: &str = "0123456789abcdef-secrets-key";
    let database_url = database();
    let orchestrator = orchestrator_with_env(&database_url, 0, &[("PIPEWEAVE_API_KEY", API_KEY)]);
    let api = &orchestrator.url;
    let http = client();
    // Setting one is a write: it needs the key.
    let refused = http
        .put(format!("{api}/api/secrets/api-token"))
        .json(&json!({ "value": TOKEN }))
        .send()
        .await?;
    assert_eq!(refused.status(), 401);
    let put = |name: &str, value: &str| {
        http.put(format!("{api}/api/secrets/{name}"))
            .bearer_auth(API_KEY)
            .json(&json!({ "value": value }))
            .send()
    };
    assert_eq!(put("api-token", "first-value").await?.status(), 201);
    assert_eq!(put("api-token", TOKEN).await?.status(), 200);
    assert_eq!(put("bad name", TOKEN).await?.status(), 400);
    let listed: Value = http
        .get(format!("{api}/api/secrets"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["secrets"][0]["name"], "api-token", "{listed}");
    assert_eq!(
        listed["secrets"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert!(!listed.to_string().contains(TOKEN), "{listed}");
    // The database holds it sealed.
    let pool = sqlx::PgPool::connect(&database_url).await?;
    let sealed: Vec<u8> = sqlx::query_scalar("select sealed from secrets where name = 'api-token'")
        .fetch_one(&pool)
        .await?;
    ensure!(
        !sealed.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
        "the value is stored in the clear"
    );

    // A host with no secrets of its own gets it in the dispatch.
    register_with_args(api, "secrets", &["--api-key", API_KEY]);
    let host = host(api, "host-dispatched-secrets", &["--api-key", API_KEY]);
    let echo = echo_peer().await;
    let fetch = || async {
        let answer: Value = http
            .post(format!("{api}/api/queue/task"))
            .bearer_auth(API_KEY)
            .json(&json!({ "taskId": "secrets", "input": { "mode": "fetch", "urls": [echo] } }))
            .send()
            .await?
            .json()
            .await?;
        let run_id = answer["runId"].as_str().unwrap_or_default().to_owned();
        let run = wait_final(api, &run_id, Duration::from_secs(60)).await?;
        ensure!(run["status"] == "succeeded", "{run}");
        Ok::<_, anyhow::Error>(run["output"]["responses"][0]["body"].clone())
    };
    assert_eq!(fetch().await?, format!("Bearer {TOKEN}").as_str());
    let host_log = host.stderr_lines().join("\n");
    assert!(!host_log.contains(TOKEN), "{host_log}");

    // Deleted, later dispatches go without it.
    let deleted = http
        .delete(format!("{api}/api/secrets/api-token"))
        .bearer_auth(API_KEY)
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    let listed: Value = http
        .get(format!("{api}/api/secrets"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["secrets"], json!([]), "{listed}");
    assert_eq!(fetch().await?, "none");
    Ok(())
}

#[test]
fn pipeweave_run_reads_a_secrets_file_and_redacts_its_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secrets.yaml");
    std::fs::write(
        &file,
        format!("# local secrets\napi-token: \"{TOKEN}\"\napi-key: {KEY}\n"),
    )
    .expect("write");
    let wasm = pipeweave_testkit::guest("secrets");
    for json in [false, true] {
        let mut args = vec![
            "run",
            path_str(&wasm),
            "--secrets-file",
            path_str(&file),
            "--input",
            r#"{"mode": "leak"}"#,
        ];
        if json {
            args.push("--json");
        }
        let output = pipeweave(&args);
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        let (out, err) = (stdout(&output), stderr(&output));
        assert!(!out.contains(TOKEN), "{out}");
        assert!(!err.contains(TOKEN), "{err}");
        assert!(
            err.contains("[info] the token is [redacted:api-token]"),
            "{err}"
        );
        if json {
            let report: Value = serde_json::from_str(&out).expect("a JSON report");
            assert_eq!(
                report["error"]["message"],
                "the API refused token [redacted:api-token]"
            );
        } else {
            assert!(
                err.contains("message      the API refused token [redacted:api-token]"),
                "{err}"
            );
        }
    }

    // A --secret flag wins over the file.
    let output = pipeweave(&[
        "run",
        path_str(&wasm),
        "--secrets-file",
        path_str(&file),
        "--secret",
        "api-token=from-the-flag",
        "--input",
        r#"{"mode": "leak"}"#,
    ]);
    let err = stderr(&output);
    assert!(err.contains("the token is [redacted:api-token]"), "{err}");
    assert!(!err.contains("from-the-flag"), "{err}");
}

#[test]
fn a_bad_secrets_file_or_directory_is_a_usage_error_that_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secrets.yaml");
    std::fs::write(&file, "github:\n  token: x\n").expect("write");
    let wasm = pipeweave_testkit::guest("secrets");
    let output = pipeweave(&["run", path_str(&wasm), "--secrets-file", path_str(&file)]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "{}: the value of \"github\" is a map",
            file.display()
        )),
        "{err}"
    );

    let secrets = tempfile::tempdir().expect("temp dir");
    std::fs::write(secrets.path().join("bad name"), "x").expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pipeweave"))
        .args(["host", "--listen", "127.0.0.1:0", "--secrets-dir"])
        .arg(secrets.path())
        .env(
            "PIPEWEAVE_SECRET_KEY",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
        )
        .output()
        .expect("pipeweave runs");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("--secrets-dir"), "{err}");
    assert!(
        err.contains("\"bad name\" is not a valid secret name"),
        "{err}"
    );
}
