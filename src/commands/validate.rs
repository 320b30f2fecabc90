//! `pipeweave validate [dir]`: checks a project without a database or an
//! orchestrator. It reads the manifest, builds the tasks, loads each
//! component (which checks its descriptor: id, limits, outbound hosts,
//! secret names), and validates each pipeline with the orchestrator's own
//! rules (`pipeweave_orchestrator::pipeline::validate`: unknown tasks,
//! cycles with their path, entry tasks selected by others), so what passes
//! here registers there. Every check prints one line; problems are errors
//! or warnings, each naming what to fix.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use pipeweave_orchestrator::pipeline::{self, Validated};
use serde_json::{Value, json};

use crate::cli::{CommandError, exit};
use crate::project::{
    self, MANIFEST_FILE, ManifestError, Project, ProjectTask, local_runner, task_infos,
};

const VALIDATE_HELP: &str = "\
What it checks:
  the manifest (pipeweave.toml): keys, names, pipeline ids, failure modes
  the build: every task compiles for wasm32-wasip2
  .secrets.yaml, if there is one: a flat map of secret names to values
  each task's descriptor: id, limits, allowedNext ids, outbound hosts, secret names
  task ids: no two components declare the same one
  each pipeline: entry and allowedNext tasks exist, no cycle (the path is printed),
    no entry task selected by another task
  warnings: tasks no pipeline reaches, allowedNext naming tasks outside the project,
    secrets missing from .secrets.yaml.example, concurrency limits

Examples:
  pipeweave validate                        the project in ./
  pipeweave validate examples/pdf-pipeline  another project
  pipeweave validate --json | jq .valid     a JSON report for scripts

Exit codes:
  0  valid (warnings allowed)
  1  invalid: the errors are printed, each naming what to fix
  2  usage error: the directory is not a project (no Cargo.toml)";

/// Check a project's manifest, tasks and pipelines without a database.
#[derive(Debug, clap::Args)]
#[command(after_help = VALIDATE_HELP)]
pub(crate) struct ValidateArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// Print a JSON report on stdout instead of the check lines.
    #[arg(long)]
    json: bool,

    /// Build the tasks in the debug profile.
    #[arg(long)]
    debug: bool,

    /// Where compiled components are cached between runs.
    #[arg(long, env = "PIPEWEAVE_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Warning,
    Error,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One line of the report.
#[derive(Debug)]
struct Check {
    status: Status,
    subject: String,
    message: String,
}

/// Everything `validate` found.
#[derive(Debug, Default)]
struct Report {
    checks: Vec<Check>,
    tasks: Vec<Value>,
    pipelines: Vec<Value>,
}

impl Report {
    fn add(&mut self, status: Status, subject: impl Into<String>, message: impl Into<String>) {
        self.checks.push(Check {
            status,
            subject: subject.into(),
            message: message.into(),
        });
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    fn valid(&self) -> bool {
        self.count(Status::Error) == 0
    }
}

/// `1 error`, `2 errors`.
fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// An error and its causes on one line.
fn chain(error: &anyhow::Error) -> String {
    format!("{error:#}")
}

/// What a task's descriptor says, briefly.
fn describe(task: &ProjectTask) -> String {
    let d = task.task.descriptor();
    let mut parts = vec![
        format!("timeout {} s", d.timeout),
        format!("retries {}", d.retries),
    ];
    if !d.allowed_next.is_empty() {
        parts.push(format!("next: {}", d.allowed_next.join(", ")));
    }
    if !d.outbound_hosts.is_empty() {
        parts.push(format!("hosts: {}", d.outbound_hosts.join(", ")));
    }
    if !d.secrets.is_empty() {
        parts.push(format!("secrets: {}", d.secrets.join(", ")));
    }
    parts.join(", ")
}

/// The names `.secrets.yaml.example` lists, if the project has one.
fn example_secret_names(root: &Path) -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(root.join(".secrets.yaml.example")).ok()?;
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).ok()?;
    Some(
        value
            .as_mapping()
            .into_iter()
            .flat_map(|map| map.keys())
            .filter_map(|key| key.as_str().map(str::to_owned))
            .collect(),
    )
}

/// Checks the built tasks and the pipelines.
fn check_tasks_and_pipelines(project: &Project, tasks: &[ProjectTask], report: &mut Report) {
    let ids: BTreeSet<&str> = tasks.iter().map(ProjectTask::id).collect();
    let secrets_file = project.secrets_file();
    if secrets_file.is_file() {
        match pipeweave_host::SecretStore::from_yaml_file(&secrets_file) {
            Ok(store) => report.add(
                Status::Ok,
                "secrets",
                format!(
                    "{}: {}",
                    project::SECRETS_FILE,
                    plural(store.len(), "secret")
                ),
            ),
            Err(error) => report.add(Status::Error, "secrets", error.to_string()),
        }
    }
    let example_secrets = example_secret_names(project.root());
    for task in tasks {
        report.add(Status::Ok, format!("task {}", task.id()), describe(task));
        let descriptor = task.task.descriptor();
        for next in &descriptor.allowed_next {
            if !ids.contains(next.as_str()) {
                report.add(
                    Status::Warning,
                    format!("task {}", task.id()),
                    format!(
                        "allowedNext names {next:?}, which is not a task of this project; another service must register it before a pipeline reaches it"
                    ),
                );
            }
        }
        if let Some(listed) = &example_secrets {
            for secret in descriptor.secrets.iter().filter(|s| !listed.contains(*s)) {
                report.add(
                    Status::Warning,
                    format!("task {}", task.id()),
                    format!(
                        "declares the secret {secret:?}, which .secrets.yaml.example does not list; add it so others know to set it"
                    ),
                );
            }
        }
        report.tasks.push(json!({
            "id": task.id(),
            "component": task.path,
            "codeHash": task.task.code_hash().to_string(),
            "allowedNext": descriptor.allowed_next,
        }));
    }
    for duplicate in project::duplicate_ids(tasks) {
        report.add(Status::Error, "task ids", duplicate);
    }

    let infos = task_infos(tasks);
    let mut reached: BTreeSet<String> = BTreeSet::new();
    if project.pipelines().is_empty() {
        report.add(
            Status::Ok,
            "pipelines",
            format!("none declared (add [[pipelines]] to {MANIFEST_FILE} to chain tasks)"),
        );
    }
    for spec in project.pipelines() {
        let subject = format!("pipeline {}", spec.id);
        match pipeline::validate(&spec.entry, None, &infos) {
            Ok(validated) => {
                reached.extend(validated.structure.tasks.keys().cloned());
                report.add(Status::Ok, &subject, pipeline_summary(&validated));
                for warning in &validated.warnings {
                    report.add(Status::Warning, &subject, warning.clone());
                }
                report.pipelines.push(json!({
                    "id": spec.id,
                    "valid": true,
                    "tasks": validated.structure.tasks.keys().collect::<Vec<_>>(),
                    "plan": validated.plan.iter().map(|s| &s.text).collect::<Vec<_>>(),
                    "problems": [],
                }));
            }
            Err(problems) => {
                for problem in &problems {
                    report.add(Status::Error, &subject, problem.to_string());
                }
                report.pipelines.push(json!({
                    "id": spec.id,
                    "valid": false,
                    "problems": problems,
                }));
            }
        }
    }
    if !project.pipelines().is_empty() {
        for id in ids.iter().filter(|id| !reached.contains(**id)) {
            report.add(
                Status::Warning,
                format!("task {id}"),
                "no pipeline's entry reaches it; it runs only when queued on its own",
            );
        }
    }
}

/// `6 tasks from download: 1. download 2. extract-tables, extract-text …`
fn pipeline_summary(validated: &Validated) -> String {
    let steps: Vec<String> = validated
        .plan
        .iter()
        .enumerate()
        .map(|(i, step)| format!("{}. {}", i + 1, step.tasks.join(", ")))
        .collect();
    format!(
        "{} from {}: {}",
        plural(validated.structure.tasks.len(), "task"),
        validated.structure.entry.join(", "),
        steps.join("  ")
    )
}

/// Prints the check lines and the verdict on stdout.
fn print_report(title: &str, report: &Report) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", console::style(title).bold())?;
    let width = report
        .checks
        .iter()
        .map(|c| c.subject.chars().count())
        .max()
        .unwrap_or(0);
    for check in &report.checks {
        let mark = match check.status {
            Status::Ok => console::style("✓").green(),
            Status::Warning => console::style("!").yellow(),
            Status::Error => console::style("✗").red(),
        };
        writeln!(out, "  {mark} {:<width$}  {}", check.subject, check.message)?;
    }
    let (errors, warnings) = (report.count(Status::Error), report.count(Status::Warning));
    let verdict = if report.valid() {
        console::style(format!("valid ({})", plural(warnings, "warning")))
            .green()
            .bold()
    } else {
        console::style(format!(
            "invalid: {}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        ))
        .red()
        .bold()
    };
    writeln!(out, "\n{verdict}")
}

/// Runs `pipeweave validate`.
pub(crate) async fn run(args: ValidateArgs) -> Result<u8, CommandError> {
    if !args.dir.join("Cargo.toml").is_file() {
        return Err(CommandError::usage(anyhow::anyhow!(
            "{} is not a project: it has no Cargo.toml (create one with `pipeweave init NAME`)",
            args.dir.display()
        )));
    }
    let mut report = Report::default();
    let mut name = None;
    let mut root = args.dir.clone();
    match Project::discover(&args.dir) {
        Err(error) => {
            let subject = if error.downcast_ref::<ManifestError>().is_some() {
                "manifest"
            } else {
                "project"
            };
            report.add(Status::Error, subject, chain(&error));
        }
        Ok(project) => {
            name = Some(project.name().to_owned());
            root = project.root().to_owned();
            report.add(
                Status::Ok,
                "manifest",
                match project.manifest_file() {
                    Some(_) => format!(
                        "{MANIFEST_FILE}: project {}, {}",
                        project.name(),
                        plural(project.pipelines().len(), "pipeline")
                    ),
                    None => format!(
                        "no {MANIFEST_FILE}: project {} with defaults (the crate's cdylib is the task, no pipelines)",
                        project.name()
                    ),
                },
            );
            check_project(&project, &args, &mut report).await?;
        }
    }

    let title = format!(
        "Validating {} ({})",
        name.as_deref().unwrap_or("project"),
        root.display()
    );
    let printed = if args.json {
        let value = json!({
            "project": name,
            "root": root,
            "valid": report.valid(),
            "errors": report.count(Status::Error),
            "warnings": report.count(Status::Warning),
            "checks": report.checks.iter().map(|c| json!({
                "status": c.status.as_str(),
                "subject": c.subject,
                "message": c.message,
            })).collect::<Vec<_>>(),
            "tasks": report.tasks,
            "pipelines": report.pipelines,
        });
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &value)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        print_report(&title, &report)
    };
    printed.map_err(CommandError::internal)?;
    Ok(if report.valid() {
        exit::SUCCESS
    } else {
        exit::TASK_FAILED
    })
}

/// Builds and loads the tasks, one component at a time so every broken
/// one is reported, then checks them and the pipelines.
async fn check_project(
    project: &Project,
    args: &ValidateArgs,
    report: &mut Report,
) -> Result<(), CommandError> {
    let builder = project.clone();
    let (debug, quiet) = (args.debug, args.json);
    let built = tokio::task::spawn_blocking(move || builder.build(debug, quiet))
        .await
        .map_err(CommandError::internal)?;
    let components = match built {
        Ok(components) => components,
        Err(error) => {
            report.add(Status::Error, "build", chain(&error));
            return Ok(());
        }
    };
    report.add(
        Status::Ok,
        "build",
        format!(
            "{} from {}",
            plural(components.len(), "component"),
            project.package_names().join(", ")
        ),
    );
    let runner = local_runner(args.cache_dir.clone()).map_err(CommandError::internal)?;
    let mut tasks = Vec::new();
    for component in &components {
        match project::load_task(&runner, component).await {
            Ok(task) => tasks.push(task),
            Err(error) => report.add(
                Status::Error,
                format!(
                    "component {}",
                    component.file_name().map_or_else(
                        || component.display().to_string(),
                        |n| n.to_string_lossy().into_owned()
                    )
                ),
                chain(&error),
            ),
        }
    }
    check_tasks_and_pipelines(project, &tasks, report);
    Ok(())
}
