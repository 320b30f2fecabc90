//! Projects through the binary: `init` scaffolds a crate whose own fixture
//! passes under `test`; `validate` passes the PDF pipeline and names a
//! cycle; `test` runs the PDF pipeline's fixtures and shows a wrong one's
//! differences by JSON path; `visualize` draws the PDF pipeline as Mermaid
//! whose nodes and edges are the pipeline's graph.
//!
//! The PDF pipeline builds into the testkit's guest target directory,
//! where its components already are; crates made here build into
//! `target/scaffold`, shared by every run, so only the first one compiles
//! the SDK.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::{path_str, stderr, stdout};

/// Runs `pipeweave` with its builds going to `target_dir`, free of flags
/// meant for the test build itself.
fn pipeweave_building_in(target_dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipeweave"));
    command.args(args).env("CARGO_TARGET_DIR", target_dir).env(
        "PIPEWEAVE_CACHE_DIR",
        pipeweave_testkit::compile_cache_dir(),
    );
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
    ] {
        command.env_remove(var);
    }
    command.output().expect("pipeweave runs")
}

/// Where crates made by these tests build.
fn scaffold_target_dir() -> PathBuf {
    pipeweave_testkit::workspace_root()
        .join("target")
        .join("scaffold")
}

fn pdf_pipeline() -> PathBuf {
    pipeweave_testkit::workspace_root()
        .join("examples")
        .join("pdf-pipeline")
}

/// `pipeweave` on the PDF pipeline, building where the testkit built it.
fn on_pdf_pipeline(args: &[&str]) -> Output {
    // The testkit builds every example guest once per process; waiting for
    // it here keeps two cargo runs from racing for the same directory.
    let _ = pipeweave_testkit::guest("download");
    pipeweave_building_in(&pipeweave_testkit::guest_target_dir(), args)
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

#[test]
fn init_scaffolds_a_task_that_passes_its_own_fixture_test() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("word-count");
    let dir_str = path_str(&dir);
    let target = scaffold_target_dir();

    let created = pipeweave_building_in(&target, &["init", "word-count", "--dir", dir_str]);
    assert_exit(&created, 0);
    assert!(
        stdout(&created).contains(&format!("cd {dir_str}")),
        "next steps: {}",
        stdout(&created)
    );
    for file in [
        "Cargo.toml",
        "src/lib.rs",
        "pipeweave.toml",
        "tests/fixtures/word-count.json",
        ".secrets.yaml.example",
        ".gitignore",
        "Cargo.lock",
    ] {
        assert!(dir.join(file).is_file(), "{file} was not written");
    }

    let tested = pipeweave_building_in(&target, &["test", dir_str]);
    assert_exit(&tested, 0);
    assert!(
        stdout(&tested).contains("✓ word-count") && stdout(&tested).contains("1 passed, 0 failed"),
        "{}",
        stdout(&tested)
    );

    let again = pipeweave_building_in(&target, &["init", "word-count", "--dir", dir_str]);
    assert_exit(&again, 2);
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
    let bad_name = pipeweave_building_in(
        &target,
        &[
            "init",
            "Word_Count",
            "--dir",
            path_str(&temp.path().join("x")),
        ],
    );
    assert_exit(&bad_name, 2);
    assert!(
        stderr(&bad_name).contains("kebab-case"),
        "{}",
        stderr(&bad_name)
    );
}

/// A crate of three example tasks where `ping` and `pong` select each
/// other, and a pipeline that starts at `start`.
fn write_cycle_project(dir: &Path) {
    let sdk = pipeweave_testkit::workspace_root().join("guest-sdk");
    let task = |id: &str, next: &[&str]| {
        let next: Vec<String> = next.iter().map(|n| format!("{n:?}")).collect();
        format!(
            "use pipeweave_sdk::{{Context, Descriptor, Task, TaskError, TaskResult, export_task}};\n\
             struct T;\n\
             impl Task for T {{\n\
                 type Input = serde_json::Value;\n\
                 type Output = serde_json::Value;\n\
                 fn describe() -> Descriptor {{ Descriptor::new({id:?}).allowed_next([{}]) }}\n\
                 fn run(ctx: &Context<serde_json::Value>) -> Result<TaskResult<serde_json::Value>, TaskError> {{\n\
                     Ok(TaskResult::new(ctx.input().clone()))\n\
                 }}\n\
             }}\n\
             export_task!(T);\n",
            next.join(", ")
        )
    };
    let files = [
        (
            "Cargo.toml".to_owned(),
            format!(
                "[package]\nname = \"cycle-test\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [dependencies]\npipeweave-sdk = {{ path = {:?} }}\nserde_json = \"1\"\n\n\
                 [[example]]\nname = \"start\"\npath = \"tasks/start.rs\"\ncrate-type = [\"cdylib\"]\n\n\
                 [[example]]\nname = \"ping\"\npath = \"tasks/ping.rs\"\ncrate-type = [\"cdylib\"]\n\n\
                 [[example]]\nname = \"pong\"\npath = \"tasks/pong.rs\"\ncrate-type = [\"cdylib\"]\n\n\
                 [workspace]\n",
                path_str(&sdk)
            ),
        ),
        ("src/lib.rs".to_owned(), "//! Nothing shared.\n".to_owned()),
        ("tasks/start.rs".to_owned(), task("start", &["ping"])),
        ("tasks/ping.rs".to_owned(), task("ping", &["pong"])),
        ("tasks/pong.rs".to_owned(), task("pong", &["ping"])),
        (
            "pipeweave.toml".to_owned(),
            "[project]\nname = \"cycle-test\"\n\n[build]\ntargets = \"examples\"\n\n\
             [[pipelines]]\nid = \"loop\"\nentry = [\"start\"]\n"
                .to_owned(),
        ),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
    }
}

#[test]
fn validate_names_a_cycle_by_its_path_and_exits_1() {
    let temp = tempfile::tempdir().expect("tempdir");
    write_cycle_project(temp.path());
    let target = scaffold_target_dir();

    let output = pipeweave_building_in(&target, &["validate", path_str(temp.path())]);
    assert_exit(&output, 1);
    let text = stdout(&output);
    let line = text
        .lines()
        .find(|l| l.contains("✗ pipeline loop"))
        .unwrap_or_else(|| panic!("no failed pipeline line:\n{text}"));
    assert!(line.contains("cycle: ping → pong → ping"), "{line}");
    assert!(text.contains("✓ task start"), "{text}");
    assert!(text.contains("invalid: 1 error"), "{text}");

    let output = pipeweave_building_in(&target, &["validate", "--json", path_str(temp.path())]);
    assert_exit(&output, 1);
    let report: Value = serde_json::from_str(&stdout(&output)).expect("a JSON report");
    assert_eq!(report["valid"], false);
    assert_eq!(report["pipelines"][0]["problems"][0]["kind"], "cycle");
    assert_eq!(
        report["pipelines"][0]["problems"][0]["path"],
        serde_json::json!(["ping", "pong", "ping"])
    );
}

#[test]
fn validate_passes_the_pdf_pipeline() {
    let output = on_pdf_pipeline(&["validate", path_str(&pdf_pipeline())]);
    assert_exit(&output, 0);
    let text = stdout(&output);
    for task in [
        "download",
        "extract-text",
        "extract-tables",
        "summarize",
        "notify",
        "archive",
    ] {
        assert!(text.contains(&format!("✓ task {task} ")), "{task}: {text}");
    }
    assert!(text.contains("✓ pipeline pdf-processing"), "{text}");
    assert!(!text.contains('✗'), "{text}");
}

#[test]
fn test_passes_the_pdf_pipeline_and_a_wrong_fixture_shows_its_differences() {
    let output = on_pdf_pipeline(&["test", path_str(&pdf_pipeline())]);
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(text.contains("8 passed, 0 failed"), "{text}");
    assert!(text.contains("✓ summarize/quiet"), "{text}");

    // summarize counts 26 words; this fixture says 27 and forgets notify.
    let fixtures = tempfile::tempdir().expect("tempdir");
    let wrong = serde_json::json!({
        "input": {"pdfUrl": "https://example.com/doc.pdf", "pages": 2},
        "upstream": {
            "extract-text": {"words": 26, "firstLine": "Page 1"},
            "extract-tables": {"rows": 4},
        },
        "expected": {"summary": "https://example.com/doc.pdf: 2 pages, 27 words, 4 table rows"},
        "next": ["archive"],
    });
    std::fs::write(fixtures.path().join("summarize.json"), wrong.to_string()).expect("write");
    let only = format!("{}/summarize", path_str(&pdf_pipeline()));
    let output = on_pdf_pipeline(&["test", &only, "--fixtures", path_str(fixtures.path())]);
    assert_exit(&output, 1);
    let text = stdout(&output);
    assert!(text.contains("✗ summarize"), "{text}");
    assert!(
        text.contains(
            "$.summary: expected \"https://example.com/doc.pdf: 2 pages, 27 words, 4 table rows\", \
             got \"https://example.com/doc.pdf: 2 pages, 26 words, 4 table rows\""
        ),
        "{text}"
    );
    assert!(
        text.contains("next: expected [archive], got [archive, notify]"),
        "{text}"
    );
    assert!(text.contains("0 passed, 1 failed"), "{text}");
    assert!(!text.contains("download"), "only summarize ran: {text}");

    let output = on_pdf_pipeline(&[
        "test",
        &only,
        "--fixtures",
        path_str(fixtures.path()),
        "--json",
    ]);
    assert_exit(&output, 1);
    let report: Value = serde_json::from_str(&stdout(&output)).expect("a JSON report");
    assert_eq!(report["failed"], 1);
    assert_eq!(report["cases"][0]["status"], "failed");

    let unknown = on_pdf_pipeline(&[
        "test",
        &format!("{}/no-such-task", path_str(&pdf_pipeline())),
    ]);
    assert_exit(&unknown, 2);
    assert!(
        stderr(&unknown).contains("no task \"no-such-task\""),
        "{}",
        stderr(&unknown)
    );
}

/// The nodes (Mermaid id → task id) and edges (as task ids) of a
/// one-pipeline flowchart; panics on a line that is none of the forms
/// `visualize` writes.
fn parse_mermaid(text: &str) -> (BTreeMap<String, String>, BTreeSet<(String, String)>) {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("flowchart TD"), "{text}");
    let mut nodes = BTreeMap::new();
    let mut edges = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.starts_with("%%") || line.starts_with("classDef ") || line.starts_with("class ") {
            continue;
        }
        if let Some((from, to)) = line.split_once(" --> ") {
            edges.push((from.to_owned(), to.to_owned()));
            continue;
        }
        let id: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let shape = &line[id.len()..];
        let label = ["([\"", "{{\"", "[\""]
            .iter()
            .find_map(|open| shape.strip_prefix(open))
            .and_then(|rest| rest.split_once('"'))
            .map(|(label, _)| label)
            .unwrap_or_else(|| panic!("not a node declaration: {line:?}\n{text}"));
        let task = label.split("<br/>").next().unwrap_or_default();
        nodes.insert(id, task.to_owned());
    }
    let edges = edges
        .into_iter()
        .map(|(from, to)| {
            let name = |id: &str| {
                nodes
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| panic!("edge to undeclared node {id}\n{text}"))
            };
            (name(&from), name(&to))
        })
        .collect();
    (nodes, edges)
}

#[test]
fn visualize_draws_the_pdf_pipeline_as_a_mermaid_flowchart() {
    let output = on_pdf_pipeline(&["visualize", path_str(&pdf_pipeline())]);
    assert_exit(&output, 0);
    let text = stdout(&output);
    let (nodes, edges) = parse_mermaid(&text);
    let tasks: BTreeSet<&str> = nodes.values().map(String::as_str).collect();
    assert_eq!(
        tasks,
        BTreeSet::from([
            "download",
            "extract-text",
            "extract-tables",
            "summarize",
            "notify",
            "archive"
        ])
    );
    let expected: BTreeSet<(String, String)> = [
        ("download", "extract-text"),
        ("download", "extract-tables"),
        ("extract-text", "summarize"),
        ("extract-tables", "summarize"),
        ("summarize", "notify"),
        ("summarize", "archive"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(edges, expected, "{text}");
    let line_of = |task: &str| {
        text.lines()
            .find(|l| l.contains(&format!("\"{task}<br/>")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line_of("download").contains("([\"download<br/>entry"),
        "{text}"
    );
    assert!(
        line_of("summarize").contains("{{\"summarize<br/>join"),
        "{text}"
    );
    assert!(line_of("notify").contains("timeout 60 s"), "{text}");

    let out = tempfile::tempdir().expect("tempdir");
    let file = out.path().join("PIPELINE.md");
    let output = on_pdf_pipeline(&[
        "visualize",
        path_str(&pdf_pipeline()),
        "--pipeline",
        "pdf-processing",
        "-o",
        path_str(&file),
    ]);
    assert_exit(&output, 0);
    let written = std::fs::read_to_string(&file).expect("the file was written");
    let inner = written
        .strip_prefix("```mermaid\n")
        .and_then(|rest| rest.strip_suffix("```\n"))
        .unwrap_or_else(|| panic!("not a fenced mermaid block:\n{written}"));
    assert_eq!(parse_mermaid(inner).1, expected);

    let unknown = on_pdf_pipeline(&["visualize", path_str(&pdf_pipeline()), "--pipeline", "nope"]);
    assert_exit(&unknown, 2);
    assert!(
        stderr(&unknown).contains("pdf-processing"),
        "{}",
        stderr(&unknown)
    );
}
