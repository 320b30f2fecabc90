//! Building a task crate into a component, so commands can take a crate
//! directory where they take a `.wasm`: `pipeweave run examples/hello`.
//!
//! It runs the same `cargo build --target wasm32-wasip2` a task author
//! would, lets cargo's progress through on stderr, and reads cargo's JSON
//! messages to find the component it produced, wherever the crate's target
//! directory is.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The target tasks are built for.
pub(crate) const TASK_TARGET: &str = "wasm32-wasip2";

/// Builds the crate in `dir` (release profile unless `debug`) and returns
/// the path of its component.
pub(crate) fn build_task_crate(dir: &Path, debug: bool, quiet: bool) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} is a directory without a Cargo.toml; pass a task crate or a built .wasm",
            dir.display()
        );
    }
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", manifest.display()))?;
    ensure_target_installed(quiet)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--target",
            TASK_TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdout(Stdio::piped())
        .stderr(if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        });
    if !debug {
        command.arg("--release");
    }
    if !quiet {
        eprintln!("building {} for {TASK_TARGET}…", dir.display());
    }
    let mut child = command
        .spawn()
        .context("cannot run cargo; is the Rust toolchain installed?")?;
    let mut component = None;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("cannot read cargo's output")?;
            if let Some(path) = component_from_message(&line, &manifest) {
                component = Some(path);
            }
        }
    }
    let status = child.wait().context("cargo did not finish")?;
    if !status.success() {
        bail!(
            "cargo build failed for {} (see its errors above)",
            dir.display()
        );
    }
    component.with_context(|| {
        format!(
            "cargo built {} but produced no .wasm; a task crate needs `crate-type = [\"cdylib\"]` in [lib]",
            dir.display()
        )
    })
}

/// Installs the task target with rustup when the toolchain lacks it (rustup
/// does not add a `rust-toolchain.toml` target to a toolchain that is
/// already installed).
fn ensure_target_installed(quiet: bool) -> anyhow::Result<()> {
    let sysroot = Command::new("rustc")
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

/// The `.wasm` in a `compiler-artifact` message for the crate at `manifest`.
fn component_from_message(line: &str, manifest: &Path) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact"
        || Path::new(message["manifest_path"].as_str()?) != manifest
    {
        return None;
    }
    message["filenames"]
        .as_array()?
        .iter()
        .filter_map(serde_json::Value::as_str)
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_component_of_the_requested_crate_only() {
        let manifest = Path::new("/w/examples/hello/Cargo.toml");
        let ours = r#"{"reason":"compiler-artifact","manifest_path":"/w/examples/hello/Cargo.toml","filenames":["/w/target/wasm32-wasip2/release/hello.wasm"]}"#;
        let dependency = r#"{"reason":"compiler-artifact","manifest_path":"/w/guest-sdk/Cargo.toml","filenames":["/w/target/libx.rlib"]}"#;
        assert_eq!(
            component_from_message(ours, manifest),
            Some(PathBuf::from("/w/target/wasm32-wasip2/release/hello.wasm"))
        );
        assert_eq!(component_from_message(dependency, manifest), None);
        assert_eq!(component_from_message("not json", manifest), None);
    }
}
