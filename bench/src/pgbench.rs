//! The pgbench side of the queue scenario: a script built from the
//! orchestrator's own claim and succeed statements, run by `pgbench` on the
//! same cluster, and its output read back.
//!
//! # How the script differs from the orchestrator's path
//!
//! The orchestrator (and the PipeWeave side of the benchmark) runs two
//! statements per batch, each its own transaction, as prepared statements:
//! `queries/claim.sql` returns the claimed runs to the client, which sends
//! their ids, attempts and tokens back as the array parameters of
//! `queries/succeed.sql`. pgbench cannot keep a result set, so the script
//! keeps the two statements and their two transactions (autocommit, no
//! `BEGIN`/`COMMIT`; `-M prepared`) but:
//!
//! - the claim's parameters are literals or pgbench variables: `$1` is
//!   `'{noop}'::text[]`, `$2` the batch size, `$3` `now()`, `$4`
//!   `'pgbench-' || :client_id` and `$5` the target capacity that the
//!   PipeWeave side passes too ([`TARGET_CAPACITY`]);
//! - the claim's final `update … returning` becomes the last CTE of the
//!   same `with`, and a `select` around it folds the claimed rows into
//!   one row of arrays (`array_agg`), which `\gset` stores in pgbench
//!   variables: the server returns one row instead of one per run;
//! - the succeed statement takes those variables as its `$1`–`$4` (pgbench
//!   sends them as parameters in prepared mode), and `now()` as `$5`;
//! - both transactions run with the orchestrator's claim session settings
//!   (`pipeweave_orchestrator::scheduler::claim_session_settings`: the
//!   same plans, and commits that do not wait for the WAL flush). The
//!   orchestrator's completions do wait for it, so that difference can
//!   only favour pgbench.
//!
//! Every other character of the two files is what the orchestrator runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use pipeweave_orchestrator::scheduler::claim_session_settings;

/// The capacity both sides give each claiming target: far above what one
/// client has running, so it never limits a claim, but the claim still
/// counts the target's running attempts as the orchestrator's does.
pub(crate) const TARGET_CAPACITY: i64 = 1_000_000;

/// The orchestrator's claim statement, as it runs it.
const CLAIM_SQL: &str = include_str!("../../orchestrator/queries/claim.sql");
/// The orchestrator's succeed statement, as it runs it.
const SUCCEED_SQL: &str = include_str!("../../orchestrator/queries/succeed.sql");

/// The statement of a query file: without its leading `--` comment lines,
/// surrounding blank space and the final semicolon.
fn statement(file: &str) -> String {
    let body: Vec<&str> = file
        .lines()
        .skip_while(|line| line.trim_start().starts_with("--") || line.trim().is_empty())
        .collect();
    body.join("\n")
        .trim()
        .trim_end_matches(';')
        .trim_end()
        .to_owned()
}

/// Replaces the parameters `$1`…`$n` by `values` (highest first, so `$1`
/// never eats the start of `$10`); fails if any `$<digit>` is left.
fn substitute(sql: &str, values: &[&str]) -> anyhow::Result<String> {
    let mut text = sql.to_owned();
    for (i, value) in values.iter().enumerate().rev() {
        let parameter = format!("${}", i + 1);
        if !text.contains(&parameter) {
            bail!("the statement has no {parameter}:\n{sql}");
        }
        text = text.replace(&parameter, value);
    }
    let bytes = text.as_bytes();
    if let Some(at) = bytes
        .windows(2)
        .position(|w| w[0] == b'$' && w[1].is_ascii_digit())
    {
        bail!(
            "parameter left after substitution at byte {at}: {}",
            &text[at..text.len().min(at + 20)]
        );
    }
    Ok(text)
}

/// The pgbench script for claim batches of `batch` runs of task `noop`.
pub(crate) fn script(batch: i64) -> anyhow::Result<String> {
    let batch = batch.to_string();
    let claim = substitute(
        &statement(CLAIM_SQL),
        &[
            "'{noop}'::text[]",
            &batch,
            "now()",
            "('pgbench-' || :client_id::text)",
            &TARGET_CAPACITY.to_string(),
        ],
    )?;
    // `with …, chosen as (…), counted as (…)\nupdate runs set … returning …`
    // becomes `with …, claimed as (update runs set … returning …) select …`.
    if !claim.starts_with("with ") {
        bail!("claim.sql no longer starts with `with`; update bench/src/pgbench.rs");
    }
    let Some(split) = claim.rfind("\nupdate runs set") else {
        bail!("claim.sql no longer ends with `update runs set`; update bench/src/pgbench.rs");
    };
    let (ctes, update) = claim.split_at(split);
    let claim = format!(
        "{ctes},\nclaimed as ({update}\n)\n\
         select coalesce(array_agg(id), '{{}}') as ids,\n       \
         coalesce(array_agg(attempt), '{{}}') as attempts,\n       \
         coalesce(array_agg(\"attempt_token!\"), '{{}}') as tokens,\n       \
         coalesce(array_agg(jsonb_build_object('output', '{{}}'::jsonb)), '{{}}') as results\n\
         from claimed \\gset"
    );
    let succeed = substitute(
        &statement(SUCCEED_SQL),
        // No log paths: unnest pads the empty array with nulls.
        &[":ids", ":attempts", ":tokens", ":results", "now()", "'{}'"],
    )?;
    if claim.contains(';') || succeed.contains(';') {
        bail!("a semicolon inside a statement would end it early in pgbench");
    }
    Ok(format!(
        "-- Generated by pipeweave-bench from orchestrator/queries/claim.sql and\n\
         -- succeed.sql (bench/src/pgbench.rs says how it differs).\n\
         {claim}\n{succeed};\n"
    ))
}

/// What one pgbench run measured.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Transactions (script executions) completed.
    pub(crate) transactions: u64,
    /// Transactions per second, without connection time.
    pub(crate) tps: f64,
    /// Average latency of each statement in ms (`-r`), in script order.
    pub(crate) statement_ms: Vec<f64>,
    /// pgbench's report, for the log.
    pub(crate) report: String,
}

impl Outcome {
    /// Seconds pgbench spent on its transactions.
    pub(crate) fn seconds(&self) -> f64 {
        if self.tps > 0.0 {
            self.transactions as f64 / self.tps
        } else {
            0.0
        }
    }
}

/// How to run pgbench against one database.
#[derive(Debug, Clone)]
pub(crate) struct Run<'a> {
    /// The folder with `pgbench`.
    pub(crate) bindir: &'a Path,
    /// The server's port on 127.0.0.1.
    pub(crate) port: u16,
    /// The database.
    pub(crate) database: &'a str,
    /// The script file.
    pub(crate) script: &'a Path,
    /// Concurrent clients.
    pub(crate) clients: usize,
    /// Transactions per client.
    pub(crate) transactions: u64,
}

/// Runs pgbench and reads its report.
pub(crate) fn run(run: &Run<'_>) -> anyhow::Result<Outcome> {
    let clients = run.clients.max(1);
    let output = Command::new(run.bindir.join("pgbench"))
        .args(["-n", "-M", "prepared", "-r"])
        .args(["-c", &clients.to_string()])
        .args(["-j", &clients.min(2).to_string()])
        .args(["-t", &run.transactions.to_string()])
        .arg("-f")
        .arg(run.script)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &run.port.to_string(),
            "-U",
            "postgres",
        ])
        .arg(run.database)
        // The orchestrator's claim settings: the same plan for the same
        // claim SQL. Both statements commit without waiting for the WAL
        // flush, as the orchestrator's claims do; its completions wait, so
        // this can only favour pgbench.
        .env("PGOPTIONS", claim_session_options())
        .output()
        .context("cannot run pgbench")?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "pgbench failed ({}):\n{report}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&report)
}

fn parse(report: &str) -> anyhow::Result<Outcome> {
    let number_after = |prefix: &str| -> Option<f64> {
        report.lines().find_map(|line| {
            line.trim()
                .strip_prefix(prefix)?
                .split_whitespace()
                .next()?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
    };
    let transactions = number_after("number of transactions actually processed:")
        .context("no transaction count in pgbench's report")?;
    let tps = number_after("tps =").context("no tps in pgbench's report")?;
    // After "statement latencies in milliseconds…": one line per statement,
    // `  <ms>  <failures>  <first line of the statement>`.
    let statement_ms = report
        .lines()
        .skip_while(|line| !line.contains("statement latencies in milliseconds"))
        .skip(1)
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect();
    Ok(Outcome {
        transactions: transactions as u64,
        tps,
        statement_ms,
        report: report.to_owned(),
    })
}

/// Writes a script to a file of its own in the temporary directory, named
/// after `name` and this process.
pub(crate) fn write_script(name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "pipeweave-bench-{name}-{}.pgbench.sql",
        std::process::id()
    ));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// [`claim_session_settings`] as `PGOPTIONS` (`-c name=value …`).
fn claim_session_options() -> String {
    claim_session_settings()
        .map(|(name, value)| format!("-c {name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_keeps_the_statements_and_fills_every_parameter() -> anyhow::Result<()> {
        let text = script(100)?;
        assert!(!text.contains("$1") && !text.contains("$5"), "{text}");
        assert!(
            text.contains("limit least(100, greatest(1000000 - ("),
            "{text}"
        );
        assert!(text.contains("for update skip locked"), "{text}");
        assert!(text.contains("claimed as (\nupdate runs set"), "{text}");
        assert!(text.contains("from claimed \\gset\n"), "{text}");
        assert!(text.contains("where runs.id = any(:ids::uuid[])"), "{text}");
        assert!(
            text.trim_end().ends_with("select id from finished;"),
            "{text}"
        );
        // Two statements: the claim (ending in \gset) and the succeed.
        assert_eq!(text.matches(';').count(), 1, "{text}");
        Ok(())
    }

    #[test]
    fn reads_a_pgbench_15_report() -> anyhow::Result<()> {
        let report = "transaction type: x.sql
scaling factor: 1
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
number of transactions per client: 250
number of transactions actually processed: 2000/2000
number of failed transactions: 0 (0.000%)
latency average = 12.000 ms
initial connection time = 9.1 ms
tps = 661.234567 (without initial connection time)
statement latencies in milliseconds and failures:
         8.100           0  with limited as materialized (
         3.900           0  with reported as (
";
        let outcome = parse(report)?;
        assert_eq!(outcome.transactions, 2000);
        assert!((outcome.tps - 661.234567).abs() < 1e-9);
        assert_eq!(outcome.statement_ms, [8.1, 3.9]);
        assert!((outcome.seconds() - 2000.0 / 661.234567).abs() < 1e-9);
        Ok(())
    }
}
