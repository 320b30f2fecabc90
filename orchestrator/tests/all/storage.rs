//! Object storage through the API: the backend listing hides credentials,
//! and `GET /api/storage/{path}` answers JSON objects in the spec's shape
//! and streams everything else, from the local backend and from a real
//! S3-protocol server.

use anyhow::Result;
use pipeweave_orchestrator::config::Mode;
use serde_json::{Value, json};

use crate::TestOrchestrator;

#[tokio::test]
async fn backends_are_listed_without_their_credentials() -> Result<()> {
    let orchestrator = TestOrchestrator::start_with(Mode::Serverless, |config| {
        let local = config.storage.default_backend().clone();
        let json = json!([
            local,
            { "id": "archive", "provider": "minio", "endpoint": "http://127.0.0.1:9",
              "bucket": "archive", "credentials": { "accessKey": "ACCESS-ID", "secretKey": "VERY-SECRET" } }
        ]);
        config.storage = pipeweave_storage::Backends::from_json(&json.to_string(), Some("local"))
            .unwrap_or_else(|e| panic!("{e}"));
    })
    .await?;
    let (status, answer) = orchestrator.get("/api/storage/backends").await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["defaultBackendId"], "local");
    assert_eq!(answer["backends"][1]["provider"], "minio");
    assert_eq!(answer["backends"][1]["endpoint"], "http://127.0.0.1:9");
    let text = answer.to_string();
    assert!(
        !text.contains("VERY-SECRET")
            && !text.contains("ACCESS-ID")
            && !text.contains("credentials"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn stored_objects_are_read_in_the_spec_shape_or_streamed() -> Result<()> {
    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let root = orchestrator.storage_dir.path().join("data");
    let run = "runs/trun_0123456789abcdef0123456789abcdef";
    std::fs::create_dir_all(root.join(run).join("outputs"))?;
    std::fs::create_dir_all(root.join(run).join("assets"))?;
    std::fs::write(
        root.join(run).join("outputs/output.json"),
        br#"{"result": "processed successfully"}"#,
    )?;
    let binary: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
    std::fs::write(root.join(run).join("assets/scan.pdf"), &binary)?;

    let (status, answer) = orchestrator
        .get(&format!("/api/storage/{run}/outputs/output.json"))
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({ "path": format!("{run}/outputs/output.json"), "content": { "result": "processed successfully" } })
    );

    let http = reqwest::Client::new();
    let raw = http
        .get(format!(
            "{}/api/storage/{run}/outputs/output.json?raw=true",
            orchestrator.url
        ))
        .send()
        .await?;
    assert_eq!(raw.headers()["content-type"], "application/json");
    assert_eq!(
        raw.bytes().await?.as_ref(),
        br#"{"result": "processed successfully"}"#
    );

    let asset = http
        .get(format!(
            "{}/api/storage/{run}/assets/scan.pdf",
            orchestrator.url
        ))
        .send()
        .await?;
    assert_eq!(asset.status().as_u16(), 200);
    assert_eq!(asset.headers()["content-type"], "application/pdf");
    assert_eq!(
        asset.headers()["content-length"],
        binary.len().to_string().as_str()
    );
    assert!(
        asset.bytes().await?.as_ref() == binary.as_slice(),
        "the asset's bytes"
    );

    let (status, answer) = orchestrator
        .get(&format!("/api/storage/{run}/outputs/missing.json"))
        .await?;
    assert_eq!(
        (status, answer["code"].clone()),
        (404, json!("not_found")),
        "{answer}"
    );
    for escape in ["runs/..%2Fsecrets.json", "runs//x.json"] {
        let (status, answer) = orchestrator.get(&format!("/api/storage/{escape}")).await?;
        assert_eq!(
            (status, answer["field"].clone()),
            (400, json!("path")),
            "{escape}: {answer}"
        );
    }
    let (status, answer) = orchestrator
        .get(&format!(
            "/api/storage/{run}/outputs/output.json?backend=nope"
        ))
        .await?;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("backend")),
        "{answer}"
    );
    Ok(())
}

#[tokio::test]
async fn with_an_api_key_stored_objects_need_it() -> Result<()> {
    let key = "storage-key-0123456789";
    let orchestrator = TestOrchestrator::start_with(Mode::Serverless, |config| {
        config.api_key = Some(key.to_owned());
    })
    .await?;
    let root = orchestrator.storage_dir.path().join("data/runs/r");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("out.json"), b"{}")?;
    let url = format!("{}/api/storage/runs/r/out.json", orchestrator.url);
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await?.status().as_u16(), 401);
    let answer: Value = http.get(&url).bearer_auth(key).send().await?.json().await?;
    assert_eq!(answer["content"], json!({}));
    assert_eq!(
        orchestrator.get("/api/storage/backends").await?.0,
        200,
        "the listing has no secrets and stays open"
    );
    Ok(())
}

/// An orchestrator whose default backend is `server`'s bucket, signing
/// with `secret_key`.
async fn on_s3(
    server: &pipeweave_testkit::s3::S3Server,
    secret_key: &str,
) -> Result<TestOrchestrator> {
    let backend = json!([{
        "id": "s3", "provider": "minio", "endpoint": server.endpoint(), "bucket": server.bucket,
        "credentials": { "accessKey": server.access_key, "secretKey": secret_key }
    }]);
    let backends = pipeweave_storage::Backends::from_json(&backend.to_string(), None)?;
    TestOrchestrator::start_with(Mode::Serverless, move |config| config.storage = backends).await
}

#[tokio::test]
async fn an_s3_backend_holds_modules_and_serves_objects() -> Result<()> {
    let server = tokio::task::spawn_blocking(pipeweave_testkit::s3::S3Server::start).await?;
    let orchestrator = on_s3(&server, &server.secret_key).await?;
    let http = reqwest::Client::new();

    let module = std::fs::read(pipeweave_testkit::guest("hello"))?;
    let digest = pipeweave_protocol::CodeHash::of(&module).to_string();
    let uploaded = http
        .put(format!("{}/api/modules/{digest}", orchestrator.url))
        .body(module.clone())
        .send()
        .await?;
    assert_eq!(
        uploaded.status().as_u16(),
        201,
        "{}",
        uploaded.text().await?
    );
    assert_eq!(
        std::fs::read(server.file(&format!("modules/{digest}.wasm")))?,
        module,
        "the module is in the bucket"
    );
    let fetched = http
        .get(format!("{}/api/modules/{digest}", orchestrator.url))
        .send()
        .await?
        .bytes()
        .await?;
    assert!(fetched.as_ref() == module.as_slice(), "served back from S3");

    // What a worker wrote with its own S3 client.
    let (_, store) = orchestrator.state.stores.default_store();
    let output = br#"{"pages": 12}"#;
    let asset: Vec<u8> = (0..u32::MAX)
        .map(|i| (i % 251) as u8)
        .take(12 << 20)
        .collect();
    use pipeweave_storage::object_store::ObjectStoreExt as _;
    store
        .put(
            &"runs/r1/outputs/output.json".into(),
            output.to_vec().into(),
        )
        .await?;
    store
        .put(&"runs/r1/assets/big.bin".into(), asset.clone().into())
        .await?;

    let (status, answer) = orchestrator
        .get("/api/storage/runs/r1/outputs/output.json")
        .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], json!({ "pages": 12 }));
    let streamed = http
        .get(format!(
            "{}/api/storage/runs/r1/assets/big.bin",
            orchestrator.url
        ))
        .send()
        .await?
        .bytes()
        .await?;
    assert!(
        streamed.as_ref() == asset.as_slice(),
        "12 MiB streamed through"
    );
    let (status, _) = orchestrator
        .get("/api/storage/runs/r1/assets/none.bin")
        .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn a_backend_that_refuses_the_credentials_is_a_502_naming_storage() -> Result<()> {
    let server = tokio::task::spawn_blocking(pipeweave_testkit::s3::S3Server::start).await?;
    let orchestrator = on_s3(&server, "not-the-secret").await?;
    let (status, answer) = orchestrator
        .get("/api/storage/runs/r1/outputs/output.json")
        .await?;
    assert_eq!(
        (status, answer["code"].clone()),
        (502, json!("storage_failed")),
        "{answer}"
    );
    assert!(answer["requestId"].is_string(), "{answer}");
    Ok(())
}

#[tokio::test]
async fn each_dispatch_carries_a_sealed_storage_token_scoped_to_its_run() -> Result<()> {
    use pipeweave_storage::object_store::ObjectStoreExt as _;
    use pipeweave_storage::{Access, Sealer, TokenError, layout};

    let orchestrator = TestOrchestrator::start(Mode::Serverless).await?;
    let (worker, mut dispatches) = crate::recording_worker().await?;
    let (status, answer) = orchestrator
        .post(
            "/api/register",
            &json!({ "serviceId": "w", "baseUrl": worker, "tasks": [{ "id": "t", "codeHash": "c1", "timeout": 60 }] }),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    let run_id = orchestrator.enqueue("t", json!({ "n": 1 })).await?;
    orchestrator.post("/api/tick", &json!({})).await?;
    let dispatch = tokio::time::timeout(std::time::Duration::from_secs(10), dispatches.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no dispatch"))?;
    let token = dispatch["storageToken"].as_str().unwrap_or_default();
    assert!(token.starts_with("pwst1."), "{dispatch}");

    // The worker shares PIPEWEAVE_SECRET_KEY (the tests use [7; 32]).
    let now = chrono::Utc::now().timestamp();
    let grant = Sealer::new(&[7; 32]).open(token, now)?;
    assert_eq!(grant.run_id, run_id);
    assert_eq!(grant.attempt, 1);
    assert_eq!(grant.scope, layout::standalone_scope(&run_id, None));
    assert_eq!(grant.backend.id, "local");
    assert!(
        grant.expires_at >= now + 60,
        "it outlives the attempt's timeout: {}",
        grant.expires_at - now
    );
    assert_eq!(
        Sealer::new(&[8; 32]).open(token, now),
        Err(TokenError::Unsealable),
        "a worker with another key cannot open it"
    );

    // The worker writes its output straight to storage, inside its scope…
    let output = layout::output(&run_id, &run_id);
    let path = grant.scope.check(Access::Write, &output)?;
    grant
        .backend
        .open()?
        .put(&path, br#"{"written": "by the worker"}"#.to_vec().into())
        .await?;
    // …and could not write another run's.
    assert!(
        grant
            .scope
            .check(Access::Write, &layout::output("trun_other", "trun_other"))
            .is_err()
    );
    let (status, answer) = orchestrator.get(&format!("/api/storage/{output}")).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["content"], json!({ "written": "by the worker" }));

    // The callback may name only objects inside the run's scope.
    let callback = format!("/api/callback/{run_id}");
    let token = &dispatch["attemptToken"];
    for (field, body) in [
        (
            "outputPath",
            json!({ "outputPath": "runs/trun_other/outputs/x.json" }),
        ),
        (
            "assets.pdf.path",
            json!({ "assets": { "pdf": { "path": "modules/x.wasm", "size": 1, "type": "binary" } } }),
        ),
        (
            "logsPath",
            json!({ "logsPath": format!("standalone/{run_id}/input.json") }),
        ),
    ] {
        let mut body = body;
        body["status"] = json!("success");
        body["attempt"] = json!(1);
        body["attemptToken"] = token.clone();
        let (status, answer) = orchestrator.post(&callback, &body).await?;
        assert_eq!(
            (status, answer["field"].clone()),
            (400, json!(field)),
            "{answer}"
        );
    }
    let (status, answer) = orchestrator
        .post(
            &callback,
            &json!({ "status": "success", "attempt": 1, "attemptToken": token,
                     "outputPath": output, "outputSize": 28 }),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    let (_, run) = orchestrator
        .get(&format!("/api/task-runs/{run_id}"))
        .await?;
    assert_eq!(run["outputPath"], output.as_str(), "{run}");
    assert_eq!(run["outputSize"], 28);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_worker_reads_its_stored_input_and_writes_its_output_to_s3_through_its_token()
-> Result<()> {
    let tools = tokio::task::spawn_blocking(pipeweave_testkit::python_tools).await?;
    let server = tokio::task::spawn_blocking(pipeweave_testkit::s3::S3Server::start).await?;
    let backend = json!([{
        "id": "s3", "provider": "minio", "endpoint": server.endpoint(), "bucket": server.bucket,
        "credentials": { "accessKey": server.access_key, "secretKey": server.secret_key }
    }]);
    let backends = pipeweave_storage::Backends::from_json(&backend.to_string(), None)?;
    let orchestrator = TestOrchestrator::start_with(Mode::Standalone, move |config| {
        config.storage = backends;
        config.max_body_bytes = 1 << 20;
    })
    .await?;
    // The tests' secret is [7; 32].
    let secret = "07".repeat(32);
    let _worker = pipeweave_testkit::process::python_worker_on(
        &tools.join("python"),
        &orchestrator.url,
        &["--secret-key", &secret],
    );

    // The padding takes the input over 64 KiB, so it is stored on S3 and the
    // worker reads it there: the 5 lines prove it did.
    let run_id = orchestrator
        .enqueue(
            "report",
            json!({ "lines": 5, "padding": "x".repeat(70_000) }),
        )
        .await?;
    assert!(
        server
            .file(&format!("standalone/{run_id}/input.json"))
            .exists()
    );
    let run = orchestrator
        .wait_final(&run_id, std::time::Duration::from_secs(60))
        .await?;
    assert_eq!(run["status"], "succeeded", "{run}");
    let path = format!("runs/{run_id}/outputs/{run_id}.json");
    assert_eq!(run["outputPath"], path.as_str(), "{run}");
    assert!(run.get("output").is_none(), "{run}");
    let written = std::fs::read(server.file(&path))?;
    assert_eq!(run["outputSize"], written.len(), "{run}");
    let (status, stored) = orchestrator.get(&format!("/api/storage/{path}")).await?;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["content"]["lines"].as_array().map(Vec::len), Some(5));
    Ok(())
}

/// Files under `dir`, recursively (none if it does not exist).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[tokio::test]
async fn a_large_input_is_stored_by_reference_and_its_token_reads_it_on_every_attempt() -> Result<()>
{
    use pipeweave_storage::object_store::ObjectStoreExt as _;
    use pipeweave_storage::{Access, Sealer};

    let orchestrator = TestOrchestrator::start_with(Mode::Serverless, |config| {
        config.max_body_bytes = 1 << 20;
    })
    .await?;
    let (worker, mut dispatches) = crate::recording_worker().await?;
    let (status, answer) = orchestrator
        .post(
            "/api/register",
            &json!({ "serviceId": "w", "baseUrl": worker,
                     "tasks": [{ "id": "t", "codeHash": "c1", "retries": 0 }] }),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    let standalone = orchestrator.storage_dir.path().join("data/standalone");

    // A small input stays inline.
    let (status, small) = orchestrator
        .post(
            "/api/queue/task",
            &json!({ "taskId": "t", "input": { "n": 1 } }),
        )
        .await?;
    assert_eq!(status, 201, "{small}");
    assert!(small.get("inputPath").is_none(), "{small}");

    // One over 64 KiB of JSON is stored, and the row keeps its path.
    let input = json!({ "text": "x".repeat(100_000), "n": 2 });
    let (status, queued) = orchestrator
        .post(
            "/api/queue/task",
            &json!({ "taskId": "t", "input": input, "idempotencyKey": "big" }),
        )
        .await?;
    assert_eq!(status, 201, "{queued}");
    let run_id = queued["runId"].as_str().unwrap_or_default().to_owned();
    let input_path = format!("standalone/{run_id}/input.json");
    assert_eq!(queued["inputPath"], input_path.as_str(), "{queued}");
    let (status, stored) = orchestrator
        .get(&format!("/api/storage/{input_path}"))
        .await?;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["content"], input);
    let (_, run) = orchestrator
        .get(&format!("/api/task-runs/{run_id}"))
        .await?;
    assert_eq!(run["inputPath"], input_path.as_str(), "{run}");
    assert_eq!(run["backendId"], "local", "{run}");
    assert!(run.get("input").is_none(), "the row keeps no copy: {run}");

    // Runs that are not enqueued leave no stored input behind: a duplicate
    // and a batch naming an unknown task.
    let (status, duplicate) = orchestrator
        .post(
            "/api/queue/task",
            &json!({ "taskId": "t", "input": input, "idempotencyKey": "big" }),
        )
        .await?;
    assert_eq!((status, &duplicate["runId"]), (200, &json!(run_id)));
    let (status, answer) = orchestrator
        .post(
            "/api/queue/batch",
            &json!({ "tasks": [{ "taskId": "t", "input": input },
                               { "taskId": "nope", "input": input }] }),
        )
        .await?;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(
        files_under(&standalone),
        vec![
            orchestrator
                .storage_dir
                .path()
                .join("data")
                .join(&input_path)
        ],
        "only the enqueued run's input is stored"
    );

    // The dispatch carries the path instead of the input, and its token
    // reads it.
    orchestrator.post("/api/tick", &json!({})).await?;
    let mut dispatched = Vec::new();
    for _ in 0..2 {
        dispatched.push(
            tokio::time::timeout(std::time::Duration::from_secs(10), dispatches.recv())
                .await?
                .ok_or_else(|| anyhow::anyhow!("no dispatch"))?,
        );
    }
    let dispatch = dispatched
        .into_iter()
        .find(|d| d["runId"] == run_id.as_str())
        .ok_or_else(|| anyhow::anyhow!("run {run_id} was not dispatched"))?;
    assert_eq!(dispatch["inputPath"], input_path.as_str(), "{dispatch}");
    assert!(dispatch.get("initialInput").is_none(), "{dispatch}");
    let read_input = |dispatch: &Value| {
        let token = dispatch["storageToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let path = dispatch["inputPath"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        async move {
            let grant = Sealer::new(&[7; 32]).open(&token, chrono::Utc::now().timestamp())?;
            let path = grant.scope.check(Access::Read, &path)?;
            let bytes = grant.backend.open()?.get(&path).await?.bytes().await?;
            anyhow::Ok(serde_json::from_slice::<Value>(&bytes)?)
        }
    };
    assert_eq!(read_input(&dispatch).await?, input);

    // It dies; its dead-letter retry is a new run that reads the same
    // stored input.
    let (status, answer) = orchestrator
        .post(
            &format!("/api/callback/{run_id}"),
            &json!({ "status": "failure", "attempt": 1, "attemptToken": dispatch["attemptToken"],
                     "error": { "message": "no", "retryable": false } }),
        )
        .await?;
    assert_eq!((status, answer["status"].as_str()), (200, Some("dead")));
    let (status, entry) = orchestrator.get(&format!("/api/dlq/{run_id}")).await?;
    assert_eq!(status, 200, "{entry}");
    let (status, retried) = orchestrator
        .post(
            &format!(
                "/api/dlq/{}/retry",
                entry["id"].as_str().unwrap_or_default()
            ),
            &json!({}),
        )
        .await?;
    assert_eq!(status, 201, "{retried}");
    orchestrator.post("/api/tick", &json!({})).await?;
    let retry = tokio::time::timeout(std::time::Duration::from_secs(10), dispatches.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no dispatch of the retry"))?;
    assert_ne!(retry["runId"], run_id.as_str());
    assert_eq!(retry["inputPath"], input_path.as_str(), "{retry}");
    assert_eq!(read_input(&retry).await?, input);
    Ok(())
}
