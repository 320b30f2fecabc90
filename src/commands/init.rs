//! `pipeweave init <name>`: scaffolds a task crate that builds and passes
//! its own fixture test at once: `Cargo.toml` (a cdylib depending on the
//! guest SDK by path, in a workspace of its own), `src/lib.rs` (a small
//! task), `pipeweave.toml` (the project and a one-task pipeline), a
//! fixture, `.secrets.yaml.example` and a `.gitignore`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};

use crate::cli::{CommandError, exit};
use crate::project::{MANIFEST_FILE, SECRETS_FILE, is_kebab_case};

/// The guest SDK of the source tree this binary was built from.
const BUILT_IN_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guest-sdk");

const INIT_HELP: &str = "\
Examples:
  pipeweave init my-task                       a new task crate in ./my-task
  pipeweave init my-task --dir tasks/my-task   somewhere else
  pipeweave init my-task --sdk-path ../pipeweave/guest-sdk

What it writes:
  Cargo.toml                 a cdylib depending on pipeweave-sdk (by path), in its own workspace
  src/lib.rs                 the task: greets the name in its input
  pipeweave.toml             the project and a pipeline that starts with the task
  tests/fixtures/NAME.json   a fixture: pipeweave test runs it
  .secrets.yaml.example      where local secrets go (copy to .secrets.yaml)
  .gitignore                 target/, .pipeweave/ and .secrets.yaml
  Cargo.lock                 the versions PipeWeave's source builds the SDK with

The guest SDK is not on crates.io: the crate depends on it by path, by
default the guest-sdk folder of the PipeWeave source this binary was built
from; --sdk-path or PIPEWEAVE_SDK_PATH names another.

Exit codes:
  0  the crate was written
  2  usage error: an invalid name, a folder that is not empty, no guest SDK found";

/// Scaffold a new task crate that builds and passes its fixture test.
#[derive(Debug, clap::Args)]
#[command(after_help = INIT_HELP)]
pub(crate) struct InitArgs {
    /// The task's name: kebab-case, such as `resize-image`. It is the
    /// crate's name, the task's id and the project's name.
    #[arg(required_unless_present = "name_flag", value_name = "NAME")]
    name: Option<String>,

    /// The same as NAME, as the spec writes it (`pipeweave init --name
    /// my-service`).
    #[arg(long = "name", value_name = "NAME", conflicts_with = "name")]
    name_flag: Option<String>,

    /// Where to create the crate. Default: `./NAME`. It must not exist or
    /// be empty.
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,

    /// The PipeWeave guest SDK (`guest-sdk` in PipeWeave's source) to
    /// depend on.
    #[arg(long, env = "PIPEWEAVE_SDK_PATH", value_name = "PATH")]
    sdk_path: Option<PathBuf>,
}

/// Names cargo or Rust refuse as a crate's name.
const RESERVED: &[&str] = &[
    "test",
    "core",
    "std",
    "alloc",
    "proc-macro",
    "self",
    "super",
    "crate",
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "static",
    "struct",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "gen",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
];

/// Checks the name; the error says what a good one looks like.
fn check_name(name: &str) -> anyhow::Result<()> {
    if !is_kebab_case(name) {
        bail!(
            "{name:?} is not a valid task name: use kebab-case, 1 to 64 lowercase letters, digits and single hyphens, starting with a letter (such as \"resize-image\")"
        );
    }
    if RESERVED.contains(&name) {
        bail!(
            "{name:?} is reserved by Rust or cargo; choose another name, such as \"{name}-task\""
        );
    }
    Ok(())
}

/// `resize-image` → `ResizeImage`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Every file of the scaffold, by path relative to its root.
fn scaffold(name: &str, sdk: &Path) -> Vec<(PathBuf, String)> {
    let ty = type_name(name);
    let sdk = toml_string(&sdk.to_string_lossy());
    let cargo_toml = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

# A task is a cdylib: `cargo build --release --target wasm32-wasip2` makes
# target/wasm32-wasip2/release/{lib}.wasm, a component PipeWeave runs.
[lib]
crate-type = ["cdylib"]

[dependencies]
# The PipeWeave guest SDK is not on crates.io; it comes from PipeWeave's
# source tree.
pipeweave-sdk = {{ path = {sdk} }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A workspace of its own, so it builds wherever it lives.
[workspace]
"#,
        lib = name.replace('-', "_"),
    );
    let lib_rs = format!(
        r#"//! `{name}`: a PipeWeave task. It turns `{{"name": "Ada"}}` into
//! `{{"greeting": "Hello, Ada!"}}`; an empty name fails without retries.
//!
//! ```text
//! pipeweave test                                  # run tests/fixtures/{name}.json
//! pipeweave run . --input '{{"name": "Ada"}}'       # run it once in a sandbox
//! pipeweave dev                                   # orchestrator + host, rebuilt on every edit
//! ```

use pipeweave_sdk::{{Context, Descriptor, Task, TaskError, TaskResult, export_task}};
use serde::{{Deserialize, Serialize}};

/// What the task takes.
#[derive(Debug, Deserialize)]
pub struct Input {{
    /// Who to greet.
    pub name: String,
}}

/// What the task returns.
#[derive(Debug, Serialize)]
pub struct Output {{
    /// Such as `Hello, Ada!`.
    pub greeting: String,
}}

/// The task.
#[derive(Debug)]
pub struct {ty};

impl Task for {ty} {{
    type Input = Input;
    type Output = Output;

    fn describe() -> Descriptor {{
        Descriptor::new("{name}")
            .description("Greets the name in its input")
            .timeout_secs(30)
            .retries(2)
    }}

    fn run(ctx: &Context<Input>) -> Result<TaskResult<Output>, TaskError> {{
        let name = ctx.input().name.trim();
        if name.is_empty() {{
            return Err(TaskError::fatal("the input's `name` is empty").with_code("EMPTY_NAME"));
        }}
        ctx.info(format!("greeting {{name}}"));
        Ok(TaskResult::new(Output {{
            greeting: format!("Hello, {{name}}!"),
        }}))
    }}
}}

export_task!({ty});
"#
    );
    let manifest = format!(
        r#"# The project: `pipeweave validate`, `pipeweave test`, `pipeweave dev`
# and `pipeweave deploy` read this file.

[project]
name = "{name}"

# A pipeline starts with its entry tasks; each task's allowedNext (in its
# describe()) says which tasks may follow it.
[[pipelines]]
id = "{name}"
entry = ["{name}"]
"#
    );
    let fixture = r#"{
  "input": {"name": "Ada"},
  "expected": {"greeting": "Hello, Ada!"}
}
"#
    .to_owned();
    let secrets_example = format!(
        r#"# Secrets for local runs (pipeweave test, pipeweave dev): copy this file
# to {SECRETS_FILE}, which git ignores, and fill in the values. Each key is a
# secret a task declares with `.secret("name")` in describe() and reads
# with `ctx.secret("name")`; a task gets only the secrets it declared.
#
# api-token: "replace-me"
"#
    );
    vec![
        ("Cargo.toml".into(), cargo_toml),
        (PathBuf::from("src").join("lib.rs"), lib_rs),
        (MANIFEST_FILE.into(), manifest),
        (
            PathBuf::from("tests")
                .join("fixtures")
                .join(format!("{name}.json")),
            fixture,
        ),
        (".secrets.yaml.example".into(), secrets_example),
        (
            ".gitignore".into(),
            format!("/target/\n/.pipeweave/\n{SECRETS_FILE}\n"),
        ),
    ]
}

/// The guest SDK to depend on, made absolute; an error if it is not one.
fn find_sdk(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let sdk = explicit.map_or_else(|| PathBuf::from(BUILT_IN_SDK), Path::to_path_buf);
    let manifest = sdk.join("Cargo.toml");
    let is_sdk = std::fs::read_to_string(&manifest)
        .is_ok_and(|text| text.contains("name = \"pipeweave-sdk\""));
    if !is_sdk {
        bail!(
            "no PipeWeave guest SDK at {}; pass --sdk-path (or set PIPEWEAVE_SDK_PATH) to the guest-sdk folder of a PipeWeave checkout",
            sdk.display()
        );
    }
    sdk.canonicalize()
        .with_context(|| format!("cannot resolve {}", sdk.display()))
}

/// Runs `pipeweave init`.
pub(crate) async fn run(args: InitArgs) -> Result<u8, CommandError> {
    let name = args
        .name
        .clone()
        .or_else(|| args.name_flag.clone())
        .unwrap_or_default();
    check_name(&name).map_err(CommandError::usage)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&name));
    if dir.exists() {
        let empty = std::fs::read_dir(&dir)
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(false);
        if !empty {
            return Err(CommandError::usage(anyhow!(
                "{} already exists and is not empty; choose another --dir, or remove it first",
                dir.display()
            )));
        }
    }
    let sdk = find_sdk(args.sdk_path.as_deref()).map_err(CommandError::usage)?;
    let mut files = scaffold(&name, &sdk);
    // The versions PipeWeave's own source builds the SDK with, so the
    // scaffold builds with them too (cargo drops the entries it does not
    // need); without it cargo picks the newest.
    if let Some(lock) = sdk
        .parent()
        .and_then(|source| std::fs::read_to_string(source.join("Cargo.lock")).ok())
    {
        files.push(("Cargo.lock".into(), lock));
    }
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))
                .map_err(CommandError::usage)?;
        }
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))
            .map_err(CommandError::usage)?;
    }
    println!(
        "Created the task {} in {}:",
        console::style(&name).bold(),
        dir.display()
    );
    for (path, _) in &files {
        println!("  {}", path.display());
    }
    println!("  (pipeweave-sdk from {})", sdk.display());
    println!("\nNext steps:");
    println!("  cd {}", dir.display());
    println!("  pipeweave test        build the task and run its fixture");
    println!(
        "  pipeweave dev         an orchestrator and a host on this machine, rebuilt on every edit"
    );
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_kebab_case_and_not_reserved() {
        assert!(check_name("resize-image").is_ok());
        for bad in ["Resize", "resize_image", "-x", "x-", "", "test", "fn"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("resize-image"), "ResizeImage");
        assert_eq!(type_name("a2b-c"), "A2bC");
    }

    #[test]
    fn paths_are_quoted_for_toml() -> anyhow::Result<()> {
        let text = format!("path = {}", toml_string(r#"C:\dir "x""#));
        let parsed: toml::Table = toml::from_str(&text)?;
        assert_eq!(parsed["path"].as_str(), Some(r#"C:\dir "x""#));
        Ok(())
    }

    #[test]
    fn the_scaffold_is_a_project_with_a_fixture() -> anyhow::Result<()> {
        let files = scaffold("resize-image", Path::new("/sdk"));
        let text = |name: &str| {
            files
                .iter()
                .find(|(path, _)| path == Path::new(name))
                .map(|(_, text)| text.as_str())
                .unwrap_or_default()
        };
        let cargo: toml::Table = toml::from_str(text("Cargo.toml"))?;
        assert_eq!(cargo["package"]["name"].as_str(), Some("resize-image"));
        assert_eq!(
            cargo["dependencies"]["pipeweave-sdk"]["path"].as_str(),
            Some("/sdk")
        );
        assert!(cargo.contains_key("workspace"));
        let manifest = crate::project::parse_manifest(text(MANIFEST_FILE), Path::new("x"))?;
        assert_eq!(manifest.name.as_deref(), Some("resize-image"));
        assert_eq!(manifest.pipelines[0].entry, ["resize-image"]);
        let fixture: serde_json::Value =
            serde_json::from_str(text("tests/fixtures/resize-image.json"))?;
        assert_eq!(fixture["expected"]["greeting"], "Hello, Ada!");
        assert!(text("src/lib.rs").contains("pub struct ResizeImage;"));
        assert!(text(".gitignore").contains(".secrets.yaml"));
        Ok(())
    }
}
