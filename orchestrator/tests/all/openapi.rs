//! The OpenAPI document: it is valid OpenAPI 3.1, it describes every
//! endpoint the orchestrator serves, and schemathesis, generating requests
//! from it against a real orchestrator on a real database, finds no server
//! error and no answer that breaks the document.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use pipeweave_orchestrator::config::Mode;
use serde_json::{Value, json};

use crate::TestOrchestrator;

/// Every endpoint of the API: the spec's, and the ones PipeWeave adds.
const ENDPOINTS: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/api/info"),
    ("get", "/api/openapi.json"),
    ("get", "/api/maintenance"),
    ("post", "/api/maintenance/enter"),
    ("post", "/api/maintenance/exit"),
    ("post", "/api/tick"),
    ("post", "/api/queue/task"),
    ("post", "/api/queue/batch"),
    ("get", "/api/queue/status"),
    ("get", "/api/queue/items"),
    ("get", "/api/task-runs/{id}"),
    ("post", "/api/task-runs/{id}/cancel"),
    ("get", "/api/task-runs/{id}/logs"),
    ("post", "/api/register"),
    ("get", "/api/services"),
    ("get", "/api/services/{id}/tasks"),
    ("get", "/api/tasks/{id}/history"),
    ("post", "/api/hosts"),
    ("put", "/api/modules/{code_hash}"),
    ("get", "/api/modules/{code_hash}"),
    ("post", "/api/heartbeat"),
    ("post", "/api/progress"),
    ("post", "/api/callback/{run_id}"),
    ("post", "/api/callbacks"),
    ("get", "/api/dlq"),
    ("get", "/api/dlq/{id}"),
    ("post", "/api/dlq/{id}/retry"),
    ("post", "/api/dlq/retry-all"),
    ("post", "/api/dlq/purge"),
    ("get", "/api/storage/backends"),
    ("get", "/api/storage/{path}"),
    ("get", "/api/pipelines"),
    ("put", "/api/pipelines/{id}"),
    ("get", "/api/pipelines/{id}"),
    ("post", "/api/pipelines/{id}/dry-run"),
    ("post", "/api/pipelines/{id}/trigger"),
    ("get", "/api/runs"),
    ("get", "/api/runs/{id}"),
    ("post", "/api/runs/{id}/cancel"),
    ("post", "/api/schedules"),
    ("get", "/api/schedules"),
    ("get", "/api/schedules/{id}"),
    ("delete", "/api/schedules/{id}"),
    ("put", "/api/secrets/{name}"),
    ("get", "/api/secrets"),
    ("delete", "/api/secrets/{name}"),
];

/// The operations a document describes, as `(method, path)`.
fn operations(document: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                found.push((method.to_owned(), path.clone()));
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn the_document_describes_exactly_the_endpoints_that_are_served() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let (status, document) = orchestrator.get("/api/openapi.json").await?;
    assert_eq!(status, 200, "{document}");
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));

    let mut expected: Vec<(String, String)> = ENDPOINTS
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(operations(&document), expected);

    // Each described operation is served: with made-up path parameters
    // and no body, the answer is the API's own (JSON, or a success), never
    // the router's bare 404 or 405 for a route it does not have.
    let http = reqwest::Client::new();
    for (method, path) in operations(&document) {
        let concrete = path
            .replace("{id}", "trun_0123456789abcdef0123456789abcdef")
            .replace("{run_id}", "trun_0123456789abcdef0123456789abcdef")
            .replace("{code_hash}", &"ab".repeat(32))
            .replace(
                "{path}",
                "runs/trun_0123456789abcdef0123456789abcdef/outputs/output.json",
            );
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())?;
        let response = http
            .request(method.clone(), format!("{}{concrete}", orchestrator.url))
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        let json_error = serde_json::from_slice::<Value>(&body)
            .map(|answer| answer["code"].is_string())
            .unwrap_or(false);
        assert!(
            status.is_success() || json_error,
            "{method} {concrete} is described but not served: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    // Responses name their types, and the shared shapes are components.
    let schemas = &document["components"]["schemas"];
    for name in [
        "ErrorBody",
        "QueueTask",
        "QueuedRun",
        "RunDetail",
        "RunSummary",
        "RegisterRequest",
        "RegisterResponse",
        "Callback",
        "Heartbeat",
        "DlqEntryDetail",
        "TaskDescriptor",
    ] {
        assert!(schemas.get(name).is_some(), "no schema {name}");
    }
    let run = &document["paths"]["/api/task-runs/{id}"]["get"]["responses"];
    assert_eq!(
        run["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/RunDetail"
    );
    assert_eq!(
        run["404"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    let enqueue = &document["paths"]["/api/queue/task"]["post"];
    assert!(
        enqueue["responses"].get("413").is_some() && enqueue["responses"].get("503").is_some(),
        "shared responses are added: {enqueue}"
    );
    assert!(
        enqueue["security"].is_array(),
        "writes name the optional API key"
    );
    assert!(
        document["paths"]["/api/heartbeat"]["post"]
            .get("security")
            .is_none(),
        "attempts authenticate with their token, not the key"
    );
    Ok(())
}

/// Registers a plain HTTP service whose worker does not listen, enqueues
/// runs and ticks once, so the fuzzer meets real tasks, runs and
/// dead-letter entries as well as made-up ones.
async fn registered_service(orchestrator: &TestOrchestrator) -> Result<()> {
    let (status, answer) = orchestrator
        .post(
            "/api/register",
            &json!({
                "serviceId": "fuzzed",
                "version": "1.0.0",
                // Nothing listens there: dispatches fail, and runs retry or
                // die, which fills the dead-letter queue for the fuzzer.
                "baseUrl": "http://127.0.0.1:9",
                "tasks": [
                    { "id": "echo", "codeHash": "e1", "retries": 0 },
                    { "id": "slow", "codeHash": "s1", "timeout": 1 }
                ]
            }),
        )
        .await?;
    ensure!(status == 200, "register answered {status}: {answer}");
    for input in [json!({"n": 1}), json!("text"), Value::Null] {
        orchestrator.enqueue("echo", input).await?;
    }
    let (status, answer) = orchestrator.post("/api/tick", &json!({})).await?;
    ensure!(status == 200, "tick answered {status}: {answer}");
    Ok(())
}

#[tokio::test]
async fn the_document_is_valid_and_schemathesis_finds_no_server_error_and_no_answer_that_breaks_it()
-> Result<()> {
    let tools = tokio::task::spawn_blocking(pipeweave_testkit::python_tools).await?;
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    registered_service(&orchestrator).await?;

    // The document is valid OpenAPI 3.1 (openapi-spec-validator).
    let (_, document) = orchestrator.get("/api/openapi.json").await?;
    let file = tempfile::NamedTempFile::with_suffix(".json")?;
    std::fs::write(file.path(), serde_json::to_vec(&document)?)?;
    let validated = Command::new(tools.join("openapi-spec-validator"))
        .arg(file.path())
        .output()
        .context("cannot run openapi-spec-validator")?;
    assert!(
        validated.status.success(),
        "the document is not valid OpenAPI:\n{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );

    let st = tools.join("st");

    let report = tempfile::tempdir()?;
    let url = format!("{}/api/openapi.json", orchestrator.url);
    let seed = std::env::var("PIPEWEAVE_FUZZ_SEED").unwrap_or_else(|_| "20261126".to_owned());
    let examples = std::env::var("PIPEWEAVE_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".to_owned());
    let started = Instant::now();
    let output = tokio::task::spawn_blocking({
        let report = report.path().to_owned();
        move || {
            Command::new(st)
                .args(["run", &url])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,\
                     response_schema_conformance,negative_data_rejection",
                ])
                .args(["--phases", "examples,coverage,fuzzing,stateful"])
                .args(["--max-examples", &examples, "--seed", &seed])
                .args(["--workers", "2", "--request-timeout", "10"])
                .arg("--report-dir")
                .arg(&report)
                // Its cache (.schemathesis/) goes there too, not into the tree.
                .current_dir(&report)
                .env("NO_COLOR", "1")
                .output()
        }
    })
    .await?
    .context("cannot run schemathesis")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "schemathesis took {:.1} s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every operation but the document itself, which schemathesis leaves
    // out when it loads the document from that URL.
    let tested = format!("Tested: {}", ENDPOINTS.len() - 1);
    assert!(
        stdout.lines().any(|line| line.trim() == tested),
        "schemathesis did not test all {} other operations:\n{stdout}",
        ENDPOINTS.len() - 1
    );
    Ok(())
}
