//! `pipeweave dev`: the whole system on one machine with no
//! configuration. It starts a private PostgreSQL (from the system's server
//! binaries, in a temporary directory), an orchestrator and a host in this
//! process, builds and registers the given tasks, and optionally runs one
//! through the queue and prints its result. Ctrl-C stops everything and
//! removes the database; nothing is left running.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use pipeweave_host::server::ServerConfig;
use pipeweave_host::{Runner, RunnerConfig};
use pipeweave_orchestrator::config::{Config, LogLevel, Mode};
use pipeweave_orchestrator::embedded_postgres::{EmbeddedPostgres, Options};
use pipeweave_orchestrator::{Shutdown, ShutdownTrigger};
use serde_json::{Value, json};

use crate::build::build_task_crate;
use crate::cli::{CommandError, exit};
use crate::parse;
use crate::ui::step;

/// Flags of `pipeweave dev`.
#[derive(Debug, clap::Args)]
pub(crate) struct DevArgs {
    /// Task crates (built first) or built components (`.wasm`) to register.
    tasks: Vec<PathBuf>,
    /// Run the first task once with this input (JSON, or @file) and print
    /// its output.
    #[arg(long)]
    input: Option<String>,
    /// Stop after that run instead of serving until Ctrl-C; the exit code
    /// says whether it succeeded.
    #[arg(long, requires = "input")]
    once: bool,
    /// Port of the orchestrator's API (0 picks a free one).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Use this PostgreSQL database instead of a private one.
    #[arg(long)]
    database_url: Option<String>,
    /// Attempts the host runs at once. Default: the number of CPUs.
    #[arg(long)]
    capacity: Option<usize>,
}

/// Starts everything, runs what was asked, and stops everything.
pub(crate) async fn run(args: DevArgs) -> Result<u8, CommandError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let input = args
        .input
        .as_deref()
        .map(|text| parse::json(text, "--input"))
        .transpose()
        .map_err(CommandError::usage)?;
    let (trigger, shutdown) = Shutdown::new();
    let trigger = Arc::new(trigger);
    let on_signal = trigger.clone();
    tokio::spawn(async move {
        super::stop_signal().await;
        eprintln!("\n  stopping…");
        on_signal.trigger();
    });

    // The database first, so that it is stopped (by drop) on every path.
    let mut embedded = None;
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            let cluster = tokio::task::spawn_blocking(|| {
                EmbeddedPostgres::start(&Options {
                    durable: false,
                    ..Options::default()
                })
            })
            .await
            .map_err(CommandError::internal)?
            .map_err(CommandError::internal)?;
            step(
                "PostgreSQL",
                format!(
                    "private cluster on 127.0.0.1:{} (removed on exit)",
                    cluster.port()
                ),
            );
            let url = cluster.url("postgres");
            embedded = Some(cluster);
            url
        }
    };
    let outcome = serve_and_run(&args, input, &database_url, trigger.clone(), shutdown).await;
    trigger.trigger();
    if let Some(cluster) = embedded {
        let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
    }
    eprintln!("  stopped");
    outcome
}

async fn serve_and_run(
    args: &DevArgs,
    input: Option<Value>,
    database_url: &str,
    trigger: Arc<ShutdownTrigger>,
    shutdown: Shutdown,
) -> Result<u8, CommandError> {
    let pool = pipeweave_orchestrator::connect(database_url)
        .await
        .map_err(CommandError::internal)?;
    pipeweave_orchestrator::storage::migrate(&pool)
        .await
        .map_err(CommandError::internal)?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on 127.0.0.1:{}; choose another with --port (0 picks a free one)",
                args.port
            )
        })
        .map_err(CommandError::usage)?;
    let address = listener.local_addr().map_err(CommandError::internal)?;
    let api = format!("http://{address}");
    // A fresh key per session: nothing outlives it.
    let mut secret_key = [0u8; 32];
    secret_key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret_key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    // Inputs, outputs, assets and modules live here until the session ends.
    let storage_dir = tempfile::Builder::new()
        .prefix("pipeweave-dev-storage-")
        .tempdir()
        .map_err(CommandError::internal)?;
    let config = Config {
        database_url: database_url.to_owned(),
        listen: address,
        public_url: api.clone(),
        secret_key,
        mode: Mode::Standalone,
        max_concurrency: 16,
        poll_interval: Duration::from_millis(500),
        max_body_bytes: 1 << 20,
        max_module_bytes: 64 << 20,
        log_level: LogLevel::Minimal,
        dlq_retention: Duration::from_secs(30 * 86_400),
        idempotency_ttl: Duration::from_secs(86_400),
        api_key: None,
        storage: pipeweave_storage::Backends::local_default(storage_dir.path().to_string_lossy()),
    };
    let state = pipeweave_orchestrator::app_state(pool, config).map_err(CommandError::internal)?;
    let orchestrator = tokio::spawn(pipeweave_orchestrator::serve(
        listener,
        state,
        shutdown.clone(),
    ));
    step("orchestrator", &api);

    let runner = Arc::new(
        Runner::new(RunnerConfig {
            cache_dir: super::run::default_cache_dir(),
            ..RunnerConfig::default()
        })
        .map_err(CommandError::internal)?,
    );
    let host_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(CommandError::internal)?;
    let host_address = host_listener.local_addr().map_err(CommandError::internal)?;
    let capacity = args
        .capacity
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    let host_config = ServerConfig {
        orchestrator_url: api.clone(),
        public_url: format!("http://{host_address}"),
        host_id: "dev-host".into(),
        capacity,
        // The dev orchestrator is private and has no API key.
        api_key: None,
        secret_key,
        secrets: pipeweave_host::SecretStore::empty(),
    };
    let host_stop = shutdown.clone();
    let host = tokio::spawn(pipeweave_host::server::serve(
        host_listener,
        runner.clone(),
        host_config,
        async move {
            host_stop.wait().await;
        },
    ));
    step(
        "host",
        format!("http://{host_address} (capacity {capacity})"),
    );

    let result = async {
        let http = reqwest::Client::new();
        let mut task_ids = Vec::new();
        for path in &args.tasks {
            task_ids.push(register(&http, &api, &runner, path).await?);
        }
        if let (Some(input), Some(task_id)) = (input, task_ids.first()) {
            let succeeded = run_once(&http, &api, task_id, input, &shutdown).await?;
            if args.once {
                return Ok(if succeeded {
                    exit::SUCCESS
                } else {
                    exit::TASK_FAILED
                });
            }
        }
        let example = task_ids.first().map_or("my-task", String::as_str);
        eprintln!(
            "\nPipeWeave is running. Try:\n  curl -s {api}/api/queue/status\n  \
             curl -s -X POST {api}/api/queue/task -H 'content-type: application/json' -d '{}'\n\
             Press Ctrl-C to stop.",
            json!({ "taskId": example, "input": {} })
        );
        shutdown.wait().await;
        Ok(exit::SUCCESS)
    }
    .await;
    trigger.trigger();
    let _ = orchestrator.await;
    let _ = host.await;
    result.map_err(|error: anyhow::Error| CommandError::internal(error))
}

/// Builds (if a crate) and registers one task; returns its id.
async fn register(
    http: &reqwest::Client,
    api: &str,
    runner: &Runner,
    path: &std::path::Path,
) -> anyhow::Result<String> {
    let wasm = if path.is_dir() {
        step("building", path.display());
        let dir = path.to_owned();
        tokio::task::spawn_blocking(move || build_task_crate(&dir, false, true)).await??
    } else {
        path.to_owned()
    };
    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let task = runner
        .load(bytes.clone())
        .await
        .with_context(|| format!("{} is not a task component", wasm.display()))?;
    let registered =
        super::register::upload_and_register(http, api, &task, bytes, None, "dev".into()).await?;
    let id = task.descriptor().id.clone();
    step(
        "registered",
        format!(
            "{id} [{}] with service {}",
            task.code_hash().short(),
            registered.service_id
        ),
    );
    Ok(id)
}

/// Enqueues one run, waits for it, prints its output on stdout; returns
/// whether it succeeded.
async fn run_once(
    http: &reqwest::Client,
    api: &str,
    task_id: &str,
    input: Value,
    shutdown: &Shutdown,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let queued: Value = http
        .post(format!("{api}/api/queue/task"))
        .json(&json!({ "taskId": task_id, "input": input }))
        .send()
        .await?
        .json()
        .await?;
    let run_id = queued["runId"]
        .as_str()
        .ok_or_else(|| anyhow!("enqueue failed: {queued}"))?
        .to_owned();
    step("queued", format!("{run_id} ({task_id})"));
    loop {
        if shutdown.is_stopping() {
            bail!("stopped before run {run_id} finished");
        }
        let run: Value = http
            .get(format!("{api}/api/task-runs/{run_id}"))
            .send()
            .await?
            .json()
            .await?;
        match run["status"].as_str() {
            Some("succeeded") => {
                step(
                    "succeeded",
                    format!(
                        "in {} ms, attempt {}",
                        started.elapsed().as_millis(),
                        run["attempt"]
                    ),
                );
                println!("{}", serde_json::to_string_pretty(&run["output"])?);
                return Ok(true);
            }
            Some(state @ ("dead" | "cancelled")) => {
                step(
                    state,
                    format!(
                        "{}: {}",
                        run["error"]["code"].as_str().unwrap_or("-"),
                        run["error"]["message"].as_str().unwrap_or("")
                    ),
                );
                return Ok(false);
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
