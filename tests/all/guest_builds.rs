//! A task builds with plain `cargo build --target wasm32-wasip2` and with
//! `cargo component build`, and both results run.

use std::process::Command;

use serde_json::Value;

use crate::{path_str, pipeweave, stderr, stdout};

fn greets(component: &std::path::Path, name: &str) {
    let output = pipeweave(&[
        "run",
        path_str(component),
        "--input",
        &format!(r#"{{"name": "{name}"}}"#),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed: Value = serde_json::from_str(&stdout(&output)).expect("output JSON");
    assert_eq!(printed["greeting"], format!("Hello, {name}!"));
}

#[test]
fn hello_built_with_cargo_build_runs() {
    greets(&pipeweave_testkit::guest("hello"), "cargo build");
}

#[test]
fn hello_built_with_cargo_component_runs() {
    let cargo_component = pipeweave_testkit::cargo_component();
    let target_dir = pipeweave_testkit::workspace_root()
        .join("target")
        .join("guests-cc");
    let mut command = Command::new(&cargo_component);
    command
        .current_dir(pipeweave_testkit::workspace_root())
        .args([
            "component",
            "build",
            "--release",
            "-p",
            "pipeweave-example-hello",
            "--target-dir",
        ])
        .arg(&target_dir);
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR"] {
        command.env_remove(var);
    }
    let output = command.output().expect("cargo component runs");
    assert!(
        output.status.success(),
        "cargo component build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let component = target_dir
        .join("wasm32-wasip1")
        .join("release")
        .join("hello.wasm");
    assert!(
        component.is_file(),
        "no component at {}",
        component.display()
    );
    greets(&component, "cargo component");
}
