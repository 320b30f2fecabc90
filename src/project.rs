//! Projects: what `validate`, `test`, `visualize`, `dev` and `deploy` work
//! on.
//!
//! A project is a directory with a task crate, or a workspace of task
//! crates, and optionally a manifest, `pipeweave.toml`:
//!
//! ```toml
//! [project]
//! name = "pdf-pipeline"      # kebab-case; the service its tasks register under
//!
//! [build]
//! package = "pipeweave-example-pdf-pipeline"  # which package of a workspace
//! features = ["guest"]       # cargo features for the component build
//! targets = "examples"       # "lib" (the default) or "examples"
//!
//! [[pipelines]]
//! id = "pdf-processing"
//! entry = ["download"]
//! failure-mode = "fail-fast" # fail-fast | continue | partial-merge
//! description = "…"
//! ```
//!
//! Without a manifest, a directory with a `Cargo.toml` is a project with
//! defaults: its crate's `cdylib` is its one task, named after the crate,
//! and it has no pipelines. With `targets = "examples"`, every example
//! target of crate type `cdylib` is one task.
//!
//! [`Project::discover`] reads the manifest and asks `cargo metadata` which
//! packages and targets there are; [`Project::build`] builds every task
//! with one `cargo build`; [`load_tasks`] loads the components, which tells
//! each task's id and descriptor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use pipeweave_host::{EngineConfig, LoadedTask, Runner, RunnerConfig};
use pipeweave_orchestrator::pipeline::TaskInfo;
use serde::Deserialize;
use toml::Spanned;

use crate::build::{CargoBuild, run_cargo_build};

/// The manifest's file name, in the project's root.
pub(crate) const MANIFEST_FILE: &str = "pipeweave.toml";

/// The local secrets file's name, in the project's root (never committed).
pub(crate) const SECRETS_FILE: &str = ".secrets.yaml";

/// The failure modes a pipeline may name.
pub(crate) const FAILURE_MODES: &[&str] = &["fail-fast", "continue", "partial-merge"];

/// Which targets of the project's packages are its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Targets {
    /// Each package's library, of crate type `cdylib`, is one task.
    #[default]
    Lib,
    /// Each example target of crate type `cdylib` is one task.
    Examples,
}

/// A pipeline the manifest declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PipelineSpec {
    /// The pipeline's id, as registered with the orchestrator.
    pub(crate) id: String,
    /// The tasks that start with the pipeline's input.
    pub(crate) entry: Vec<String>,
    /// `fail-fast`, `continue` or `partial-merge`; `None` leaves the
    /// orchestrator's default (fail-fast).
    pub(crate) failure_mode: Option<String>,
    /// What the pipeline is for.
    pub(crate) description: Option<String>,
}

/// What `pipeweave.toml` says, checked. Every field has a default, which
/// is what a project without a manifest gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// `project.name`.
    pub(crate) name: Option<String>,
    /// `build.package`.
    pub(crate) package: Option<String>,
    /// `build.features`.
    pub(crate) features: Vec<String>,
    /// `build.targets`.
    pub(crate) targets: Targets,
    /// `[[pipelines]]`.
    pub(crate) pipelines: Vec<PipelineSpec>,
}

/// A problem in `pipeweave.toml`, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestError {
    /// The manifest.
    pub(crate) file: PathBuf,
    /// 1-based line and column of the offending key or value.
    pub(crate) line: usize,
    /// See `line`.
    pub(crate) column: usize,
    /// What is wrong, naming the key.
    pub(crate) message: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for ManifestError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    project: Option<RawProject>,
    build: Option<RawBuild>,
    #[serde(default)]
    pipelines: Vec<RawPipeline>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    package: Option<Spanned<String>>,
    #[serde(default)]
    features: Vec<Spanned<String>>,
    #[serde(default)]
    targets: Targets,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPipeline {
    id: Spanned<String>,
    entry: Spanned<Vec<Spanned<String>>>,
    failure_mode: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
}

/// Whether `name` is kebab-case: lowercase letters and digits in words
/// joined by single hyphens, starting with a letter, at most 64 characters.
pub(crate) fn is_kebab_case(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The orchestrator's rule for pipeline ids: 1 to 200 letters, digits,
/// `.`, `_` or `-`, starting with a letter or digit.
fn is_valid_pipeline_id(id: &str) -> bool {
    id.len() <= 200
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.chars().count(), |newline| {
            before[newline + 1..].chars().count()
        })
        + 1;
    (line, column)
}

/// Parses and checks the text of a manifest; `file` names it in errors.
pub(crate) fn parse_manifest(text: &str, file: &Path) -> Result<Manifest, ManifestError> {
    let error_at = |offset: usize, message: String| {
        let (line, column) = line_column(text, offset);
        ManifestError {
            file: file.to_owned(),
            line,
            column,
            message,
        }
    };
    let raw: RawManifest = toml::from_str(text).map_err(|e| {
        error_at(
            e.span().map_or(0, |span| span.start),
            e.message().trim().to_owned(),
        )
    })?;

    let mut manifest = Manifest::default();
    if let Some(name) = raw.project.and_then(|p| p.name) {
        if !is_kebab_case(name.get_ref()) {
            return Err(error_at(
                name.span().start,
                format!(
                    "`project.name` {:?} is not kebab-case: use lowercase letters, digits and single hyphens, starting with a letter (such as \"pdf-pipeline\")",
                    name.get_ref()
                ),
            ));
        }
        manifest.name = Some(name.into_inner());
    }
    if let Some(build) = raw.build {
        if let Some(package) = build.package {
            if package.get_ref().trim().is_empty() {
                return Err(error_at(
                    package.span().start,
                    "`build.package` is empty: name a package of the workspace, or leave the key out"
                        .into(),
                ));
            }
            manifest.package = Some(package.into_inner());
        }
        for feature in build.features {
            if feature.get_ref().trim().is_empty()
                || feature.get_ref().contains(char::is_whitespace)
            {
                return Err(error_at(
                    feature.span().start,
                    format!(
                        "`build.features`: {:?} is not a feature name",
                        feature.get_ref()
                    ),
                ));
            }
            manifest.features.push(feature.into_inner());
        }
        manifest.targets = build.targets;
    }

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (index, pipeline) in raw.pipelines.into_iter().enumerate() {
        let key = |field: &str| format!("`pipelines[{index}].{field}`");
        let id = pipeline.id.get_ref();
        if !is_valid_pipeline_id(id) {
            return Err(error_at(
                pipeline.id.span().start,
                format!(
                    "{} {id:?} is not a valid pipeline id: use 1 to 200 letters, digits, '.', '_' or '-', starting with a letter or digit",
                    key("id")
                ),
            ));
        }
        if let Some(first) = seen.insert(id.clone(), pipeline.id.span().start) {
            return Err(error_at(
                pipeline.id.span().start,
                format!(
                    "{} {id:?} is declared twice (first at line {})",
                    key("id"),
                    line_column(text, first).0
                ),
            ));
        }
        let entry_span = pipeline.entry.span();
        let entry = pipeline.entry.into_inner();
        if entry.is_empty() {
            return Err(error_at(
                entry_span.start,
                format!(
                    "{} is empty: name the task or tasks that start the pipeline",
                    key("entry")
                ),
            ));
        }
        let mut entry_ids = Vec::new();
        for task in entry {
            if !pipeweave_protocol::descriptor::is_valid_task_id(task.get_ref()) {
                return Err(error_at(
                    task.span().start,
                    format!(
                        "{}: {:?} is not a valid task id (1 to 64 lowercase letters, digits, '-' or '_', starting with a letter)",
                        key("entry"),
                        task.get_ref()
                    ),
                ));
            }
            if entry_ids.contains(task.get_ref()) {
                return Err(error_at(
                    task.span().start,
                    format!("{}: {:?} is listed twice", key("entry"), task.get_ref()),
                ));
            }
            entry_ids.push(task.into_inner());
        }
        if let Some(mode) = &pipeline.failure_mode
            && !FAILURE_MODES.contains(&mode.get_ref().as_str())
        {
            return Err(error_at(
                mode.span().start,
                format!(
                    "{} {:?} is not a failure mode: use {}",
                    key("failure-mode"),
                    mode.get_ref(),
                    FAILURE_MODES.join(", ")
                ),
            ));
        }
        if let Some(description) = &pipeline.description
            && description.get_ref().chars().count() > 1000
        {
            return Err(error_at(
                description.span().start,
                format!("{} is longer than 1000 characters", key("description")),
            ));
        }
        manifest.pipelines.push(PipelineSpec {
            id: pipeline.id.into_inner(),
            entry: entry_ids,
            failure_mode: pipeline.failure_mode.map(Spanned::into_inner),
            description: pipeline.description.map(Spanned::into_inner),
        });
    }
    Ok(manifest)
}

/// One build target of a package, from `cargo metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    name: String,
    src_path: PathBuf,
    is_cdylib: bool,
    required_features: Vec<String>,
}

/// A package of the project, from `cargo metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Package {
    name: String,
    manifest_path: PathBuf,
    lib: Option<Target>,
    examples: Vec<Target>,
    build_script: Option<PathBuf>,
}

impl Package {
    fn dir(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(Path::new("."))
    }

    fn has_cdylib_lib(&self) -> bool {
        self.lib.as_ref().is_some_and(|lib| lib.is_cdylib)
    }

    fn cdylib_examples(&self) -> impl Iterator<Item = &Target> {
        self.examples.iter().filter(|t| t.is_cdylib)
    }
}

/// A project: its root, its manifest and the packages that hold its
/// tasks.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    root: PathBuf,
    name: String,
    manifest_file: Option<PathBuf>,
    manifest: Manifest,
    packages: Vec<Package>,
}

impl Project {
    /// Reads the project in `dir`: its `pipeweave.toml`, if any, and its
    /// packages (`cargo metadata`). Fails, saying what to do, when `dir` is
    /// no project or its manifest is wrong (then the error is a
    /// [`ManifestError`]).
    pub(crate) fn discover(dir: &Path) -> anyhow::Result<Project> {
        if !dir.is_dir() {
            bail!(
                "{} is not a directory; pass a project directory (a task crate with a Cargo.toml)",
                dir.display()
            );
        }
        let root = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let cargo_toml = root.join("Cargo.toml");
        if !cargo_toml.is_file() {
            bail!(
                "{} has no Cargo.toml, so it is not a project: a project is a task crate or a workspace of task crates; create one with `pipeweave init NAME`",
                dir.display()
            );
        }
        let manifest_path = root.join(MANIFEST_FILE);
        let (manifest, manifest_file) = if manifest_path.is_file() {
            let text = std::fs::read_to_string(&manifest_path)
                .with_context(|| format!("cannot read {}", manifest_path.display()))?;
            (parse_manifest(&text, &manifest_path)?, Some(manifest_path))
        } else {
            (Manifest::default(), None)
        };
        let metadata = cargo_metadata(&root, &cargo_toml)?;
        let all = packages_from_metadata(&metadata)?;
        let packages = select_packages(&all, &cargo_toml, &manifest)?;
        let name = match &manifest.name {
            Some(name) => name.clone(),
            None => default_name(&root, &packages)?,
        };
        Ok(Project {
            root,
            name,
            manifest_file,
            manifest,
            packages,
        })
    }

    /// The project's directory (absolute).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The project's name: the service its tasks register under.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The manifest's path, if the project has one.
    pub(crate) fn manifest_file(&self) -> Option<&Path> {
        self.manifest_file.as_deref()
    }

    /// The pipelines the manifest declares.
    pub(crate) fn pipelines(&self) -> &[PipelineSpec] {
        &self.manifest.pipelines
    }

    /// The names of the packages that hold the tasks.
    pub(crate) fn package_names(&self) -> Vec<&str> {
        self.packages.iter().map(|p| p.name.as_str()).collect()
    }

    /// `<root>/.secrets.yaml`, which may not exist.
    pub(crate) fn secrets_file(&self) -> PathBuf {
        self.root.join(SECRETS_FILE)
    }

    /// `<root>/tests/fixtures`, where `pipeweave test` looks for fixtures.
    pub(crate) fn fixtures_dir(&self) -> PathBuf {
        self.root.join("tests").join("fixtures")
    }

    /// The files and directories an edit in which should trigger a
    /// rebuild: each package's `src/`, the directories of its task
    /// targets, its `Cargo.toml` and build script, and `pipeweave.toml`.
    /// Only paths that exist.
    pub(crate) fn watch_paths(&self) -> Vec<PathBuf> {
        let mut paths = BTreeSet::new();
        for package in &self.packages {
            paths.insert(package.manifest_path.clone());
            paths.insert(package.dir().join("src"));
            if let Some(script) = &package.build_script {
                paths.insert(script.clone());
            }
            let targets = package.lib.iter().chain(match self.manifest.targets {
                Targets::Lib => [].iter(),
                Targets::Examples => package.examples.iter(),
            });
            for target in targets {
                if let Some(dir) = target.src_path.parent() {
                    paths.insert(dir.to_owned());
                }
            }
        }
        if let Some(manifest) = &self.manifest_file {
            paths.insert(manifest.clone());
        }
        // A directory inside another watched one adds nothing.
        let all: Vec<PathBuf> = paths.into_iter().filter(|p| p.exists()).collect();
        all.iter()
            .filter(|p| {
                !all.iter()
                    .any(|other| other != *p && other.is_dir() && p.starts_with(other))
            })
            .cloned()
            .collect()
    }

    /// Builds every task of the project with one `cargo build --target
    /// wasm32-wasip2` (release profile unless `debug`) and returns the
    /// components it produced. A spinner shows while it builds when stderr
    /// is a terminal and not `quiet`; cargo's errors are printed if it
    /// fails.
    pub(crate) fn build(&self, debug: bool, quiet: bool) -> anyhow::Result<Vec<PathBuf>> {
        let args = self.cargo_args();
        let components = run_cargo_build(&CargoBuild {
            dir: &self.root,
            manifest: &self.root.join("Cargo.toml"),
            args,
            packages: self
                .packages
                .iter()
                .map(|p| p.manifest_path.clone())
                .collect(),
            label: &self.name,
            debug,
            quiet,
        })?;
        if components.is_empty() {
            bail!(
                "cargo built {} but produced no component; {}",
                self.root.display(),
                match self.manifest.targets {
                    Targets::Lib => "a task crate needs `crate-type = [\"cdylib\"]` under [lib]",
                    Targets::Examples => "task examples need `crate-type = [\"cdylib\"]`",
                }
            );
        }
        Ok(components)
    }
}

impl Project {
    /// What `cargo build` needs besides the target and profile: each
    /// package, the manifest's features for each, and which targets.
    fn cargo_args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        for package in &self.packages {
            args.extend(["-p".into(), package.name.clone()]);
            for feature in &self.manifest.features {
                args.extend(["--features".into(), format!("{}/{feature}", package.name)]);
            }
        }
        args.push(
            match self.manifest.targets {
                Targets::Lib => "--lib",
                Targets::Examples => "--examples",
            }
            .into(),
        );
        args
    }
}

/// `cargo metadata --no-deps` for the manifest `cargo_toml`, run in `dir`.
fn cargo_metadata(dir: &Path, cargo_toml: &Path) -> anyhow::Result<serde_json::Value> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(dir)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(cargo_toml)
        .output()
        .context("cannot run cargo; is the Rust toolchain installed?")?;
    if !output.status.success() {
        bail!(
            "cargo cannot read {}:\n{}",
            cargo_toml.display(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    serde_json::from_slice(&output.stdout).context("cargo metadata printed something unexpected")
}

/// The workspace members in `cargo metadata` output.
fn packages_from_metadata(metadata: &serde_json::Value) -> anyhow::Result<Vec<Package>> {
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let strings = |value: &serde_json::Value| -> Vec<String> {
        value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let mut packages = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        if !package["id"]
            .as_str()
            .is_some_and(|id| members.contains(id))
        {
            continue;
        }
        let (Some(name), Some(manifest_path)) =
            (package["name"].as_str(), package["manifest_path"].as_str())
        else {
            bail!("cargo metadata printed a package without a name or manifest path");
        };
        let mut lib = None;
        let mut examples = Vec::new();
        let mut build_script = None;
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds = strings(&target["kind"]);
            let Some(src_path) = target["src_path"].as_str() else {
                continue;
            };
            let parsed = Target {
                name: target["name"].as_str().unwrap_or_default().to_owned(),
                src_path: PathBuf::from(src_path),
                is_cdylib: strings(&target["crate_types"])
                    .iter()
                    .any(|t| t == "cdylib"),
                required_features: strings(&target["required-features"]),
            };
            if kinds.iter().any(|k| k == "example") {
                examples.push(parsed);
            } else if kinds.iter().any(|k| k == "custom-build") {
                build_script = Some(parsed.src_path);
            } else if kinds.iter().any(|k| {
                matches!(
                    k.as_str(),
                    "lib" | "cdylib" | "rlib" | "dylib" | "staticlib"
                )
            }) {
                lib = Some(parsed);
            }
        }
        packages.push(Package {
            name: name.to_owned(),
            manifest_path: PathBuf::from(manifest_path),
            lib,
            examples,
            build_script,
        });
    }
    Ok(packages)
}

/// The packages that hold the project's tasks: `build.package`, else the
/// package at the root, else (a virtual workspace) every member with task
/// targets.
fn select_packages(
    all: &[Package],
    cargo_toml: &Path,
    manifest: &Manifest,
) -> anyhow::Result<Vec<Package>> {
    let names = || {
        all.iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let selected: Vec<Package> = if let Some(wanted) = &manifest.package {
        let Some(package) = all.iter().find(|p| &p.name == wanted) else {
            bail!(
                "{MANIFEST_FILE}: `build.package` {wanted:?} is not a package of this workspace; its packages are: {}",
                names()
            );
        };
        vec![package.clone()]
    } else if let Some(package) = all.iter().find(|p| same_file(&p.manifest_path, cargo_toml)) {
        vec![package.clone()]
    } else {
        let with_tasks: Vec<Package> = all
            .iter()
            .filter(|p| match manifest.targets {
                Targets::Lib => p.has_cdylib_lib(),
                Targets::Examples => p.cdylib_examples().next().is_some(),
            })
            .cloned()
            .collect();
        if with_tasks.is_empty() {
            bail!(
                "no package of the workspace at {} has a task target ({}); its packages are: {}",
                cargo_toml.display(),
                match manifest.targets {
                    Targets::Lib => "a [lib] with `crate-type = [\"cdylib\"]`",
                    Targets::Examples => "an example with `crate-type = [\"cdylib\"]`",
                },
                names()
            );
        }
        with_tasks
    };
    for package in &selected {
        match manifest.targets {
            Targets::Lib if !package.has_cdylib_lib() => bail!(
                "package {} has no task: add `crate-type = [\"cdylib\"]` under [lib] in {}, or set `targets = \"examples\"` under [build] in {MANIFEST_FILE} if its tasks are example targets",
                package.name,
                package.manifest_path.display()
            ),
            Targets::Examples => {
                let examples: Vec<&Target> = package.cdylib_examples().collect();
                if examples.is_empty() {
                    bail!(
                        "package {} has no example target with `crate-type = [\"cdylib\"]`, and {MANIFEST_FILE} says `targets = \"examples\"`",
                        package.name
                    );
                }
                let missing: BTreeSet<&str> = examples
                    .iter()
                    .flat_map(|t| &t.required_features)
                    .filter(|f| !manifest.features.contains(f))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    bail!(
                        "example targets of {} need the features {}, which the build does not turn on; add them to `features` under [build] in {MANIFEST_FILE}",
                        package.name,
                        missing.into_iter().collect::<Vec<_>>().join(", ")
                    );
                }
            }
            Targets::Lib => {}
        }
    }
    Ok(selected)
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().ok() == Some(a))
}

/// The project's name without a manifest: its one package's name, or the
/// root directory's, made kebab-case.
fn default_name(root: &Path, packages: &[Package]) -> anyhow::Result<String> {
    let source = match packages {
        [package] => package.name.clone(),
        _ => root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let name = source.to_ascii_lowercase().replace('_', "-");
    if !is_kebab_case(&name) {
        bail!(
            "{source:?} does not make a kebab-case project name; set `name` under [project] in {}",
            root.join(MANIFEST_FILE).display()
        );
    }
    Ok(name)
}

/// One of the project's built tasks.
#[derive(Debug, Clone)]
pub(crate) struct ProjectTask {
    /// The component's path.
    pub(crate) path: PathBuf,
    /// The component's bytes (what `register` uploads).
    pub(crate) bytes: Vec<u8>,
    /// The loaded task: its descriptor and code hash.
    pub(crate) task: Arc<LoadedTask>,
}

impl ProjectTask {
    /// The task's id.
    pub(crate) fn id(&self) -> &str {
        &self.task.descriptor().id
    }
}

/// Reads and loads one component (compiling it, or taking it from the
/// runner's cache, and calling its `describe`).
pub(crate) async fn load_task(runner: &Runner, path: &Path) -> anyhow::Result<ProjectTask> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let task = runner
        .load(bytes.clone())
        .await
        .with_context(|| format!("{} is not a valid task component", path.display()))?;
    Ok(ProjectTask {
        path: path.to_owned(),
        bytes,
        task,
    })
}

/// Loads every component; two components with the same task id are an
/// error naming both files.
pub(crate) async fn load_tasks(
    runner: &Runner,
    components: &[PathBuf],
) -> anyhow::Result<Vec<ProjectTask>> {
    let mut tasks = Vec::with_capacity(components.len());
    for path in components {
        tasks.push(load_task(runner, path).await?);
    }
    if let Some(duplicate) = duplicate_ids(&tasks).into_iter().next() {
        bail!("{duplicate}");
    }
    Ok(tasks)
}

/// Every task id that two components declare, as a sentence naming both.
pub(crate) fn duplicate_ids(tasks: &[ProjectTask]) -> Vec<String> {
    let mut first: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut duplicates = Vec::new();
    for task in tasks {
        if let Some(other) = first.insert(task.id(), &task.path) {
            duplicates.push(format!(
                "task id {:?} is declared by two components: {} and {}",
                task.id(),
                other.display(),
                task.path.display()
            ));
        }
    }
    duplicates
}

/// What pipeline validation needs of each task, by id. Every task counts
/// as runnable: it is about to be deployed with the project.
pub(crate) fn task_infos(tasks: &[ProjectTask]) -> BTreeMap<String, TaskInfo> {
    tasks
        .iter()
        .map(|t| {
            let descriptor = t.task.descriptor();
            (
                descriptor.id.clone(),
                TaskInfo {
                    allowed_next: descriptor.allowed_next.clone(),
                    concurrency: i32::try_from(descriptor.concurrency).unwrap_or(i32::MAX),
                    code_hash: t.task.code_hash().to_string(),
                    code_version: 1,
                    has_target: true,
                },
            )
        })
        .collect()
}

/// A runner for a project's tasks on this machine, caching compiled
/// components in `cache_dir` (or the user's cache).
pub(crate) fn local_runner(cache_dir: Option<PathBuf>) -> anyhow::Result<Runner> {
    Ok(Runner::new(RunnerConfig {
        engine: EngineConfig {
            max_instances: 4,
            ..EngineConfig::default()
        },
        cache_dir: cache_dir.or_else(crate::commands::run::default_cache_dir),
        ..RunnerConfig::default()
    })?)
}

/// Builds the project and loads its tasks (blocking work off the async
/// runtime).
pub(crate) async fn build_and_load(
    project: &Project,
    runner: &Runner,
    debug: bool,
    quiet: bool,
) -> anyhow::Result<Vec<ProjectTask>> {
    let builder = project.clone();
    let components = tokio::task::spawn_blocking(move || builder.build(debug, quiet))
        .await
        .context("the build was interrupted")??;
    load_tasks(runner, &components).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        parse_manifest(text, Path::new("pipeweave.toml"))
    }

    #[test]
    fn a_full_manifest_parses() -> Result<(), ManifestError> {
        let manifest = parse(
            r#"
[project]
name = "pdf-pipeline"

[build]
package = "pipeweave-example-pdf-pipeline"
features = ["guest"]
targets = "examples"

[[pipelines]]
id = "pdf-processing"
entry = ["download"]
failure-mode = "partial-merge"
description = "PDFs in, summaries out"

[[pipelines]]
id = "quick"
entry = ["download", "archive"]
"#,
        )?;
        assert_eq!(manifest.name.as_deref(), Some("pdf-pipeline"));
        assert_eq!(
            manifest.package.as_deref(),
            Some("pipeweave-example-pdf-pipeline")
        );
        assert_eq!(manifest.features, ["guest"]);
        assert_eq!(manifest.targets, Targets::Examples);
        assert_eq!(
            manifest.pipelines,
            [
                PipelineSpec {
                    id: "pdf-processing".into(),
                    entry: vec!["download".into()],
                    failure_mode: Some("partial-merge".into()),
                    description: Some("PDFs in, summaries out".into()),
                },
                PipelineSpec {
                    id: "quick".into(),
                    entry: vec!["download".into(), "archive".into()],
                    failure_mode: None,
                    description: None,
                },
            ]
        );
        Ok(())
    }

    #[test]
    fn an_empty_manifest_is_all_defaults() -> Result<(), ManifestError> {
        assert_eq!(parse("")?, Manifest::default());
        assert_eq!(parse("[project]\n")?.targets, Targets::Lib);
        Ok(())
    }

    #[track_caller]
    fn fails_at(text: &str, line: usize, needle: &str) {
        let error = parse(text).expect_err("the manifest is wrong");
        assert_eq!(error.line, line, "{error}");
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!("pipeweave.toml:{line}:")),
            "{shown}"
        );
        assert!(shown.contains(needle), "{shown}");
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        fails_at(
            "[project]\nname = \"x\"\ncolour = \"red\"\n",
            3,
            "unknown field `colour`",
        );
        fails_at("[project]\nname = \"Not Kebab\"\n", 2, "`project.name`");
        fails_at("[build]\ntargets = \"bins\"\n", 2, "unknown variant `bins`");
        fails_at(
            "[[pipelines]]\nid = \"p\"\nentry = [\"a\"]\nfailure-mode = \"yolo\"\n",
            4,
            "`pipelines[0].failure-mode` \"yolo\" is not a failure mode",
        );
        fails_at(
            "[[pipelines]]\nid = \"p\"\nentry = [\"a\"]\n\n[[pipelines]]\nid = \"p\"\nentry = [\"b\"]\n",
            6,
            "`pipelines[1].id` \"p\" is declared twice (first at line 2)",
        );
        fails_at(
            "[[pipelines]]\nid = \"p\"\nentry = []\n",
            3,
            "`pipelines[0].entry` is empty",
        );
        fails_at(
            "[[pipelines]]\nid = \"p\"\nentry = [\"Download\"]\n",
            3,
            "\"Download\" is not a valid task id",
        );
        fails_at("[[pipelines]]\nid = \"p\"\n", 1, "missing field `entry`");
        fails_at(
            "[[pipelines]]\nid = \"/p\"\nentry = [\"a\"]\n",
            2,
            "not a valid pipeline id",
        );
    }

    #[test]
    fn kebab_case_is_lowercase_words_and_single_hyphens() {
        for good in ["a", "pdf-pipeline", "task2", "a-b-c"] {
            assert!(is_kebab_case(good), "{good}");
        }
        for bad in ["", "A", "pdf_pipeline", "-a", "a-", "a--b", "2a", "a b"] {
            assert!(!is_kebab_case(bad), "{bad}");
        }
    }

    #[test]
    fn the_pdf_pipeline_is_a_project_of_example_tasks() -> anyhow::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pdf-pipeline");
        let project = Project::discover(&dir)?;
        assert_eq!(project.name(), "pdf-pipeline");
        assert_eq!(project.pipelines()[0].id, "pdf-processing");
        assert_eq!(project.pipelines()[0].entry, ["download"]);
        assert_eq!(
            project.cargo_args(),
            [
                "-p",
                "pipeweave-example-pdf-pipeline",
                "--features",
                "pipeweave-example-pdf-pipeline/guest",
                "--examples"
            ]
        );
        let root = project.root().to_owned();
        assert_eq!(
            project.watch_paths(),
            [
                root.join("Cargo.toml"),
                root.join("pipeweave.toml"),
                root.join("src"),
                root.join("tasks"),
            ]
        );
        assert_eq!(project.secrets_file(), root.join(".secrets.yaml"));
        Ok(())
    }

    #[test]
    fn a_crate_without_a_manifest_is_one_task_named_after_it() -> anyhow::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
        let project = Project::discover(&dir)?;
        assert_eq!(project.name(), "pipeweave-example-hello");
        assert!(project.pipelines().is_empty());
        assert!(project.manifest_file().is_none());
        assert_eq!(
            project.cargo_args(),
            ["-p", "pipeweave-example-hello", "--lib"]
        );
        Ok(())
    }

    #[test]
    fn a_workspace_of_task_crates_builds_every_task_crate() -> anyhow::Result<()> {
        let temp = tempfile::tempdir()?;
        let root = temp.path().join("my-tasks");
        let write = |path: &str, text: &str| -> std::io::Result<()> {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap_or(&root))?;
            std::fs::write(path, text)
        };
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"a\", \"b\", \"shared\"]\nresolver = \"3\"\n",
        )?;
        for task in ["a", "b"] {
            write(
                &format!("{task}/Cargo.toml"),
                &format!(
                    "[package]\nname = \"task-{task}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n"
                ),
            )?;
            write(&format!("{task}/src/lib.rs"), "")?;
        }
        write(
            "shared/Cargo.toml",
            "[package]\nname = \"shared\"\nversion = \"0.1.0\"\nedition = \"2024\"\n",
        )?;
        write("shared/src/lib.rs", "")?;

        let project = Project::discover(&root)?;
        assert_eq!(project.name(), "my-tasks");
        assert_eq!(
            project.cargo_args(),
            ["-p", "task-a", "-p", "task-b", "--lib"]
        );

        write("pipeweave.toml", "[build]\npackage = \"task-b\"\n")?;
        assert_eq!(
            Project::discover(&root)?.cargo_args(),
            ["-p", "task-b", "--lib"]
        );

        write("pipeweave.toml", "[build]\npackage = \"shared\"\n")?;
        let error = Project::discover(&root)
            .expect_err("shared has no task")
            .to_string();
        assert!(error.contains("package shared has no task"), "{error}");

        write("pipeweave.toml", "[build]\npackage = \"nope\"\n")?;
        let error = Project::discover(&root)
            .expect_err("no such package")
            .to_string();
        assert!(
            error.contains("task-a, task-b") || error.contains("shared"),
            "{error}"
        );
        Ok(())
    }

    #[test]
    fn lines_and_columns_count_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
