//! The orchestrator's integration tests: a real PostgreSQL (a private
//! cluster unless `DATABASE_URL` is set; one database per test, copied
//! from a migrated template), the orchestrator serving HTTP on a free port
//! in this process, and real worker processes (the Python example worker).

mod api;
mod cancel_and_logs;
mod claim;
mod dlq;
mod e2e;
mod idempotency;
mod openapi;
mod pipelines;
mod schedules;
mod storage;
mod wakeups;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pipeweave_orchestrator::config::{Config, LogLevel, Mode};
use pipeweave_orchestrator::{Shutdown, ShutdownTrigger};
use serde_json::{Value, json};
use sqlx::PgPool;

/// A test database with the schema applied.
pub fn database() -> String {
    pipeweave_testkit::postgres::migrated_database(|url| {
        let url = url.to_owned();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let pool = pipeweave_orchestrator::connect(&url).await?;
                pipeweave_orchestrator::storage::migrate(&pool).await?;
                pool.close().await;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("migration thread panicked"))
        .and_then(|r| r)
        .unwrap_or_else(|e| panic!("cannot migrate the template database: {e:#}"));
    })
}

/// An orchestrator serving on a free port in this process.
#[derive(Debug)]
pub struct TestOrchestrator {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its database.
    pub pool: PgPool,
    /// Its database's URL.
    pub database_url: String,
    /// Its API state (for calling scheduler rounds directly).
    pub state: pipeweave_orchestrator::api::AppState,
    http: reqwest::Client,
    trigger: ShutdownTrigger,
    /// Its local storage backend's directory, removed on drop.
    pub storage_dir: tempfile::TempDir,
}

impl TestOrchestrator {
    /// Starts one on a fresh database; `mode` serverless means no
    /// background scheduler.
    pub async fn start(mode: Mode) -> Result<Self> {
        Self::start_with(mode, |_| {}).await
    }

    /// Starts one whose configuration `configure` adjusts first.
    pub async fn start_with(mode: Mode, configure: impl FnOnce(&mut Config)) -> Result<Self> {
        Self::start_on(database(), mode, configure).await
    }

    /// Starts another replica on this one's database, sharing its storage
    /// directory's backend.
    pub async fn replica(&self, mode: Mode) -> Result<Self> {
        let storage = self.state.config.storage.clone();
        Self::start_on(self.database_url.clone(), mode, move |config| {
            config.storage = storage;
        })
        .await
    }

    async fn start_on(
        database_url: String,
        mode: Mode,
        configure: impl FnOnce(&mut Config),
    ) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pool = pipeweave_orchestrator::connect(&database_url).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let storage_dir = tempfile::tempdir()?;
        let mut config = Config {
            database_url: database_url.clone(),
            listen: address,
            public_url: format!("http://{address}"),
            secret_key: [7; 32],
            mode,
            max_concurrency: 16,
            poll_interval: Duration::from_millis(100),
            max_body_bytes: 64 * 1024,
            max_module_bytes: 8 << 20,
            log_level: LogLevel::Normal,
            dlq_retention: Duration::from_secs(30 * 86_400),
            idempotency_ttl: Duration::from_secs(86_400),
            api_key: None,
            storage: pipeweave_storage::Backends::local_default(
                storage_dir.path().to_string_lossy(),
            ),
        };
        configure(&mut config);
        let state = pipeweave_orchestrator::app_state(pool.clone(), config)?;
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(pipeweave_orchestrator::serve(
            listener,
            state.clone(),
            shutdown,
        ));
        Ok(Self {
            url: format!("http://{address}"),
            database_url,
            pool,
            state,
            http: reqwest::Client::new(),
            trigger,
            storage_dir,
        })
    }

    /// POSTs JSON and returns the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// PUTs JSON and returns the status and the JSON answer.
    pub async fn put(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let response = self
            .http
            .put(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let response = self.http.get(format!("{}{path}", self.url)).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Enqueues one run and returns its id.
    pub async fn enqueue(&self, task_id: &str, input: Value) -> Result<String> {
        let (status, answer) = self
            .post(
                "/api/queue/task",
                &json!({ "taskId": task_id, "input": input }),
            )
            .await?;
        if status != 201 {
            bail!("enqueue {task_id} answered {status}: {answer}");
        }
        answer["runId"]
            .as_str()
            .map(str::to_owned)
            .context("no runId")
    }

    /// Uploads `module` as a WebAssembly module; returns its code hash.
    pub async fn upload_module(&self, module: &[u8]) -> Result<String> {
        let hash = pipeweave_protocol::CodeHash::of(module).to_string();
        let response = reqwest::Client::new()
            .put(format!("{}/api/modules/{hash}", self.url))
            .body(module.to_vec())
            .send()
            .await?;
        if response.status() != 201 {
            bail!("uploading {hash} answered {}", response.status());
        }
        Ok(hash)
    }

    /// Waits until a run reaches a final state and returns it.
    pub async fn wait_final(&self, run_id: &str, patience: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let (_, run) = self.get(&format!("/api/task-runs/{run_id}")).await?;
            if matches!(
                run["status"].as_str(),
                Some("succeeded" | "dead" | "cancelled")
            ) {
                return Ok(run);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("run {run_id} did not finish within {patience:?}: {run}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestOrchestrator {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

/// The Python worker's `/stats`.
pub async fn worker_stats(worker: &pipeweave_testkit::process::Server) -> Result<Value> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::get(format!("{}/stats", worker.url))
        .await?
        .json()
        .await?)
}

/// A plain HTTP worker that only records the dispatches it receives.
pub async fn recording_worker() -> Result<(String, tokio::sync::mpsc::UnboundedReceiver<Value>)> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/tasks/{task_id}",
        axum::routing::post(move |axum::Json(dispatch): axum::Json<Value>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send(dispatch);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, receiver))
}
