//! Argument parsing and exit codes for `pipeweave`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;

/// Exit codes shared by every command.
pub mod exit {
    /// The command did what was asked (for `run`: the task succeeded).
    pub const SUCCESS: u8 = 0;
    /// The task ran and failed.
    pub const TASK_FAILED: u8 = 1;
    /// The command line or its inputs are wrong (bad flag, unreadable
    /// file, invalid JSON, not a task component); nothing ran.
    pub const USAGE: u8 = 2;
    /// PipeWeave itself failed: the host (for example, no sandbox
    /// directory could be created), or the orchestrator answered 5xx.
    pub const INTERNAL: u8 = 3;
    /// The orchestrator (or, for `db`, the database) cannot be reached.
    pub const UNREACHABLE: u8 = 4;
    /// The run, pipeline, service or DLQ entry named does not exist.
    pub const NOT_FOUND: u8 = 5;
    /// It exists but is not in a state for that: a run already ended, a
    /// dead run already retried, a database already initialised.
    pub const CONFLICT: u8 = 6;
    /// `--wait` or `--follow` gave up at `--timeout`; the run goes on.
    pub const TIMED_OUT: u8 = 7;
}

const TOP_LEVEL_HELP: &str = "\
Examples (a task author's loop):
  pipeweave init my-task                                      a task crate that builds and passes its fixture test
  pipeweave test                                              run the project's tasks against tests/fixtures/
  pipeweave validate                                          check descriptors and pipeline graphs, no database
  pipeweave visualize -o pipeline.md                          the pipelines as a Mermaid diagram
  pipeweave dev                                               PostgreSQL + orchestrator + host; rebuild on every edit
  pipeweave deploy --url https://pw.example.com               publish tasks and pipelines to an orchestrator

Examples (running and operating):
  pipeweave run examples/hello --input '{\"name\": \"Ada\"}'      build a task crate and run it in a sandbox
  pipeweave run task.wasm --input @input.json --json          run a built component, JSON report
  pipeweave run --help                                        every option of the local runner
  pipeweave services                                          registered services and their tasks
  pipeweave trigger my-pipeline -i '{\"key\": \"value\"}' --wait   run a pipeline and follow it to the end
  pipeweave trigger hello --task -i @input.json --wait        run one task through the queue
  pipeweave status prun_…                                     a pipeline run as a tree of its task runs
  pipeweave logs trun_… -f                                    a run's logs, followed live
  pipeweave dlq list                                          dead runs; then dlq show|retry|retry-all|purge
  pipeweave db status --url $DATABASE_URL                     applied and pending migrations, runs by state

Client commands take --url (PIPEWEAVE_URL, default http://127.0.0.1:3000),
--api-key (PIPEWEAVE_API_KEY) and --json (the API's JSON, for scripts).

Exit codes:
  0  success
  1  the task or run ran and did not succeed (failed, dead, partial or cancelled)
  2  usage error: bad arguments or input, unreadable file, not a task component,
     a request the orchestrator refused (400), a missing or wrong API key
  3  PipeWeave itself failed: the host, or the orchestrator answered 5xx
  4  the orchestrator (for db: the database) cannot be reached
  5  the run, pipeline, service or DLQ entry does not exist
  6  not in a state for that: the run already ended, already retried, ...
  7  --wait or --follow reached --timeout; the run goes on";

/// PipeWeave: sandboxed WebAssembly tasks and pipelines.
#[derive(Debug, Parser)]
#[command(
    name = "pipeweave",
    version,
    about = "PipeWeave: sandboxed WebAssembly tasks and pipelines",
    after_help = TOP_LEVEL_HELP
)]
pub struct Cli {
    /// Log filter for PipeWeave's own diagnostics (not task logs), such as
    /// `debug` or `pipeweave_host=trace`.
    /// Default: `warn` for `run`, `info` for `host`, and for
    /// `orchestrator` the filter its LOG_LEVEL stands for.
    #[arg(long, env = "PIPEWEAVE_LOG", global = true)]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(commands::run::RunArgs),
    /// Start PostgreSQL, an orchestrator and a host on this machine, register
    /// tasks, and run one through the queue.
    Dev(commands::dev::DevArgs),
    /// Serve the orchestrator: HTTP API, PostgreSQL queue and scheduler.
    Orchestrator(pipeweave_orchestrator::config::Args),
    /// Run WebAssembly tasks for an orchestrator.
    Host(commands::host::HostArgs),
    /// Upload a task component to an orchestrator and register its task.
    Register(commands::register::RegisterArgs),
    /// Database administration.
    Db(commands::db::DbArgs),
    /// Scaffold a new task crate that builds and passes its fixture test.
    Init(commands::init::InitArgs),
    /// Check a project's tasks and pipelines without a database.
    Validate(commands::validate::ValidateArgs),
    /// Run a project's tasks against their JSON fixtures.
    Test(commands::test::TestArgs),
    /// Print a project's pipelines as a Mermaid diagram.
    Visualize(commands::visualize::VisualizeArgs),
    /// Build a project's tasks and register them and its pipelines with an
    /// orchestrator.
    Deploy(commands::deploy::DeployArgs),
    /// List registered services and their tasks.
    Services(commands::services::ServicesArgs),
    /// Trigger a pipeline (or a single task) and optionally wait for it.
    Trigger(commands::trigger::TriggerArgs),
    /// Show a pipeline's execution plan without running it.
    DryRun(commands::dry_run::DryRunArgs),
    /// Show a pipeline run or task run.
    Status(commands::status::StatusArgs),
    /// Inspect and repair the dead-letter queue.
    Dlq(commands::dlq::DlqArgs),
    /// Show a run's logs, or follow them live.
    Logs(commands::logs::LogsArgs),
    /// Cancel a run.
    Cancel(commands::cancel::CancelArgs),
    /// Print shell completions.
    Completions(commands::completions::CompletionsArgs),
}

/// A command's error, carrying the exit code to end with.
#[derive(Debug)]
pub struct CommandError {
    /// The exit code.
    pub code: u8,
    /// The error and its causes.
    pub error: anyhow::Error,
}

impl CommandError {
    /// A usage error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: exit::USAGE,
            error: error.into(),
        }
    }

    /// An internal error (exit 3).
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: exit::INTERNAL,
            error: error.into(),
        }
    }
}

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match &cli.command {
        Command::Orchestrator(args) => args.log_level.filter(),
        Command::Host(_) | Command::Register(_) | Command::Db(_) => {
            "warn,pipeweave=info,pipeweave_host=info"
        }
        _ => "warn",
    };
    init_logging(cli.log.as_deref().unwrap_or(default_filter));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run::run(args).await,
            Command::Orchestrator(args) => commands::orchestrator::run(args).await,
            Command::Host(args) => commands::host::run(args).await,
            Command::Register(args) => commands::register::run(args).await,
            Command::Db(args) => commands::db::run(args).await,
            Command::Dev(args) => commands::dev::run(args).await,
            Command::Init(args) => commands::init::run(args).await,
            Command::Validate(args) => commands::validate::run(args).await,
            Command::Test(args) => commands::test::run(args).await,
            Command::Visualize(args) => commands::visualize::run(args).await,
            Command::Deploy(args) => commands::deploy::run(args).await,
            Command::Services(args) => commands::services::run(args).await,
            Command::Trigger(args) => commands::trigger::run(args).await,
            Command::DryRun(args) => commands::dry_run::run(args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Dlq(args) => commands::dlq::run(args).await,
            Command::Logs(args) => commands::logs::run(args).await,
            Command::Cancel(args) => commands::cancel::run(args).await,
            Command::Completions(args) => commands::completions::run(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(CommandError { code, error }) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(code)
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
