//! `pipeweave register task.wasm`: uploads a task component to an
//! orchestrator and registers its task. The component's own `describe()`
//! supplies the descriptor; the orchestrator recomputes the SHA-256 of the
//! upload and refuses a mismatch.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use pipeweave_host::{LoadedTask, Runner, RunnerConfig};
use pipeweave_protocol::wire::{ModuleUploaded, RegisterRequest, RegisterResponse, RegisteredTask};

use crate::cli::{CommandError, exit};
use crate::client::ClientArgs;

const HELP: &str = "\
Examples:
  pipeweave register target/wasm32-wasip2/release/hello.wasm
  pipeweave register task.wasm --url https://pw.example.com --api-key $KEY --service docs
  pipeweave deploy examples/pdf-pipeline      a whole project: its tasks and pipelines

The component's own describe() supplies the task's descriptor; the
orchestrator recomputes the SHA-256 of the upload and refuses a mismatch. A
changed hash registers a new code version of the task.";

/// Flags of `pipeweave register`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub(crate) struct RegisterArgs {
    /// The task component (`.wasm`).
    component: PathBuf,
    /// Service id to register under. Default: the task's id.
    #[arg(long)]
    service: Option<String>,
    /// Service version; a new version cancels queued runs of tasks it no
    /// longer has.
    #[arg(long = "service-version", default_value = "0.1.0")]
    service_version: String,
    /// Where compiled components are cached (describe() runs the
    /// component once here).
    #[arg(long, env = "PIPEWEAVE_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn answer<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    what: &str,
) -> anyhow::Result<T> {
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"].as_str().unwrap_or("no details");
        return Err(anyhow!("{what} refused ({status}): {message}"));
    }
    response
        .json()
        .await
        .with_context(|| format!("{what}: unexpected answer"))
}

/// Uploads a loaded task's module to the orchestrator at `base`, keyed by
/// its code hash (uploading the same module twice is harmless).
pub(crate) async fn upload_module(
    http: &reqwest::Client,
    base: &str,
    task: &LoadedTask,
    bytes: Vec<u8>,
) -> anyhow::Result<()> {
    let _uploaded: ModuleUploaded = answer(
        http.put(format!("{base}/api/modules/{}", task.code_hash()))
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .map_err(|e| unreachable(base, e))?,
        "module upload",
    )
    .await?;
    Ok(())
}

/// Registers `tasks` (whose modules are uploaded) as the tasks of
/// `service_id`; returns the registration's answer, with the code changes.
pub(crate) async fn register_service(
    http: &reqwest::Client,
    base: &str,
    service_id: String,
    service_version: String,
    tasks: &[&LoadedTask],
) -> anyhow::Result<RegisterResponse> {
    let request = RegisterRequest {
        service_id,
        version: service_version,
        base_url: None,
        capacity: None,
        tasks: tasks
            .iter()
            .map(|task| RegisteredTask {
                descriptor: task.descriptor().clone(),
                code_hash: task.code_hash().to_string(),
            })
            .collect(),
    };
    answer(
        http.post(format!("{base}/api/register"))
            .json(&request)
            .send()
            .await
            .map_err(|e| unreachable(base, e))?,
        "registration",
    )
    .await
}

fn unreachable(base: &str, error: reqwest::Error) -> anyhow::Error {
    anyhow!("cannot reach the orchestrator at {base}: {error}")
}

/// Uploads and registers.
pub(crate) async fn run(args: RegisterArgs) -> Result<u8, CommandError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("cannot read {}", args.component.display()))
        .map_err(CommandError::usage)?;
    let runner = Runner::new(RunnerConfig {
        cache_dir: args
            .cache_dir
            .clone()
            .or_else(super::run::default_cache_dir),
        ..RunnerConfig::default()
    })
    .map_err(CommandError::internal)?;
    let task = runner
        .load(bytes.clone())
        .await
        .with_context(|| format!("{} is not a task component", args.component.display()))
        .map_err(CommandError::usage)?;
    let base = args.client.url.trim_end_matches('/');
    let size = bytes.len();
    let http = pipeweave_host::server::orchestrator_client(args.client.api_key.as_deref())
        .context("--api-key")
        .map_err(CommandError::usage)?
        .build()
        .context("cannot build the HTTP client")
        .map_err(CommandError::internal)?;
    let id = &task.descriptor().id;
    let registered = async {
        upload_module(&http, base, &task, bytes).await?;
        let service = args.service.clone().unwrap_or_else(|| id.clone());
        register_service(&http, base, service, args.service_version, &[&task]).await
    }
    .await
    .map_err(CommandError::internal)?;
    if args.client.json {
        let answer = serde_json::to_value(&registered).map_err(CommandError::internal)?;
        crate::client::print_json(&answer)?;
        return Ok(exit::SUCCESS);
    }
    let version = registered
        .code_changes
        .iter()
        .find(|c| &c.task_id == id)
        .map(|c| format!(" (code version {} → {})", c.old_version, c.new_version))
        .unwrap_or_default();
    println!(
        "registered task {id} [{}] from {} ({size} bytes) with service {}{version}",
        task.code_hash().short(),
        args.component.display(),
        registered.service_id
    );
    Ok(exit::SUCCESS)
}
