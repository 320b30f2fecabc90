//! Test support shared by PipeWeave's test suites. Not published.
//!
//! Guest components are built once per test process, with the same
//! `cargo build --release --target wasm32-wasip2` a task author runs, into
//! their own target directory (`target/guests`), so a test suite never
//! waits on the workspace's build lock. Compiled artifacts are cached under
//! `target/guests/compiled`, so each guest is compiled by wasmtime once per
//! machine rather than once per test.
//!
//! # Layout
//!
//! - [`guest`]: path of a built example guest.
//! - [`compile_cache_dir`]: the shared compiled-component cache.
//! - [`cargo_component`]: the `cargo-component` binary, installed into
//!   `target/tools` on first use when it is not on `PATH`.
//! - [`python_tools`]: schemathesis, openapi-spec-validator, cryptography
//!   and boto3, installed from PyPI into a virtual environment in
//!   `target/tools` on first use.
//! - [`postgres`]: a PostgreSQL server for tests (`DATABASE_URL`, or a
//!   private cluster) and a database per test.
//! - [`process`]: server processes that are killed when dropped, their
//!   memory use (from `/proc`), and the Python example worker.
//! - [`s3`]: a real S3-protocol server (s3s-fs) with a bucket.

pub mod postgres;
pub mod process;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The example guests, by the name of their `.wasm`.
pub const GUESTS: &[&str] = &["hello", "fetch", "assets", "misbehave", "noop", "secrets"];

/// Example crates whose tasks are example targets, one component each
/// (`release/examples/{task}.wasm`, hyphens as underscores).
pub const GUEST_EXAMPLES: &[&str] = &["pdf-pipeline"];

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Where guests are built.
pub fn guest_target_dir() -> PathBuf {
    workspace_root().join("target").join("guests")
}

/// The cargo that runs this test suite, or `cargo` from `PATH`.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Builds every example guest once per process and returns the path of
/// `<name>.wasm`. Panics with cargo's output if the build fails: a test
/// cannot go on without its guest.
#[track_caller]
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(build_guests);
    let dir = match dir {
        Ok(dir) => dir,
        Err(output) => panic!("building the example guests failed:\n{output}"),
    };
    let file = format!("{}.wasm", name.replace('-', "_"));
    let path = dir.join(&file);
    if path.is_file() {
        return path;
    }
    let example = dir.join("examples").join(&file);
    assert!(
        example.is_file(),
        "no guest {file} in {} or its examples",
        dir.display()
    );
    example
}

fn build_guests() -> Result<PathBuf, String> {
    // rustup does not add a rust-toolchain.toml target to a toolchain that
    // is already installed; this is a no-op when the target is there.
    let _ = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .output();
    let mut command = Command::new(cargo());
    command
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(guest_target_dir());
    for name in GUESTS.iter().chain(GUEST_EXAMPLES) {
        command.args(["-p", &format!("pipeweave-example-{name}")]);
    }
    command.args(["--lib", "--examples"]);
    for name in GUEST_EXAMPLES {
        command.args(["--features", &format!("pipeweave-example-{name}/guest")]);
    }
    // Flags meant for the test build itself must not leak into the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(var);
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(guest_target_dir().join("wasm32-wasip2").join("release"))
}

/// The compiled-component cache shared by every test.
pub fn compile_cache_dir() -> PathBuf {
    guest_target_dir().join("compiled")
}

/// The `cargo-component` binary: from `PATH` if it is there, otherwise
/// installed once into `target/tools` with `cargo install cargo-component
/// --locked` (several minutes on first use).
#[track_caller]
pub fn cargo_component() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(find_or_install_cargo_component) {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn find_or_install_cargo_component() -> Result<PathBuf, String> {
    find_or_install_binary("cargo-component", &["cargo-component", "--locked"])
}

/// A binary from `PATH`, or from `target/tools/bin`, where
/// `cargo install <install_args> --root target/tools` puts it the first
/// time.
pub fn find_or_install_binary(name: &str, install_args: &[&str]) -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if let Some(path) = on_path {
        return Ok(path);
    }
    let root = workspace_root().join("target").join("tools");
    let installed = root.join("bin").join(name);
    if installed.is_file() {
        return Ok(installed);
    }
    let output = Command::new(cargo())
        .arg("install")
        .args(install_args)
        .arg("--root")
        .arg(&root)
        .output()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if output.status.success() && installed.is_file() {
        Ok(installed)
    } else {
        Err(format!(
            "{name} is not on PATH and `cargo install {}` failed:\n{}",
            install_args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The Python packages the tests use, pinned: schemathesis (an OpenAPI
/// property-based tester) and openapi-spec-validator for the API tests,
/// cryptography and boto3 for the Python worker's storage tokens.
pub const PYTHON_TOOLS: &[&str] = &[
    "schemathesis==4.32.5",
    "openapi-spec-validator==0.9.0",
    "cryptography==46.0.3",
    "boto3==1.40.76",
];

/// The `bin` directory of a virtual environment holding [`PYTHON_TOOLS`]
/// (`python`, `st`, `openapi-spec-validator`), installed once with pip into
/// `target/tools/python-tools` (about a minute on first use).
#[track_caller]
pub fn python_tools() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match FOUND.get_or_init(install_python_tools) {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn install_python_tools() -> Result<PathBuf, String> {
    let venv = workspace_root()
        .join("target")
        .join("tools")
        .join("python-tools");
    let bin = venv.join("bin");
    // The pins, recorded once they are installed; a change reinstalls.
    let stamp = venv.join("installed.txt");
    let wanted = PYTHON_TOOLS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted) {
        return Ok(bin);
    }
    let run = |command: &mut Command, what: &str| -> Result<(), String> {
        let output = command
            .output()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    };
    let make_venv = || {
        run(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
            "python3 -m venv (on Debian, install python3-venv)",
        )
    };
    if make_venv().is_err() {
        // Debian's python3 ships without venv; install it like PostgreSQL.
        pipeweave_orchestrator::embedded_postgres::install_debian_package("python3-venv")?;
        make_venv()?;
    }
    run(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PYTHON_TOOLS),
        "pip install of the tests' Python packages",
    )?;
    std::fs::write(&stamp, wanted).map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(bin)
}
