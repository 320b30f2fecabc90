//! End-to-end tests of the `pipeweave` binary: the real executable, real
//! guest components, real processes.

mod cli_client;
mod dev_command;
mod guest_builds;
mod orchestrator;
mod project_commands;
mod run_command;
mod secrets;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `pipeweave` with these arguments, sharing the test run's compile
/// cache.
fn pipeweave(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipeweave"))
        .args(args)
        .env(
            "PIPEWEAVE_CACHE_DIR",
            pipeweave_testkit::compile_cache_dir(),
        )
        .output()
        .expect("pipeweave runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
