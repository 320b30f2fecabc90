//! `pipeweave run`: output on stdout, logs and a summary on stderr, exit
//! codes by outcome.

use serde_json::{Value, json};

use crate::{path_str, pipeweave, stderr, stdout};

#[test]
fn a_successful_run_prints_the_output_and_exits_0() {
    let hello = pipeweave_testkit::guest("hello");
    let output = pipeweave(&["run", path_str(&hello), "--input", r#"{"name": "Ada"}"#]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: Value = serde_json::from_str(&stdout(&output)).expect("stdout is the output JSON");
    assert_eq!(printed["greeting"], "Hello, Ada!");
    let summary = stderr(&output);
    assert!(summary.contains("✓ hello succeeded"), "{summary}");
    assert!(summary.contains("code hash"), "{summary}");
    assert!(summary.contains("peak memory"), "{summary}");
    assert!(summary.contains("[info]"), "task logs are shown: {summary}");
}

#[test]
fn a_failed_task_exits_1_with_the_reason_and_retryability() {
    let hello = pipeweave_testkit::guest("hello");
    let output = pipeweave(&["run", path_str(&hello), "--input", r#"{"name": ""}"#]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "", "no output for a failed task");
    let summary = stderr(&output);
    assert!(summary.contains("task_error (not retryable)"), "{summary}");
    assert!(summary.contains("EMPTY_NAME"), "{summary}");

    let misbehave = pipeweave_testkit::guest("misbehave");
    let output = pipeweave(&[
        "run",
        path_str(&misbehave),
        "--input",
        r#"{"mode": "spin"}"#,
        "--timeout",
        "200ms",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("timeout (retryable)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_to_do() {
    let hello = pipeweave_testkit::guest("hello");
    let hello = path_str(&hello);

    let bad_json = pipeweave(&["run", hello, "--input", "{name: Ada}"]);
    assert_eq!(bad_json.status.code(), Some(2));
    assert!(
        stderr(&bad_json).contains("--input is not valid JSON"),
        "{}",
        stderr(&bad_json)
    );

    let missing = pipeweave(&["run", "no-such-task.wasm"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("wasm32-wasip2"),
        "{}",
        stderr(&missing)
    );

    let no_unit = pipeweave(&["run", hello, "--memory", "64"]);
    assert_eq!(no_unit.status.code(), Some(2));
    assert!(stderr(&no_unit).contains("64MiB"), "{}", stderr(&no_unit));

    let not_wasm = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::write(not_wasm.path(), b"plain text").expect("write");
    let output = pipeweave(&["run", path_str(not_wasm.path())]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot load"),
        "{}",
        stderr(&output)
    );

    let unknown_flag = pipeweave(&["run", hello, "--frobnicate"]);
    assert_eq!(unknown_flag.status.code(), Some(2));
}

#[test]
fn json_mode_reports_everything_a_script_needs() {
    let misbehave = pipeweave_testkit::guest("misbehave");
    let output = pipeweave(&[
        "run",
        path_str(&misbehave),
        "--input",
        r#"{"mode": "panic", "message": "kaboom"}"#,
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&output)).expect("JSON report");
    assert_eq!(report["status"], "failed");
    assert_eq!(report["taskId"], "misbehave");
    assert_eq!(report["error"]["reason"], "panic");
    assert_eq!(report["error"]["retryable"], false);
    assert!(
        report["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("kaboom"))
    );
    assert_eq!(report["codeHash"].as_str().map(str::len), Some(64));
}

#[test]
fn upstream_outputs_secrets_and_kept_assets_reach_the_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = dir.path().join("upstream.json");
    std::fs::write(&upstream, r#"{"pages": 3}"#).expect("write");
    let misbehave = pipeweave_testkit::guest("misbehave");

    let output = pipeweave(&[
        "run",
        path_str(&misbehave),
        "--input",
        r#"{"mode": "secret"}"#,
        "--secret",
        "api-token=t0k3n",
        "--upstream",
        &format!("download=@{}", path_str(&upstream)),
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output)).expect("JSON report");
    assert_eq!(report["output"], json!({"value": "t0k3n"}));

    let kept = dir.path().join("kept");
    let output = pipeweave(&[
        "run",
        path_str(&misbehave),
        "--input",
        r#"{"mode": "write_marker", "marker": "kept on disk"}"#,
        "--keep-assets",
        path_str(&kept),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        std::fs::read_to_string(kept.join("marker")).expect("asset kept"),
        "kept on disk"
    );
}

#[test]
fn a_task_crate_directory_is_built_and_run() {
    let crate_dir = pipeweave_testkit::workspace_root()
        .join("examples")
        .join("hello");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pipeweave"))
        .args([
            "run",
            path_str(&crate_dir),
            "--input",
            r#"{"name": "crate"}"#,
        ])
        .env(
            "PIPEWEAVE_CACHE_DIR",
            pipeweave_testkit::compile_cache_dir(),
        )
        // Its own target dir, so the build never waits on the test build's lock.
        .env(
            "CARGO_TARGET_DIR",
            pipeweave_testkit::guest_target_dir().join("run-crate"),
        )
        .output()
        .expect("pipeweave runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: Value = serde_json::from_str(&stdout(&output)).expect("output JSON");
    assert_eq!(printed["greeting"], "Hello, crate!");
    assert!(stderr(&output).contains("building"), "{}", stderr(&output));

    let not_a_crate = tempfile::tempdir().expect("tempdir");
    let output = pipeweave(&["run", path_str(not_a_crate.path())]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("without a Cargo.toml"),
        "{}",
        stderr(&output)
    );
}
