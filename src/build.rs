//! Building task crates into components, so commands can take a crate
//! directory where they take a `.wasm` (`pipeweave run examples/hello`)
//! and build whole projects (`pipeweave test`, `validate`, `dev`).
//!
//! It runs the same `cargo build --target wasm32-wasip2` a task author
//! would and reads cargo's JSON messages to find the components it
//! produced, wherever the target directory is. On a terminal a spinner
//! shows while cargo works; in a pipe cargo's progress goes through as it
//! is; either way cargo's errors reach the user when the build fails.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::project::Project;
use crate::ui;

/// The target tasks are built for.
pub(crate) const TASK_TARGET: &str = "wasm32-wasip2";

/// Builds the task crate in `dir` (release profile unless `debug`) and
/// returns the path of its component. A project of several tasks is an
/// error listing them: one component is needed here.
pub(crate) fn build_task_crate(dir: &Path, debug: bool, quiet: bool) -> anyhow::Result<PathBuf> {
    if !dir.join("Cargo.toml").is_file() {
        bail!(
            "{} is a directory without a Cargo.toml; pass a task crate or a built .wasm",
            dir.display()
        );
    }
    let project = Project::discover(dir)?;
    let mut components = project.build(debug, quiet)?;
    match components.len() {
        1 => Ok(components.remove(0)),
        n => bail!(
            "{} builds {n} task components; pass one of them:\n  {}",
            dir.display(),
            components
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        ),
    }
}

/// One `cargo build` of task components.
#[derive(Debug)]
pub(crate) struct CargoBuild<'a> {
    /// Where cargo runs (its `rust-toolchain.toml` applies).
    pub(crate) dir: &'a Path,
    /// The `Cargo.toml` given as `--manifest-path`.
    pub(crate) manifest: &'a Path,
    /// Further arguments: `-p`, `--features`, `--lib` or `--examples`.
    pub(crate) args: Vec<String>,
    /// Manifests of the packages whose components are wanted.
    pub(crate) packages: BTreeSet<PathBuf>,
    /// What is being built, for people.
    pub(crate) label: &'a str,
    /// The debug profile instead of release.
    pub(crate) debug: bool,
    /// No progress output (errors are still shown).
    pub(crate) quiet: bool,
}

/// Runs the build and returns every component (`.wasm`) it produced for
/// the requested packages, in path order.
pub(crate) fn run_cargo_build(build: &CargoBuild<'_>) -> anyhow::Result<Vec<PathBuf>> {
    ensure_target_installed(build.dir, build.quiet)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(build.dir)
        .args([
            "build",
            "--target",
            TASK_TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(build.manifest)
        .args(&build.args)
        .stdout(Stdio::piped());
    // Cargo runs in the project (so its rust-toolchain.toml applies); a
    // relative CARGO_TARGET_DIR still means one under the caller's folder.
    if let Some(target_dir) = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from)
        && target_dir.is_relative()
        && let Ok(here) = std::env::current_dir()
    {
        command.env("CARGO_TARGET_DIR", here.join(target_dir));
    }
    if !build.debug {
        command.arg("--release");
    }
    let spinner = (!build.quiet && ui::interactive())
        .then(|| ui::spinner(format!("building {} for {TASK_TARGET}", build.label)));
    // In a pipe, cargo's own progress goes straight through; otherwise it
    // is kept and shown only if the build fails.
    let stream = !build.quiet && spinner.is_none();
    if stream {
        eprintln!("building {} for {TASK_TARGET}…", build.label);
        command.stderr(Stdio::inherit());
    } else {
        command.stderr(Stdio::piped());
    }
    let mut child = command
        .spawn()
        .context("cannot run cargo; is the Rust toolchain installed?")?;
    let stderr_reader = child.stderr.take().map(|stderr| {
        let spinner = spinner.clone();
        std::thread::spawn(move || collect_stderr(stderr, spinner.as_ref()))
    });
    let mut components = BTreeSet::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("cannot read cargo's output")?;
            components.extend(components_in_message(&line, &build.packages));
        }
    }
    let status = child.wait().context("cargo did not finish")?;
    let captured = stderr_reader
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    if !status.success() {
        if !stream {
            eprint!("{captured}");
        }
        bail!(
            "cargo build failed for {} (see its errors above)",
            build.dir.display()
        );
    }
    Ok(components.into_iter().collect())
}

/// Reads cargo's stderr to the end, showing each `Compiling …` line on the
/// spinner; returns all of it.
fn collect_stderr(stderr: impl Read, spinner: Option<&indicatif::ProgressBar>) -> String {
    let mut text = String::new();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(spinner) = spinner {
            let trimmed = line.trim_start();
            if trimmed.starts_with("Compiling") || trimmed.starts_with("Building") {
                spinner.set_message(trimmed.to_owned());
            }
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// Installs the task target with rustup when the toolchain that applies in
/// `dir` lacks it (rustup does not add a `rust-toolchain.toml` target to a
/// toolchain that is already installed).
fn ensure_target_installed(dir: &Path, quiet: bool) -> anyhow::Result<()> {
    let sysroot = Command::new("rustc")
        .current_dir(dir)
        .args(["--print", "sysroot"])
        .output()
        .context("cannot run rustc; is the Rust toolchain installed?")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot
        .join("lib")
        .join("rustlib")
        .join(TASK_TARGET)
        .is_dir()
    {
        return Ok(());
    }
    if !quiet {
        eprintln!("installing the {TASK_TARGET} target with rustup…");
    }
    let status = Command::new("rustup")
        .current_dir(dir)
        .args(["target", "add", TASK_TARGET])
        .stdout(if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .status()
        .context("cannot run rustup")?;
    if !status.success() {
        bail!("the {TASK_TARGET} target is missing and `rustup target add {TASK_TARGET}` failed");
    }
    Ok(())
}

/// The `.wasm` files in a `compiler-artifact` message for one of the
/// packages whose manifests are `packages`.
fn components_in_message(line: &str, packages: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
    let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
        return Vec::new();
    };
    let ours = message["reason"] == "compiler-artifact"
        && message["manifest_path"]
            .as_str()
            .is_some_and(|path| packages.contains(Path::new(path)));
    if !ours {
        return Vec::new();
    }
    message["filenames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .filter(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_components_of_the_requested_packages_only() {
        let packages = BTreeSet::from([
            PathBuf::from("/w/examples/hello/Cargo.toml"),
            PathBuf::from("/w/examples/pdf/Cargo.toml"),
        ]);
        let hello = r#"{"reason":"compiler-artifact","manifest_path":"/w/examples/hello/Cargo.toml","filenames":["/w/target/wasm32-wasip2/release/hello.wasm"]}"#;
        let example = r#"{"reason":"compiler-artifact","manifest_path":"/w/examples/pdf/Cargo.toml","filenames":["/w/target/wasm32-wasip2/release/examples/download.wasm"]}"#;
        let library = r#"{"reason":"compiler-artifact","manifest_path":"/w/examples/pdf/Cargo.toml","filenames":["/w/target/wasm32-wasip2/release/libpdf.rlib"]}"#;
        let dependency = r#"{"reason":"compiler-artifact","manifest_path":"/w/guest-sdk/Cargo.toml","filenames":["/w/target/x.wasm"]}"#;
        assert_eq!(
            components_in_message(hello, &packages),
            [PathBuf::from("/w/target/wasm32-wasip2/release/hello.wasm")]
        );
        assert_eq!(
            components_in_message(example, &packages),
            [PathBuf::from(
                "/w/target/wasm32-wasip2/release/examples/download.wasm"
            )]
        );
        assert!(components_in_message(library, &packages).is_empty());
        assert!(components_in_message(dependency, &packages).is_empty());
        assert!(components_in_message("not json", &packages).is_empty());
    }
}
