//! `pipeweave dev`: the whole system on one machine with no configuration,
//! and the author's edit loop.
//!
//! In a project (a task crate, or a folder with a `pipeweave.toml`) it
//! starts a private PostgreSQL whose data lives in the project's
//! `.pipeweave/` folder and is reused by the next start, an orchestrator
//! and a host in this process, with local storage in the same folder. It
//! builds the project's tasks for `wasm32-wasip2`, registers them and the
//! project's pipelines, optionally runs one with `--input`, and then
//! watches the sources: an edit rebuilds the project and registers every
//! task whose code changed as a new code version, while runs already under
//! way finish on the version they started with (hosts run a module by its
//! code hash). Ctrl-C stops everything; nothing is left running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use notify::Watcher as _;
use pipeweave_host::server::ServerConfig;
use pipeweave_host::{Runner, RunnerConfig};
use pipeweave_orchestrator::config::{Config, LogLevel, Mode};
use pipeweave_orchestrator::embedded_postgres::{EmbeddedPostgres, Options, can_keep_in};
use pipeweave_orchestrator::{Shutdown, ShutdownTrigger};
use serde_json::{Value, json};

use crate::cli::{CommandError, exit};
use crate::client::{ApiClient, ClientArgs, segment};
use crate::project::{Project, ProjectTask, load_tasks};
use crate::{parse, ui};

const HELP: &str = "\
Examples:
  pipeweave dev                                      serve the project in ./ and rebuild on every edit
  pipeweave dev examples/pdf-pipeline --input '{\"pdfUrl\": \"https://example.com/a.pdf\", \"pages\": 3}'
                                                     …and run its pipeline once with that input
  pipeweave dev examples/hello --input '{\"name\": \"Ada\"}' --once
                                                     run one task through the queue and exit with its outcome
  pipeweave dev --temp                               a throwaway database, removed on exit

What it keeps: the project's .pipeweave/ folder holds the database
(postgres/), stored inputs, outputs and assets (storage/) and the storage
key (secret-key); the next `pipeweave dev` reuses them, so runs and code
versions survive restarts. Delete the folder to start afresh. Secrets come
from the project's .secrets.yaml, read at start (restart after editing it);
each attempt gets only the secrets its task declares.

Exit codes:
  0  stopped with Ctrl-C, or (with --once) the run succeeded
  1  (with --once) the run failed
  2  usage error: bad arguments or input, no project, a build that fails at start
  3  PostgreSQL, the orchestrator or the host could not start";

/// Flags of `pipeweave dev`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub(crate) struct DevArgs {
    /// Projects (task crates or folders with a pipeweave.toml) or built
    /// components (`.wasm`) to serve. Default: the current directory, if
    /// it holds a Cargo.toml; else nothing is built and the orchestrator
    /// serves plain HTTP workers and later registrations.
    paths: Vec<PathBuf>,
    /// Run a pipeline or task once with this input (JSON, or @file) and
    /// print its result.
    #[arg(long, short = 'i')]
    input: Option<String>,
    /// What `--input` runs: a pipeline id or a task id. Default: the first
    /// project's first pipeline, else its first task.
    #[arg(long, requires = "input", value_name = "ID")]
    run: Option<String>,
    /// Stop after that run instead of serving until Ctrl-C; the exit code
    /// says whether it succeeded.
    #[arg(long, requires = "input")]
    once: bool,
    /// Port of the orchestrator's API (0 picks a free one).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Use this PostgreSQL database instead of a private one.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Keep nothing: a throwaway database and storage, removed on exit,
    /// instead of the project's .pipeweave/ folder.
    #[arg(long)]
    temp: bool,
    /// Attempts the host runs at once. Default: the number of CPUs.
    #[arg(long)]
    capacity: Option<usize>,
    /// Do not watch the sources for edits.
    #[arg(long)]
    no_watch: bool,
    /// Build tasks with the debug profile instead of release.
    #[arg(long)]
    debug: bool,
}

/// What `pipeweave dev` serves.
#[derive(Debug)]
enum Source {
    /// A project: built, registered, watched.
    Project(Project),
    /// A built component: registered as a service of its own.
    Component(PathBuf),
}

/// Where the database, storage and key live: the first project's
/// `.pipeweave/` folder, or a temporary one removed on exit.
#[derive(Debug)]
struct StateDir {
    path: PathBuf,
    /// Where a kept database lives: `postgres/` in `path`, unless the
    /// `postgres` user cannot reach it (see [`kept_database_dir`]). Not
    /// created when dev uses another database (`--database-url`).
    postgres: PathBuf,
    kept: bool,
    _temporary: Option<tempfile::TempDir>,
}

impl StateDir {
    /// `embedded_database`: whether dev starts its own PostgreSQL (no
    /// `--database-url`); only then is a folder for it chosen (and
    /// created).
    fn choose(sources: &[Source], temp: bool, embedded_database: bool) -> anyhow::Result<Self> {
        let project = sources.iter().find_map(|source| match source {
            Source::Project(project) => Some(project),
            Source::Component(_) => None,
        });
        match project {
            Some(project) if !temp => {
                let path = project.root().join(".pipeweave");
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                // Never committed, whatever the project's .gitignore says.
                let ignore = path.join(".gitignore");
                if !ignore.exists() {
                    std::fs::write(&ignore, "*\n")
                        .with_context(|| format!("cannot write {}", ignore.display()))?;
                }
                let postgres = if embedded_database {
                    kept_database_dir(&path)?
                } else {
                    path.join("postgres")
                };
                Ok(Self {
                    path,
                    postgres,
                    kept: true,
                    _temporary: None,
                })
            }
            _ => {
                let temporary = tempfile::Builder::new()
                    .prefix("pipeweave-dev-")
                    .tempdir()
                    .context("cannot create a temporary folder")?;
                Ok(Self {
                    path: temporary.path().to_owned(),
                    postgres: temporary.path().join("postgres"),
                    kept: false,
                    _temporary: Some(temporary),
                })
            }
        }
    }

    /// The storage key: kept in `secret-key` (mode 0600) so that what was
    /// sealed with it stays readable after a restart.
    fn secret_key(&self) -> anyhow::Result<[u8; 32]> {
        let file = self.path.join("secret-key");
        if self.kept
            && let Ok(text) = std::fs::read_to_string(&file)
        {
            return pipeweave_storage::parse_secret_key(text.trim())
                .map_err(|e| anyhow!("{} is not a storage key ({e}); delete it", file.display()));
        }
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        if self.kept {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&file, &hex)?;
        }
        Ok(key)
    }
}

/// Where to keep the project's database: `.pipeweave/postgres`, or, when
/// this runs as root in a folder the `postgres` user cannot reach (a clone
/// under `/root`), a folder of its own under `/var/tmp` named after the
/// project's path, so it is still found by the next start.
fn kept_database_dir(state: &Path) -> anyhow::Result<PathBuf> {
    let local = state.join("postgres");
    if can_keep_in(&local) {
        return Ok(local);
    }
    let _ = std::fs::remove_dir(&local);
    let project = state.canonicalize().unwrap_or_else(|_| state.to_owned());
    let digest = pipeweave_protocol::CodeHash::of(project.to_string_lossy().as_bytes());
    let shared = if Path::new("/var/tmp").is_dir() {
        PathBuf::from("/var/tmp")
    } else {
        std::env::temp_dir()
    };
    let elsewhere = shared
        .join(format!("pipeweave-dev-{}", digest.short()))
        .join("postgres");
    if !can_keep_in(&elsewhere) {
        bail!(
            "the postgres user can write neither to {} nor to {}; use --temp or --database-url",
            local.display(),
            elsewhere.display()
        );
    }
    Ok(elsewhere)
}

fn write_private(file: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot write {}", file.display()))?;
    out.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))
}

/// Starts everything, runs what was asked, serves, and stops everything.
pub(crate) async fn run(args: DevArgs) -> Result<u8, CommandError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let input = args
        .input
        .as_deref()
        .map(|text| parse::json(text, "--input"))
        .transpose()
        .map_err(CommandError::usage)?;
    // No paths: the project in the current directory, if there is one;
    // else nothing to build, and the orchestrator still serves (for plain
    // HTTP workers, or `pipeweave register` later).
    let paths = if !args.paths.is_empty() {
        args.paths.clone()
    } else if Path::new("Cargo.toml").is_file() {
        vec![PathBuf::from(".")]
    } else {
        ui::step(
            "no project",
            "no Cargo.toml here: serving with no tasks (pass a project directory to build one)",
        );
        Vec::new()
    };
    let sources = paths
        .iter()
        .map(|path| {
            if path.extension().is_some_and(|e| e == "wasm") {
                Ok(Source::Component(path.clone()))
            } else {
                Project::discover(path).map(Source::Project)
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(CommandError::usage)?;
    let state_dir = StateDir::choose(&sources, args.temp, args.database_url.is_none())
        .map_err(CommandError::internal)?;

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
            let spinner = ui::spinner("starting PostgreSQL");
            let options = Options {
                durable: state_dir.kept,
                keep_in: state_dir.kept.then(|| state_dir.postgres.clone()),
                ..Options::default()
            };
            let cluster = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&options))
                .await
                .map_err(CommandError::internal)?
                .map_err(CommandError::internal)?;
            spinner.finish_and_clear();
            let kept = if state_dir.kept {
                format!("data in {}", state_dir.postgres.display())
            } else {
                "removed on exit".to_owned()
            };
            ui::step(
                "PostgreSQL",
                format!("private cluster on 127.0.0.1:{} ({kept})", cluster.port()),
            );
            let url = cluster.url("postgres");
            embedded = Some(cluster);
            url
        }
    };
    let outcome = serve(
        &args,
        &sources,
        &state_dir,
        input,
        &database_url,
        trigger.clone(),
        shutdown,
    )
    .await;
    trigger.trigger();
    if let Some(cluster) = embedded {
        let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
    }
    eprintln!("  stopped");
    outcome
}

/// The secrets of every project's `.secrets.yaml` that exists (a later
/// project wins on a name two define); the host hands each attempt only
/// those its task declared.
fn project_secrets(sources: &[Source]) -> anyhow::Result<pipeweave_host::SecretStore> {
    let mut secrets = pipeweave_host::SecretStore::empty();
    for source in sources {
        let Source::Project(project) = source else {
            continue;
        };
        let file = project.secrets_file();
        if file.is_file() {
            let found = pipeweave_host::SecretStore::from_yaml_file(&file)?;
            ui::step(
                "secrets",
                format!("{} from {}", found.len(), file.display()),
            );
            secrets = secrets.merged(&found);
        }
    }
    Ok(secrets)
}

/// The running system: its API and what serves runs.
struct Running {
    api: String,
    http: reqwest::Client,
    runner: Arc<Runner>,
}

async fn serve(
    args: &DevArgs,
    sources: &[Source],
    state_dir: &StateDir,
    input: Option<Value>,
    database_url: &str,
    trigger: Arc<ShutdownTrigger>,
    shutdown: Shutdown,
) -> Result<u8, CommandError> {
    let pool = pipeweave_orchestrator::connect(database_url)
        .await
        .map_err(CommandError::internal)?;
    let spinner = ui::spinner("applying migrations");
    pipeweave_orchestrator::storage::migrate(&pool)
        .await
        .map_err(CommandError::internal)?;
    spinner.finish_and_clear();

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
    let secret_key = state_dir.secret_key().map_err(CommandError::internal)?;
    let storage_dir = state_dir.path.join("storage");
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
        storage: pipeweave_storage::Backends::local_default(storage_dir.to_string_lossy()),
    };
    let state = pipeweave_orchestrator::app_state(pool, config).map_err(CommandError::internal)?;
    let orchestrator = tokio::spawn(pipeweave_orchestrator::serve(
        listener,
        state,
        shutdown.clone(),
    ));
    ui::step("orchestrator", &api);

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
        prefetch: 0,
        // The dev orchestrator is private and has no API key.
        api_key: None,
        secret_key,
        secrets: project_secrets(sources).map_err(CommandError::usage)?,
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
    ui::step(
        "host",
        format!("http://{host_address} (capacity {capacity})"),
    );

    let running = Running {
        api: api.clone(),
        http: reqwest::Client::new(),
        runner,
    };
    let result = async {
        let mut known = BTreeMap::new();
        for source in sources {
            publish_source(&running, source, args.debug, &mut known)
                .await
                .map_err(CommandError::usage)?;
        }
        if let Some(input) = input {
            let target = run_target(args.run.as_deref(), sources, &known)?;
            let succeeded = run_once(&running, &target, input, &shutdown).await?;
            if args.once {
                return Ok(if succeeded {
                    exit::SUCCESS
                } else {
                    exit::TASK_FAILED
                });
            }
        }
        print_hints(&api, sources, &known, state_dir);
        if args.no_watch {
            eprintln!("Press Ctrl-C to stop.");
            shutdown.wait().await;
        } else {
            watch(&running, sources, args.debug, &mut known, &shutdown)
                .await
                .map_err(CommandError::internal)?;
        }
        Ok(exit::SUCCESS)
    }
    .await;
    trigger.trigger();
    let _ = orchestrator.await;
    let _ = host.await;
    result
}

/// What `--input` runs.
enum RunTarget {
    Pipeline(String),
    Task(String),
}

fn run_target(
    chosen: Option<&str>,
    sources: &[Source],
    known: &BTreeMap<String, String>,
) -> Result<RunTarget, CommandError> {
    let pipelines: Vec<&str> = sources
        .iter()
        .filter_map(|source| match source {
            Source::Project(project) => Some(project.pipelines()),
            Source::Component(_) => None,
        })
        .flatten()
        .map(|pipeline| pipeline.id.as_str())
        .collect();
    match chosen {
        Some(id) if pipelines.contains(&id) => Ok(RunTarget::Pipeline(id.to_owned())),
        Some(id) if known.contains_key(id) => Ok(RunTarget::Task(id.to_owned())),
        Some(id) => Err(CommandError::usage(anyhow!(
            "--run {id}: no such pipeline or task; pipelines: {}; tasks: {}",
            list_or_none(pipelines.iter().copied()),
            list_or_none(known.keys().map(String::as_str))
        ))),
        None => match (pipelines.first(), known.keys().next()) {
            (Some(pipeline), _) => Ok(RunTarget::Pipeline((*pipeline).to_owned())),
            (None, Some(task)) => Ok(RunTarget::Task(task.clone())),
            (None, None) => Err(CommandError::usage(anyhow!(
                "--input given but there is nothing to run"
            ))),
        },
    }
}

fn list_or_none<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Builds (for a project), uploads and registers one source; records each
/// task's code hash in `known` (task id → hash) and reports what changed.
async fn publish_source(
    running: &Running,
    source: &Source,
    debug: bool,
    known: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    match source {
        Source::Project(project) => {
            let builder = project.clone();
            let components =
                tokio::task::spawn_blocking(move || builder.build(debug, false)).await??;
            let tasks = load_tasks(&running.runner, &components).await?;
            let changed = changed_tasks(&tasks, known);
            // Always published: an edit of pipeweave.toml changes pipelines
            // without changing code, and registering unchanged code is a
            // no-op.
            let published =
                super::deploy::publish(&running.http, &running.api, project, &tasks, None).await?;
            if changed.is_empty() {
                ui::step(
                    "unchanged",
                    format!("{}: no task's code changed", project.name()),
                );
                return Ok(());
            }
            let fresh: Vec<ProjectTask> = tasks
                .into_iter()
                .filter(|task| changed.contains(&task.task.descriptor().id))
                .collect();
            super::deploy::report(&fresh, &published);
            for task in &fresh {
                known.insert(
                    task.task.descriptor().id.clone(),
                    task.task.code_hash().to_string(),
                );
            }
        }
        Source::Component(path) => {
            let tasks = load_tasks(&running.runner, std::slice::from_ref(path)).await?;
            for task in &tasks {
                super::register::upload_module(
                    &running.http,
                    &running.api,
                    &task.task,
                    task.bytes.clone(),
                )
                .await?;
                let id = task.task.descriptor().id.clone();
                let registered = super::register::register_service(
                    &running.http,
                    &running.api,
                    id.clone(),
                    "dev".into(),
                    &[&task.task],
                )
                .await?;
                ui::ok(
                    "registered",
                    format!(
                        "{id} [{}] with service {}",
                        task.task.code_hash().short(),
                        registered.service_id
                    ),
                );
                known.insert(id, task.task.code_hash().to_string());
            }
        }
    }
    Ok(())
}

/// The ids of the tasks whose code hash differs from the one last
/// registered (or that are new).
fn changed_tasks(tasks: &[ProjectTask], known: &BTreeMap<String, String>) -> BTreeSet<String> {
    tasks
        .iter()
        .filter(|task| {
            known.get(&task.task.descriptor().id) != Some(&task.task.code_hash().to_string())
        })
        .map(|task| task.task.descriptor().id.clone())
        .collect()
}

fn print_hints(
    api: &str,
    sources: &[Source],
    known: &BTreeMap<String, String>,
    state_dir: &StateDir,
) {
    let me = std::env::args()
        .next()
        .filter(|arg| arg.contains('/'))
        .unwrap_or_else(|| "pipeweave".to_owned());
    let url = if api == "http://127.0.0.1:3000" {
        String::new()
    } else {
        format!(" --url {api}")
    };
    let pipeline = sources.iter().find_map(|source| match source {
        Source::Project(project) => project.pipelines().first().map(|p| p.id.clone()),
        Source::Component(_) => None,
    });
    eprintln!("\nPipeWeave is running. Try:");
    match (pipeline, known.keys().next()) {
        (Some(pipeline), _) => {
            eprintln!("  {me} trigger {pipeline} -i '{{…}}' --wait{url}");
            eprintln!("  {me} dry-run {pipeline}{url}");
        }
        (None, Some(task)) => {
            eprintln!("  {me} trigger {task} --task -i '{{…}}' --wait{url}");
        }
        (None, None) => {}
    }
    eprintln!("  {me} status{url}");
    eprintln!("  curl -s {api}/api/queue/status");
    if state_dir.kept {
        let database = if state_dir.postgres.starts_with(&state_dir.path) {
            String::new()
        } else {
            format!(" (the database in {})", state_dir.postgres.display())
        };
        eprintln!(
            "Runs and code versions are kept in {}{database}.",
            state_dir.path.display()
        );
    }
}

/// Watches the projects' sources until shutdown; every burst of edits
/// rebuilds the projects it touched and registers what changed.
async fn watch(
    running: &Running,
    sources: &[Source],
    debug: bool,
    known: &mut BTreeMap<String, String>,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = sender.send(event);
        }
    })
    .context("cannot watch the sources")?;
    // What each project watches: folders recursively; files through their
    // folder, so an editor that replaces a file is still seen.
    let mut watched: Vec<(usize, PathBuf)> = Vec::new();
    for (index, source) in sources.iter().enumerate() {
        let Source::Project(project) = source else {
            continue;
        };
        for path in project.watch_paths() {
            let Ok(path) = path.canonicalize() else {
                continue;
            };
            let (target, mode) = if path.is_dir() {
                (path.clone(), notify::RecursiveMode::Recursive)
            } else {
                let parent = path.parent().unwrap_or(&path).to_owned();
                (parent, notify::RecursiveMode::NonRecursive)
            };
            watcher
                .watch(&target, mode)
                .with_context(|| format!("cannot watch {}", target.display()))?;
            watched.push((index, path));
        }
    }
    if watched.is_empty() {
        eprintln!("Press Ctrl-C to stop.");
        shutdown.wait().await;
        return Ok(());
    }
    eprintln!("Watching the sources for edits. Press Ctrl-C to stop.");
    let touched = |event: &notify::Event, into: &mut BTreeSet<usize>| {
        if !matches!(
            event.kind,
            notify::EventKind::Create(_)
                | notify::EventKind::Modify(_)
                | notify::EventKind::Remove(_)
        ) {
            return;
        }
        for path in &event.paths {
            if is_editor_noise(path) {
                continue;
            }
            for (index, watched) in &watched {
                if path.starts_with(watched) {
                    into.insert(*index);
                }
            }
        }
    };
    loop {
        let mut projects = BTreeSet::new();
        tokio::select! {
            () = shutdown.wait() => return Ok(()),
            event = events.recv() => match event {
                Some(event) => touched(&event, &mut projects),
                None => return Ok(()),
            },
        }
        if projects.is_empty() {
            continue;
        }
        // An editor's save is a burst of events: take them all.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(event) = events.try_recv() {
            touched(&event, &mut projects);
        }
        for index in projects {
            let started = Instant::now();
            let source = &sources[index];
            if let Source::Project(project) = source {
                ui::step("rebuilding", project.name());
            }
            match publish_source(running, source, debug, known).await {
                Ok(()) => ui::step(
                    "ready",
                    format!("after {:.1} s", started.elapsed().as_secs_f64()),
                ),
                Err(error) => {
                    ui::failed("not reloaded", format!("{error:#}"));
                    eprintln!(
                        "  (the tasks registered before keep serving; fix it and save again)"
                    );
                }
            }
        }
    }
}

/// Editor swap, backup and probe files, which are not source edits.
fn is_editor_noise(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.starts_with(".#")
        || name == "4913"
}

/// Runs the pipeline or task once and follows it as `trigger --wait`
/// does: progress on stderr, outputs on stdout. Returns whether it
/// succeeded.
async fn run_once(
    running: &Running,
    target: &RunTarget,
    input: Value,
    shutdown: &Shutdown,
) -> Result<bool, CommandError> {
    let api = ApiClient::new(&ClientArgs {
        url: running.api.clone(),
        api_key: None,
        json: false,
    })?;
    let (answer, run_id) = match target {
        RunTarget::Pipeline(id) => {
            let answer = api
                .post(
                    &format!("/api/pipelines/{}/trigger", segment(id)),
                    Some(&json!({ "input": input })),
                )
                .await?;
            let run_id = answer["pipelineRunId"].as_str().map(str::to_owned);
            (answer, run_id)
        }
        RunTarget::Task(id) => {
            let answer = api
                .post(
                    "/api/queue/task",
                    Some(&json!({ "taskId": id, "input": input })),
                )
                .await?;
            let run_id = answer["runId"].as_str().map(str::to_owned);
            (answer, run_id)
        }
    };
    let run_id = run_id.ok_or_else(|| {
        CommandError::internal(anyhow!("the orchestrator's answer names no run: {answer}"))
    })?;
    let label = match target {
        RunTarget::Pipeline(id) => format!("pipeline {id}"),
        RunTarget::Task(id) => format!("task {id}"),
    };
    ui::step("queued", format!("{run_id} ({label})"));
    tokio::select! {
        code = super::trigger::follow(&api, &run_id, None, false) => Ok(code? == exit::SUCCESS),
        () = shutdown.wait() => Err(CommandError::internal(anyhow!(
            "stopped before {run_id} ended"
        ))),
    }
}
