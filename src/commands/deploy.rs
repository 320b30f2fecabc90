//! `pipeweave deploy [dir]`: builds a project's tasks, uploads their
//! modules to an orchestrator, registers them as the project's service and
//! registers the project's pipelines. `pipeweave dev` publishes the same
//! way at start and after every rebuild, through [`publish`].

use std::path::PathBuf;

use anyhow::Context as _;
use pipeweave_host::{LoadedTask, Runner, RunnerConfig};
use pipeweave_protocol::wire::RegisterResponse;
use serde_json::{Value, json};

use crate::cli::{CommandError, exit};
use crate::client::ClientArgs;
use crate::project::{Project, ProjectTask, load_tasks};
use crate::ui;

const HELP: &str = "\
Examples:
  pipeweave deploy                                   build ./ and publish it to http://127.0.0.1:3000
  pipeweave deploy examples/pdf-pipeline --url https://pw.example.com --api-key $KEY
  pipeweave deploy --service-version 1.4.0 --json    a chosen version, a JSON report

What it does: builds every task of the project for wasm32-wasip2, uploads
each module (the orchestrator checks its SHA-256), registers the tasks as
the service named by pipeweave.toml's [project] name (or the crate), and
registers each [[pipelines]] entry. A task whose code changed gets a new
code version; runs already under way finish on the version they started.

Exit codes:
  0  published
  2  the project is invalid or does not build
  3  the orchestrator refused or could not be reached";

/// Flags of `pipeweave deploy`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub(crate) struct DeployArgs {
    /// The project: a task crate, or a folder with a pipeweave.toml.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The service version to register. Default: `build-` and a digest of
    /// the tasks' code hashes, so the same build gets the same version.
    #[arg(long = "service-version")]
    service_version: Option<String>,
    /// Build the tasks with the debug profile instead of release.
    #[arg(long)]
    debug: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// What one publish did.
#[derive(Debug)]
pub(crate) struct Published {
    /// The registration's answer (service, version, code changes).
    pub(crate) registered: RegisterResponse,
    /// The pipelines registered, by id.
    pub(crate) pipelines: Vec<String>,
}

/// Uploads the modules of `tasks`, registers them as `project`'s service
/// and registers its pipelines.
pub(crate) async fn publish(
    http: &reqwest::Client,
    api: &str,
    project: &Project,
    tasks: &[ProjectTask],
    service_version: Option<String>,
) -> anyhow::Result<Published> {
    let spinner = ui::spinner("uploading modules");
    for task in tasks {
        spinner.set_message(format!(
            "uploading {} ({} KiB)",
            task.task.descriptor().id,
            task.bytes.len() / 1024
        ));
        super::register::upload_module(http, api, &task.task, task.bytes.clone())
            .await
            .with_context(|| format!("uploading {}", task.path.display()))?;
    }
    spinner.finish_and_clear();
    let loaded: Vec<&LoadedTask> = tasks.iter().map(|t| t.task.as_ref()).collect();
    let version = service_version.unwrap_or_else(|| build_version(&loaded));
    let registered =
        super::register::register_service(http, api, project.name().to_owned(), version, &loaded)
            .await?;
    let mut pipelines = Vec::new();
    for pipeline in project.pipelines() {
        let mut definition = json!({ "entryTasks": pipeline.entry });
        if let Some(mode) = &pipeline.failure_mode {
            definition["failureMode"] = json!(mode);
        }
        if let Some(description) = &pipeline.description {
            definition["description"] = json!(description);
        }
        let _report: Value = super::register::answer(
            http.put(format!("{api}/api/pipelines/{}", pipeline.id))
                .json(&definition)
                .send()
                .await
                .with_context(|| format!("cannot reach the orchestrator at {api}"))?,
            &format!("pipeline {}", pipeline.id),
        )
        .await?;
        pipelines.push(pipeline.id.clone());
    }
    Ok(Published {
        registered,
        pipelines,
    })
}

/// `build-` and the short form of the digest of the tasks' code hashes.
fn build_version(tasks: &[&LoadedTask]) -> String {
    let mut hashes: Vec<String> = tasks.iter().map(|t| t.code_hash().to_string()).collect();
    hashes.sort();
    let digest = pipeweave_protocol::CodeHash::of(hashes.join(",").as_bytes());
    format!("build-{}", digest.short())
}

/// Prints one line per task (with its code version change, if any) and
/// per pipeline.
pub(crate) fn report(tasks: &[ProjectTask], published: &Published) {
    for task in tasks {
        let id = &task.task.descriptor().id;
        let change = published
            .registered
            .code_changes
            .iter()
            .find(|c| &c.task_id == id)
            .map(|c| format!(", code version {} → {}", c.old_version, c.new_version))
            .unwrap_or_default();
        ui::ok(
            "registered",
            format!(
                "{id} [{}] with service {}{change}",
                task.task.code_hash().short(),
                published.registered.service_id
            ),
        );
    }
    for pipeline in &published.pipelines {
        ui::ok("pipeline", pipeline);
    }
}

/// Builds, uploads and registers.
pub(crate) async fn run(args: DeployArgs) -> Result<u8, CommandError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let project = Project::discover(&args.dir).map_err(CommandError::usage)?;
    let debug = args.debug;
    let builder = project.clone();
    let components = tokio::task::spawn_blocking(move || builder.build(debug, false))
        .await
        .map_err(CommandError::internal)?
        .map_err(CommandError::usage)?;
    let runner = Runner::new(RunnerConfig {
        cache_dir: super::run::default_cache_dir(),
        ..RunnerConfig::default()
    })
    .map_err(CommandError::internal)?;
    let tasks = load_tasks(&runner, &components)
        .await
        .map_err(CommandError::usage)?;
    let http = pipeweave_host::server::orchestrator_client(args.client.api_key.as_deref())
        .context("--api-key")
        .map_err(CommandError::usage)?
        .build()
        .context("cannot build the HTTP client")
        .map_err(CommandError::internal)?;
    let api = args.client.url.trim_end_matches('/');
    let published = publish(&http, api, &project, &tasks, args.service_version)
        .await
        .map_err(CommandError::internal)?;
    if args.client.json {
        let answer = json!({
            "serviceId": published.registered.service_id,
            "version": published.registered.version,
            "tasks": tasks.iter().map(|t| json!({
                "taskId": t.task.descriptor().id,
                "codeHash": t.task.code_hash().to_string(),
                "component": t.path,
            })).collect::<Vec<_>>(),
            "codeChanges": published.registered.code_changes,
            "pipelines": published.pipelines,
        });
        println!("{answer:#}");
    } else {
        report(&tasks, &published);
    }
    Ok(exit::SUCCESS)
}
