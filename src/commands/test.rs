//! `pipeweave test [dir][/task]`: runs a project's tasks against their JSON
//! fixtures, each case in its own sandbox through the same runner as
//! `pipeweave run` and the host, and reports every mismatch by JSON path.
//!
//! A task's fixtures are `tests/fixtures/<task-id>.json` (one case) and
//! `tests/fixtures/<task-id>/<case>.json` (any number). A fixture is
//!
//! ```json
//! {
//!   "input": {"name": "Ada"},
//!   "upstream": {"download": {"pages": 2}},
//!   "assets": {"pdf-file": "two-pages.txt"},
//!   "expected": {"greeting": "Hello, Ada!"},
//!   "next": ["archive"]
//! }
//! ```
//!
//! with `expected` (the exact output) or `error` (`{"code"?, "message"?}`:
//! the task must fail, with that code and a message containing that text),
//! and optionally `next` (the tasks it must select, in any order; a task
//! that selects nothing explicitly selects all of its `allowedNext`).
//! `upstream` gives upstream tasks' outputs by task id, `assets` upstream
//! assets by key as files relative to the fixture. Secrets come from the
//! project's `.secrets.yaml`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use pipeweave_host::human::format_duration;
use pipeweave_host::secrets::SecretStore;
use pipeweave_host::{EventSink, RunEvent, RunReport, RunRequest, Runner};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::{CommandError, exit};
use crate::project::{Project, ProjectTask, build_and_load, local_runner};

const TEST_HELP: &str = "\
Fixtures:
  tests/fixtures/<task-id>.json           one case
  tests/fixtures/<task-id>/<case>.json    any number of cases
  {\"input\": {…}, \"expected\": {…}}                  the exact output
  {\"input\": {…}, \"error\": {\"code\": \"EMPTY_NAME\"}}  a failure: its code, and text its message contains
  optional: \"upstream\": {\"task\": output}, \"assets\": {\"key\": \"file\"}, \"next\": [\"task\", …]
Secrets come from the project's .secrets.yaml (a flat map of name: value).

Examples:
  pipeweave test                                  every task of the project in ./
  pipeweave test examples/pdf-pipeline            every task of that project
  pipeweave test examples/pdf-pipeline/summarize  only the task summarize
  pipeweave test --fixtures ./more-fixtures       fixtures from another folder
  pipeweave test --json | jq '.failed'            a JSON report for scripts

Exit codes:
  0  every case passed (tasks without fixtures are reported, not failed)
  1  some case failed
  2  usage error: not a project, no such task, the build failed";

/// Run a project's tasks against their JSON fixtures.
///
/// Builds the project (release profile unless --debug), then runs each
/// fixture case in a fresh sandbox, exactly as `pipeweave run` would, and
/// compares the output, error and selected next tasks with what the
/// fixture expects.
#[derive(Debug, clap::Args)]
#[command(after_help = TEST_HELP)]
pub(crate) struct TestArgs {
    /// The project directory, or `DIR/TASK` to test one task.
    #[arg(default_value = ".", value_name = "DIR[/TASK]")]
    target: PathBuf,

    /// Read fixtures from this folder instead of the project's
    /// tests/fixtures.
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,

    /// Print a JSON report on stdout instead of the per-case lines.
    #[arg(long)]
    json: bool,

    /// Build the tasks in the debug profile.
    #[arg(long)]
    debug: bool,

    /// Where compiled components are cached between runs.
    #[arg(long, env = "PIPEWEAVE_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// One fixture file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[serde(default = "empty_object")]
    input: Value,
    expected: Option<Value>,
    #[serde(default)]
    upstream: BTreeMap<String, Value>,
    #[serde(default)]
    assets: BTreeMap<String, PathBuf>,
    error: Option<ExpectedError>,
    next: Option<Vec<String>>,
}

fn empty_object() -> Value {
    json!({})
}

/// The failure a fixture expects.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedError {
    code: Option<String>,
    message: Option<String>,
}

/// One case: a fixture file and the name it is reported under.
#[derive(Debug)]
struct Case {
    /// `task` or `task/case`.
    name: String,
    path: PathBuf,
}

/// A difference between two JSON values, at a JSON path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Difference {
    /// Such as `$.summary.words` or `$.items[2]`.
    pub(crate) path: String,
    /// The expected value; `None` when the output has a key the fixture
    /// does not.
    pub(crate) expected: Option<Value>,
    /// The value found; `None` when the output lacks it.
    pub(crate) got: Option<Value>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.expected, &self.got) {
            (Some(expected), Some(got)) => write!(
                f,
                "{}: expected {}, got {}",
                self.path,
                short_json(expected),
                short_json(got)
            ),
            (Some(expected), None) => {
                write!(
                    f,
                    "{}: missing (expected {})",
                    self.path,
                    short_json(expected)
                )
            }
            (None, Some(got)) => write!(f, "{}: unexpected (got {})", self.path, short_json(got)),
            (None, None) => write!(f, "{}: differs", self.path),
        }
    }
}

/// A JSON value on one line, cut at 80 characters.
fn short_json(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(79).collect::<String>())
    } else {
        text
    }
}

/// `$.key` for identifier-like keys, `$["other key"]` otherwise.
fn child_path(parent: &str, key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{}]", Value::from(key))
    }
}

/// Every difference between `expected` and `got`, by JSON path from `$`.
/// Numbers compare by value (`1` equals `1.0`).
pub(crate) fn json_diff(expected: &Value, got: &Value) -> Vec<Difference> {
    let mut differences = Vec::new();
    diff_at("$", expected, got, &mut differences);
    differences
}

fn diff_at(path: &str, expected: &Value, got: &Value, out: &mut Vec<Difference>) {
    match (expected, got) {
        (Value::Object(expected), Value::Object(got)) => {
            for (key, want) in expected {
                let at = child_path(path, key);
                match got.get(key) {
                    Some(have) => diff_at(&at, want, have, out),
                    None => out.push(Difference {
                        path: at,
                        expected: Some(want.clone()),
                        got: None,
                    }),
                }
            }
            for (key, have) in got {
                if !expected.contains_key(key) {
                    out.push(Difference {
                        path: child_path(path, key),
                        expected: None,
                        got: Some(have.clone()),
                    });
                }
            }
        }
        (Value::Array(expected), Value::Array(got)) => {
            for index in 0..expected.len().max(got.len()) {
                let at = format!("{path}[{index}]");
                match (expected.get(index), got.get(index)) {
                    (Some(want), Some(have)) => diff_at(&at, want, have, out),
                    (want, have) => out.push(Difference {
                        path: at,
                        expected: want.cloned(),
                        got: have.cloned(),
                    }),
                }
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            let same = a == b || matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y);
            if !same {
                out.push(Difference {
                    path: path.to_owned(),
                    expected: Some(expected.clone()),
                    got: Some(got.clone()),
                });
            }
        }
        _ if expected != got => out.push(Difference {
            path: path.to_owned(),
            expected: Some(expected.clone()),
            got: Some(got.clone()),
        }),
        _ => {}
    }
}

/// What became of one case.
#[derive(Debug)]
struct CaseResult {
    name: String,
    task_id: String,
    fixture: PathBuf,
    duration: Option<Duration>,
    /// Empty when the case passed.
    problems: Vec<String>,
    /// The task's log lines, kept for a failed case.
    logs: Vec<String>,
}

impl CaseResult {
    fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Keeps an attempt's log lines, to show under a failed case.
#[derive(Debug, Default)]
struct CollectLogs(Mutex<Vec<String>>);

impl EventSink for CollectLogs {
    fn event(&self, event: RunEvent) {
        let line = match event {
            RunEvent::Log { level, message } => format!("[{}] {message}", level.as_str()),
            RunEvent::Output { line, .. } => format!("[output] {line}"),
            _ => return,
        };
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line);
        }
    }
}

/// Splits `DIR[/TASK]`: a directory with a Cargo.toml is a project;
/// otherwise the last component names a task of the project above it.
fn split_target(target: &Path) -> anyhow::Result<(PathBuf, Option<String>)> {
    if target.join("Cargo.toml").is_file() {
        return Ok((target.to_owned(), None));
    }
    let task = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| pipeweave_protocol::descriptor::is_valid_task_id(name));
    let parent = match target.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
        Some(parent) => parent,
        None => Path::new("."),
    };
    match task {
        Some(task) if parent.join("Cargo.toml").is_file() => Ok((parent.to_owned(), Some(task))),
        _ => bail!(
            "{} is neither a project (a directory with a Cargo.toml) nor DIR/TASK inside one",
            target.display()
        ),
    }
}

/// The cases of `task_id` in `fixtures`, in name order.
fn cases_of(fixtures: &Path, task_id: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let single = fixtures.join(format!("{task_id}.json"));
    if single.is_file() {
        cases.push(Case {
            name: task_id.to_owned(),
            path: single,
        });
    }
    let dir = fixtures.join(task_id);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for path in files {
            let case = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            cases.push(Case {
                name: format!("{task_id}/{case}"),
                path,
            });
        }
    }
    cases
}

/// Fixture files and folders in `fixtures` that name no task of the
/// project.
fn stray_fixtures(fixtures: &Path, task_ids: &BTreeSet<&str>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(fixtures) else {
        return Vec::new();
    };
    let mut stray: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let name = if path.is_dir() {
                entry.file_name().to_string_lossy().into_owned()
            } else if path.extension().is_some_and(|e| e == "json") {
                path.file_stem()?.to_string_lossy().into_owned()
            } else {
                return None;
            };
            (!task_ids.contains(name.as_str())).then(|| {
                path.strip_prefix(fixtures)
                    .unwrap_or(&path)
                    .display()
                    .to_string()
            })
        })
        .collect();
    stray.sort();
    stray
}

/// Reads a fixture; errors say what is wrong with it.
fn read_fixture(path: &Path) -> anyhow::Result<Fixture> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let fixture: Fixture = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?;
    if fixture.expected.is_some() && fixture.error.is_some() {
        bail!(
            "{}: a fixture expects an output (`expected`) or an error (`error`), not both",
            path.display()
        );
    }
    if fixture.expected.is_none() && fixture.error.is_none() && fixture.next.is_none() {
        bail!(
            "{}: the fixture expects nothing; add `expected` (the output), `error` or `next`",
            path.display()
        );
    }
    Ok(fixture)
}

/// Runs one case and compares.
async fn run_case(
    runner: &Runner,
    task: &ProjectTask,
    case: &Case,
    secrets: &SecretStore,
) -> CaseResult {
    let mut result = CaseResult {
        name: case.name.clone(),
        task_id: task.id().to_owned(),
        fixture: case.path.clone(),
        duration: None,
        problems: Vec::new(),
        logs: Vec::new(),
    };
    let fixture = match read_fixture(&case.path) {
        Ok(fixture) => fixture,
        Err(error) => {
            result.problems.push(format!("invalid fixture: {error:#}"));
            return result;
        }
    };
    let base = case.path.parent().unwrap_or(Path::new("."));
    let logs = Arc::new(CollectLogs::default());
    let mut request = RunRequest::new(fixture.input.clone());
    request.upstream = fixture.upstream.clone();
    for (key, file) in &fixture.assets {
        let file = base.join(file);
        if !file.is_file() {
            result.problems.push(format!(
                "invalid fixture: asset {key:?} is {}, which is not a file",
                file.display()
            ));
            return result;
        }
        request.upstream_assets.insert(key.clone(), file);
    }
    request.secrets = secrets.for_task(task.task.descriptor());
    request.events = logs.clone();
    let report = match runner.run(&task.task, request).await {
        Ok(report) => report,
        Err(error) => {
            result
                .problems
                .push(format!("the runner failed: {error:#}"));
            return result;
        }
    };
    result.duration = Some(report.duration);
    result.problems = compare(&fixture, task, &report);
    if !result.passed() {
        result.logs = logs.0.lock().map(|l| l.clone()).unwrap_or_default();
    }
    result
}

/// What differs between what the fixture expects and what the run did.
fn compare(fixture: &Fixture, task: &ProjectTask, report: &RunReport) -> Vec<String> {
    let mut problems = Vec::new();
    match (&report.outcome, &fixture.error) {
        (Ok(success), None) => {
            if let Some(expected) = &fixture.expected {
                problems.extend(
                    json_diff(expected, &success.output)
                        .iter()
                        .map(ToString::to_string),
                );
            }
            if let Some(expected) = &fixture.next {
                let selected: BTreeSet<&str> = match &success.run_next {
                    Some(next) => next.iter().map(String::as_str).collect(),
                    None => task
                        .task
                        .descriptor()
                        .allowed_next
                        .iter()
                        .map(String::as_str)
                        .collect(),
                };
                let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
                if selected != expected {
                    problems.push(format!(
                        "next: expected [{}], got [{}]",
                        expected.into_iter().collect::<Vec<_>>().join(", "),
                        selected.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        (Ok(success), Some(_)) => problems.push(format!(
            "expected the task to fail, but it succeeded with {}",
            short_json(&success.output)
        )),
        (Err(failure), None) => problems.push(format!(
            "the task failed: {} ({}): {}",
            failure.reason,
            failure.code.as_deref().unwrap_or("no code"),
            failure.message
        )),
        (Err(failure), Some(expected)) => {
            if let Some(code) = &expected.code
                && failure.code.as_deref() != Some(code.as_str())
            {
                problems.push(format!(
                    "error code: expected {code:?}, got {} ({}: {})",
                    failure
                        .code
                        .as_deref()
                        .map_or_else(|| "none".to_owned(), |c| format!("{c:?}")),
                    failure.reason,
                    failure.message
                ));
            }
            if let Some(text) = &expected.message
                && !failure.message.contains(text.as_str())
            {
                problems.push(format!(
                    "error message: expected it to contain {text:?}, got {:?}",
                    failure.message
                ));
            }
        }
    }
    problems
}

/// The `--json` report.
fn report_json(
    project: &Project,
    results: &[CaseResult],
    without_fixtures: &[String],
    stray: &[String],
) -> Value {
    let passed = results.iter().filter(|r| r.passed()).count();
    json!({
        "project": project.name(),
        "root": project.root(),
        "passed": passed,
        "failed": results.len() - passed,
        "cases": results.iter().map(|r| json!({
            "name": r.name,
            "taskId": r.task_id,
            "fixture": r.fixture,
            "status": if r.passed() { "passed" } else { "failed" },
            "durationMs": r.duration.map(|d| d.as_secs_f64() * 1000.0),
            "problems": r.problems,
            "logs": r.logs,
        })).collect::<Vec<_>>(),
        "withoutFixtures": without_fixtures,
        "strayFixtures": stray,
    })
}

/// The per-case lines and the summary, on stdout.
fn print_results(
    results: &[CaseResult],
    without_fixtures: &[String],
    stray: &[String],
    fixtures: &Path,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for result in results {
        let time = result.duration.map(format_duration).unwrap_or_default();
        if result.passed() {
            writeln!(
                out,
                "  {} {:<width$}  {}",
                console::style("✓").green(),
                result.name,
                console::style(time).dim()
            )?;
        } else {
            writeln!(
                out,
                "  {} {:<width$}  {}",
                console::style("✗").red(),
                result.name,
                console::style(time).dim()
            )?;
            for problem in result.problems.iter().take(20) {
                writeln!(out, "      {problem}")?;
            }
            if result.problems.len() > 20 {
                writeln!(out, "      … and {} more", result.problems.len() - 20)?;
            }
            if !result.logs.is_empty() {
                writeln!(out, "      {}", console::style("task log:").dim())?;
                let skip = result.logs.len().saturating_sub(10);
                for line in &result.logs[skip..] {
                    writeln!(out, "        {}", console::style(line).dim())?;
                }
            }
            writeln!(
                out,
                "      {}",
                console::style(format!("fixture: {}", result.fixture.display())).dim()
            )?;
        }
    }
    for task in without_fixtures {
        writeln!(
            out,
            "  {} {task}: no fixtures (add {})",
            console::style("-").yellow(),
            fixtures.join(format!("{task}.json")).display()
        )?;
    }
    for name in stray {
        writeln!(
            out,
            "  {} {}: names no task of the project; not run",
            console::style("!").yellow(),
            fixtures.join(name).display()
        )?;
    }
    let passed = results.iter().filter(|r| r.passed()).count();
    let failed = results.len() - passed;
    let mut summary = format!("{passed} passed, {failed} failed");
    if !without_fixtures.is_empty() {
        summary.push_str(&format!(", {} without fixtures", without_fixtures.len()));
    }
    let styled = if failed > 0 {
        console::style(summary).red().bold()
    } else {
        console::style(summary).green().bold()
    };
    writeln!(out, "\n{styled}")
}

/// The secrets of `.secrets.yaml`, or none when there is no such file.
fn project_secrets(project: &Project) -> anyhow::Result<SecretStore> {
    let file = project.secrets_file();
    if !file.is_file() {
        return Ok(SecretStore::empty());
    }
    Ok(SecretStore::from_yaml_file(&file)?)
}

/// Runs `pipeweave test`.
pub(crate) async fn run(args: TestArgs) -> Result<u8, CommandError> {
    let (dir, only) = split_target(&args.target).map_err(CommandError::usage)?;
    let project = Project::discover(&dir).map_err(CommandError::usage)?;
    let secrets = project_secrets(&project).map_err(CommandError::usage)?;
    let runner = local_runner(args.cache_dir.clone()).map_err(CommandError::internal)?;
    let tasks = build_and_load(&project, &runner, args.debug, args.json)
        .await
        .map_err(CommandError::usage)?;
    let task_ids: BTreeSet<&str> = tasks.iter().map(ProjectTask::id).collect();
    if let Some(only) = &only
        && !task_ids.contains(only.as_str())
    {
        return Err(CommandError::usage(anyhow!(
            "{} has no task {only:?}; its tasks are: {}",
            dir.display(),
            task_ids.iter().copied().collect::<Vec<_>>().join(", ")
        )));
    }
    let fixtures = args
        .fixtures
        .clone()
        .unwrap_or_else(|| project.fixtures_dir());
    if let Some(custom) = &args.fixtures
        && !custom.is_dir()
    {
        return Err(CommandError::usage(anyhow!(
            "--fixtures {}: not a directory",
            custom.display()
        )));
    }

    let mut results = Vec::new();
    let mut without_fixtures = Vec::new();
    let mut tasks: Vec<&ProjectTask> = tasks
        .iter()
        .filter(|t| only.as_deref().is_none_or(|only| t.id() == only))
        .collect();
    tasks.sort_by(|a, b| a.id().cmp(b.id()));
    for task in tasks {
        for secret in &task.task.descriptor().secrets {
            if secrets.get(secret).is_none() && !args.json {
                eprintln!(
                    "  {} task {} declares the secret {secret:?}, which {} does not have",
                    console::style("!").for_stderr().yellow(),
                    task.id(),
                    project.secrets_file().display()
                );
            }
        }
        let cases = cases_of(&fixtures, task.id());
        if cases.is_empty() {
            without_fixtures.push(task.id().to_owned());
        }
        for case in &cases {
            results.push(run_case(&runner, task, case, &secrets).await);
        }
    }
    let stray = if only.is_some() {
        Vec::new()
    } else {
        stray_fixtures(&fixtures, &task_ids)
    };

    let printed = if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(
            &mut out,
            &report_json(&project, &results, &without_fixtures, &stray),
        )
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
    } else {
        print_results(&results, &without_fixtures, &stray, &fixtures)
    };
    printed.map_err(CommandError::internal)?;
    Ok(if results.iter().all(CaseResult::passed) {
        exit::SUCCESS
    } else {
        exit::TASK_FAILED
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(expected: Value, got: Value) -> Vec<String> {
        json_diff(&expected, &got)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn equal_values_have_no_differences() {
        assert!(
            lines(
                json!({"a": [1, {"b": null}]}),
                json!({"a": [1, {"b": null}]})
            )
            .is_empty()
        );
        assert!(
            lines(json!({"n": 1}), json!({"n": 1.0})).is_empty(),
            "numbers by value"
        );
    }

    #[test]
    fn differences_are_named_by_json_path() {
        assert_eq!(
            lines(
                json!({"summary": {"words": 12, "title": "A"}, "gone": true}),
                json!({"summary": {"words": 11, "title": "A"}, "extra": [1]})
            ),
            [
                "$.gone: missing (expected true)",
                "$.summary.words: expected 12, got 11",
                "$.extra: unexpected (got [1])",
            ]
        );
        assert_eq!(
            lines(json!({"rows": [1, 2, 3]}), json!({"rows": [1, 5]})),
            [
                "$.rows[1]: expected 2, got 5",
                "$.rows[2]: missing (expected 3)"
            ]
        );
        assert_eq!(
            lines(json!({"a key": "x"}), json!({"a key": "y"})),
            [r#"$["a key"]: expected "x", got "y""#]
        );
        assert_eq!(lines(json!(1), json!("1")), [r#"$: expected 1, got "1""#]);
    }

    #[test]
    fn a_target_is_a_project_or_a_task_inside_one() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("Cargo.toml"), "")?;
        assert_eq!(split_target(dir.path())?, (dir.path().to_owned(), None));
        assert_eq!(
            split_target(&dir.path().join("summarize"))?,
            (dir.path().to_owned(), Some("summarize".to_owned()))
        );
        assert!(split_target(&dir.path().join("a").join("b")).is_err());
        assert!(split_target(&dir.path().join("Not A Task")).is_err());
        Ok(())
    }

    #[test]
    fn fixtures_need_an_expectation_and_not_two() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        let good = write("good.json", r#"{"input": {"a": 1}, "expected": {"b": 2}}"#)?;
        assert_eq!(read_fixture(&good)?.input, json!({"a": 1}));
        let both = write("both.json", r#"{"expected": {}, "error": {"code": "X"}}"#)?;
        assert!(format!("{:#}", read_fixture(&both).expect_err("both")).contains("not both"));
        let none = write("none.json", r#"{"input": {}}"#)?;
        assert!(
            format!("{:#}", read_fixture(&none).expect_err("none")).contains("expects nothing")
        );
        let typo = write("typo.json", "{\n\"expect\": {}}")?;
        let error = format!("{:#}", read_fixture(&typo).expect_err("typo"));
        assert!(
            error.contains("typo.json:2:") && error.contains("unknown field `expect`"),
            "{error}"
        );
        Ok(())
    }
}
