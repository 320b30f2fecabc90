//! PipeWeave's benchmark harness.
//!
//! `cargo run --release -p pipeweave-bench -- sandbox` measures what one
//! attempt costs the host: instantiate a no-op task in a fresh store with a
//! fresh sandbox directory, call it, classify the result and drop
//! everything.
//!
//! `cargo run --release -p pipeweave-bench -- queue` measures the queue on
//! a private PostgreSQL with its durability defaults: claim + complete
//! throughput of no-op runs next to pgbench running the same SQL, and idle
//! enqueue-to-start latency through the whole orchestrator (see `queue`).
//!
//! `cargo run --release -p pipeweave-bench -- data` measures the data
//! plane: a 1 GiB asset stored by a host through a real S3-protocol server,
//! next to raw `object_store` copies of the same bytes, and the peak memory
//! of the orchestrator and host processes meanwhile (see `data`).
//!
//! `… -- e2e` runs no-op runs through real orchestrator, host and Python
//! worker processes (see `e2e`); `… -- scale` measures the claim with 10k,
//! 100k and 1M runs pending and burns down the largest backlog (see
//! `scale`). `--peers` (on by default in `all`) runs graphile-worker and
//! pg-boss in the same rounds as PipeWeave (see `peers`).
//!
//! `… -- all` runs every scenario in one go, with the peers, and prints
//! one table of every figure with its target at the end.
//!
//! Each figure is the median of several rounds with min and max, because
//! the machines this runs on are shared and noisy; every comparison is a
//! ratio taken within one round. Results are printed as a table and
//! appended as JSON lines to `bench/results.jsonl` with the date, machine,
//! load, commit and configuration.
//!
//! # Layout
//!
//! - `main`: arguments, the sandbox scenario, `all`, the results file.
//! - `queue`: the queue scenario.
//! - `e2e`: the end-to-end scenario.
//! - `scale`: the scale scenario.
//! - `data`: the data scenario.
//! - `peers`: graphile-worker and pg-boss, installed with npm and driven by
//!   `bench/peers/*.mjs`.
//! - `pgbench`: the pgbench script built from the orchestrator's SQL.
//! - `floor`: the floor of a durable queue, a minimal lock + delete queue
//!   drained by pgbench in the queue scenario's rounds.
//! - `stats`: medians, percentiles, table lines, the machine description.

mod data;
mod e2e;
mod floor;
mod peers;
mod pgbench;
mod queue;
mod scale;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use pipeweave_host::{EngineConfig, LoadedTask, RunRequest, Runner, RunnerConfig};
use serde_json::{Value, json};

use crate::peers::Peers;
use crate::stats::{Line, Outcome, Spread, machine, percentile, print_lines};

/// Benchmarks for PipeWeave.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Rounds per figure; the table shows their median, min and max.
    #[arg(long, default_value_t = 5, global = true)]
    rounds: usize,

    /// Where raw rows are appended (JSON lines).
    #[arg(long, default_value = "bench/results.jsonl", global = true)]
    results: PathBuf,

    /// Where the peers (Node 22, graphile-worker, pg-boss) are installed
    /// with npm, and reused from (default: target/bench-peers).
    #[arg(long, global = true, value_name = "DIR")]
    peers_dir: Option<PathBuf>,

    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Instantiate + run + drop of a no-op task, including its sandbox
    /// directory: latency (one at a time) and throughput (all cores).
    Sandbox {
        /// Attempts per latency round.
        #[arg(long, default_value_t = 20_000)]
        runs: usize,
        /// Attempts per throughput round.
        #[arg(long, default_value_t = 100_000)]
        throughput_runs: u64,
        /// Attempts in flight at once in the throughput rounds.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Claim + complete throughput of no-op runs next to pgbench running
    /// the same SQL on the same cluster, and idle enqueue-to-start latency
    /// through the orchestrator.
    Queue {
        /// Runs enqueued and drained per throughput round (rounded up to a
        /// multiple of batch × clients).
        #[arg(long, default_value_t = 100_000)]
        runs: usize,
        /// Runs per claim statement (PipeWeave and pgbench).
        #[arg(long, default_value_t = 100)]
        batch: i64,
        /// Concurrent claim + complete loops, and pgbench clients: one drain
        /// for each number in the list.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
        clients: Vec<usize>,
        /// Runs per latency round, enqueued one at a time.
        #[arg(long, default_value_t = 1_000)]
        latency_runs: usize,
        /// Pause between latency runs, in milliseconds, so the queue is idle.
        #[arg(long, default_value_t = 5)]
        pause_ms: u64,
        /// Also drain once with auto_explain on and print the plans the
        /// claim and succeed statements use midway (not a measurement).
        #[arg(long)]
        explain: bool,
        /// A server setting, `name=value`, for every database of the run
        /// (`ALTER DATABASE … SET`); repeatable. For trying a change, e.g.
        /// `--db-setting plan_cache_mode=force_custom_plan`.
        #[arg(long = "db-setting", value_name = "NAME=VALUE")]
        db_settings: Vec<String>,
        /// Also run graphile-worker (default and tuned) and pg-boss in the
        /// same rounds, installing them with npm first if needed.
        #[arg(long)]
        peers: bool,
    },
    /// No-op runs through real processes: orchestrator → host → callback
    /// for a WASM task, and orchestrator → Python plain HTTP worker; next
    /// to graphile-worker tuned with `--peers`; and idle enqueue → host
    /// latency.
    E2e(E2eArgs),
    /// Claim latency and throughput with growing backlogs, and the
    /// burn-down of the largest.
    Scale(ScaleArgs),
    /// A large asset stored by a host through s3s-fs, next to raw
    /// object_store copies of the same bytes to the same bucket, with the
    /// peak memory of the orchestrator and host processes.
    Data {
        /// The asset's size in bytes.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
    },
    /// Every scenario with the peers, then one table of every figure.
    All {
        /// Throughput runs of the queue scenario.
        #[arg(long, default_value_t = 100_000)]
        queue_runs: usize,
        /// Runs per latency round (queue scenario and peers).
        #[arg(long, default_value_t = 1_000)]
        latency_runs: usize,
        #[command(flatten)]
        e2e: E2eArgs,
        #[command(flatten)]
        scale: ScaleArgs,
        /// The data scenario's asset size in bytes (0 skips it).
        #[arg(long, default_value_t = 1 << 30)]
        data_bytes: u64,
        /// Attempts per latency round of the sandbox scenario.
        #[arg(long, default_value_t = 20_000)]
        sandbox_runs: usize,
        /// Attempts per throughput round of the sandbox scenario.
        #[arg(long, default_value_t = 100_000)]
        sandbox_throughput_runs: u64,
        /// Leave the peers out.
        #[arg(long)]
        no_peers: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct E2eArgs {
    /// Runs per end-to-end throughput measurement.
    #[arg(long, default_value_t = 10_000)]
    e2e_runs: usize,
    /// Runs per end-to-end latency round.
    #[arg(long, default_value_t = 500)]
    e2e_latency_runs: usize,
    /// `pipeweave host --capacity` (default: the host's own, one per core).
    #[arg(long)]
    host_capacity: Option<usize>,
    /// `pipeweave host --prefetch`: dispatches the host holds beyond its
    /// capacity.
    #[arg(long, default_value_t = 0)]
    host_prefetch: usize,
    /// Run graphile-worker tuned in the same rounds (always in `all`
    /// unless --no-peers).
    #[arg(long)]
    e2e_peers: bool,
    /// Load pg_stat_statements into the private PostgreSQL and print, after
    /// each drain, the statements that took most of its time (a profile of
    /// the database side; it costs a few percent of throughput).
    #[arg(long)]
    statements: bool,
}

#[derive(Debug, Clone, clap::Args)]
struct ScaleArgs {
    /// Backlog sizes, runs pending.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<usize>,
    /// Runs claimed by each probe (default: half the smallest backlog, at
    /// most 5,000).
    #[arg(long)]
    probe: Option<usize>,
    /// Burn-downs of the largest backlog (default: --rounds).
    #[arg(long)]
    burn_down_rounds: Option<usize>,
}

fn install_peers(dir: Option<&PathBuf>) -> anyhow::Result<Peers> {
    Peers::install(&dir.cloned().unwrap_or_else(Peers::default_dir))
}

fn e2e_settings(args: &E2eArgs, peers: Option<Peers>) -> e2e::Settings {
    e2e::Settings {
        runs: args.e2e_runs,
        latency_runs: args.e2e_latency_runs,
        pause: Duration::from_millis(5),
        host_capacity: args.host_capacity,
        host_prefetch: args.host_prefetch,
        peers,
        statements: args.statements,
    }
}

fn scale_settings(args: &ScaleArgs, rounds: usize) -> scale::Settings {
    let smallest = args.sizes.iter().copied().min().unwrap_or(0);
    scale::Settings {
        sizes: args.sizes.clone(),
        probe: args.probe.unwrap_or((smallest / 2).min(5_000)),
        batch: 100,
        clients: 8,
        burn_down_rounds: args.burn_down_rounds.unwrap_or(rounds),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rounds = args.rounds.max(1);
    let outcome = match args.scenario {
        Scenario::Sandbox {
            runs,
            throughput_runs,
            concurrency,
        } => sandbox(rounds, runs, throughput_runs, concurrency)?,
        Scenario::Queue {
            runs,
            batch,
            clients,
            latency_runs,
            pause_ms,
            explain,
            db_settings,
            peers,
        } => queue::queue(
            rounds,
            &queue::Settings {
                runs,
                batch,
                clients,
                latency_runs,
                pause: Duration::from_millis(pause_ms),
                explain,
                db_settings,
                peers: if peers {
                    Some(install_peers(args.peers_dir.as_ref())?)
                } else {
                    None
                },
            },
        )?,
        Scenario::E2e(e2e_args) => {
            let peers = if e2e_args.e2e_peers {
                Some(install_peers(args.peers_dir.as_ref())?)
            } else {
                None
            };
            e2e::e2e(rounds, &e2e_settings(&e2e_args, peers))?
        }
        Scenario::Scale(scale_args) => scale::scale(rounds, &scale_settings(&scale_args, rounds))?,
        Scenario::Data { bytes } => data::data(rounds, bytes)?,
        Scenario::All {
            queue_runs,
            latency_runs,
            e2e: e2e_args,
            scale: scale_args,
            data_bytes,
            sandbox_runs,
            sandbox_throughput_runs,
            no_peers,
        } => {
            let peers = if no_peers {
                None
            } else {
                Some(install_peers(args.peers_dir.as_ref())?)
            };
            let mut summary = Vec::new();
            let mut all_rows = Vec::new();
            // Each scenario's rows are appended as soon as it ends, so they
            // are kept even if a later one fails.
            let mut keep = |outcome: Outcome| -> anyhow::Result<()> {
                append_results(&args.results, &outcome.rows)?;
                summary.extend(outcome.summary);
                all_rows.extend(outcome.rows);
                Ok(())
            };
            keep(sandbox(rounds, sandbox_runs, sandbox_throughput_runs, 16)?)?;
            keep(queue::queue(
                rounds,
                &queue::Settings {
                    runs: queue_runs,
                    batch: 100,
                    clients: vec![1, 2, 4, 8],
                    latency_runs,
                    pause: Duration::from_millis(5),
                    explain: false,
                    db_settings: Vec::new(),
                    peers: peers.clone(),
                },
            )?)?;
            keep(e2e::e2e(rounds, &e2e_settings(&e2e_args, peers))?)?;
            keep(scale::scale(rounds, &scale_settings(&scale_args, rounds))?)?;
            if data_bytes > 0 {
                keep(data::data(rounds, data_bytes)?)?;
            }
            summary.extend(e2e_ceiling(&all_rows));
            let base = machine();
            println!(
                "\nall: every scenario, {rounds} rounds each; {} on {} ({} cores), load average {}, commit {}{}\n",
                base["date"].as_str().unwrap_or("?"),
                base["cpu"].as_str().unwrap_or("?"),
                base["cores"],
                base["loadAverage"].as_str().unwrap_or("?"),
                base["commit"].as_str().unwrap_or("?"),
                if base["dirty"] == true {
                    " (uncommitted changes)"
                } else {
                    ""
                },
            );
            print_lines(&summary);
            println!("\nraw rows appended to {}", args.results.display());
            return Ok(());
        }
    };
    append_results(&args.results, &outcome.rows)?;
    println!("\nraw rows appended to {}", args.results.display());
    Ok(())
}

fn runner(cores: usize) -> anyhow::Result<Runner> {
    let config = RunnerConfig {
        engine: EngineConfig {
            max_instances: 64.max(cores as u32 * 8),
            ..EngineConfig::default()
        },
        cache_dir: Some(pipeweave_testkit::compile_cache_dir()),
        ..RunnerConfig::default()
    };
    Ok(Runner::new(config)?)
}

async fn one_attempt(runner: &Runner, task: &LoadedTask) -> anyhow::Result<()> {
    let report = runner.run(task, RunRequest::new(Value::Null)).await?;
    if let Err(failure) = &report.outcome {
        anyhow::bail!("the no-op task failed: {failure:?}");
    }
    Ok(())
}

/// The sandbox scenario: returns the raw rows and the summary.
fn sandbox(
    rounds: usize,
    runs: usize,
    throughput_runs: u64,
    concurrency: usize,
) -> anyhow::Result<Outcome> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("building the noop guest…");
    let noop = pipeweave_testkit::guest("noop");
    let runner = Arc::new(runner(cores)?);

    // Latency: one attempt at a time on one thread.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let task = single
        .block_on(runner.load_file(&noop))
        .context("loading noop")?;
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut maxes = Vec::new();
    single.block_on(async {
        for _ in 0..2_000 {
            one_attempt(&runner, &task).await?;
        }
        for round in 0..rounds {
            let mut samples = Vec::with_capacity(runs);
            for _ in 0..runs {
                let started = Instant::now();
                one_attempt(&runner, &task).await?;
                samples.push(started.elapsed());
            }
            samples.sort_unstable();
            let (p50, p99, max) = (
                percentile(&samples, 0.50),
                percentile(&samples, 0.99),
                percentile(&samples, 1.0),
            );
            eprintln!(
                "latency round {}: p50 {p50:?} p99 {p99:?} max {max:?}",
                round + 1
            );
            p50s.push(p50);
            p99s.push(p99);
            maxes.push(max);
        }
        anyhow::Ok(())
    })?;
    drop(single);

    // Throughput: `concurrency` attempts in flight on a thread per core.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let mut rates = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        let remaining = Arc::new(AtomicU64::new(throughput_runs));
        multi.block_on(async {
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (runner, task, remaining) = (
                        Arc::clone(&runner),
                        Arc::clone(&task),
                        Arc::clone(&remaining),
                    );
                    tokio::spawn(async move {
                        while remaining
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                n.checked_sub(1)
                            })
                            .is_ok()
                        {
                            one_attempt(&runner, &task).await?;
                        }
                        anyhow::Ok(())
                    })
                })
                .collect();
            for worker in workers {
                worker.await??;
            }
            anyhow::Ok(())
        })?;
        let rate = throughput_runs as f64 / started.elapsed().as_secs_f64();
        eprintln!("throughput round {}: {rate:.0} tasks/s", round + 1);
        rates.push(rate);
    }

    let p50 = Spread::of_durations(&p50s);
    let p99 = Spread::of_durations(&p99s);
    let max = Spread::of_durations(&maxes);
    let rate = Spread::of(&rates);
    println!("\nsandbox: instantiate + run + drop of a no-op task with its sandbox directory");
    println!(
        "{rounds} rounds; latency rounds of {runs} attempts one at a time; throughput rounds of {throughput_runs} attempts, {concurrency} in flight on {cores} threads
"
    );
    println!("| figure | median | min | max | target |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| latency p50 (µs) | {:.1} | {:.1} | {:.1} | ≤ 25 |",
        p50.median, p50.min, p50.max
    );
    println!(
        "| latency p99 (µs) | {:.1} | {:.1} | {:.1} | |",
        p99.median, p99.min, p99.max
    );
    println!(
        "| latency max (µs) | {:.1} | {:.1} | {:.1} | |",
        max.median, max.min, max.max
    );
    println!(
        "| throughput (tasks/s) | {:.0} | {:.0} | {:.0} | ≥ 50,000 |",
        rate.median, rate.min, rate.max
    );

    let base = machine();
    let mut rows = Vec::new();
    for (i, ((p50, p99), rate)) in p50s.iter().zip(&p99s).zip(&rates).enumerate() {
        let mut row = base.clone();
        row["scenario"] = json!("sandbox");
        row["round"] = json!(i + 1);
        row["config"] = json!({"runs": runs, "throughputRuns": throughput_runs, "concurrency": concurrency, "threads": cores});
        row["p50Us"] = json!(micros(*p50));
        row["p99Us"] = json!(micros(*p99));
        row["tasksPerSec"] = json!(rate);
        rows.push(row);
    }
    let us = |values: &[Duration]| values.iter().map(|d| micros(*d)).collect::<Vec<_>>();
    let summary = vec![
        Line::new("sandbox: instantiate + run + drop, p50 (µs)", &us(&p50s), 1)
            .target("≤ 25", |m| m <= 25.0),
        Line::new("sandbox: instantiate + run + drop, p99 (µs)", &us(&p99s), 1),
        Line::new(
            format!("sandbox: throughput, {concurrency} in flight (tasks/s)"),
            &rates,
            0,
        )
        .target("≥ 50,000", |m| m >= 50_000.0),
    ];
    Ok(Outcome { rows, summary })
}

/// The end-to-end ceiling that the parts measured in one `all` run allow:
/// per run, the queue's own SQL at its fastest (pgbench, most clients:
/// claim and succeed, no HTTP, no orchestrator) plus one sandbox (the
/// sandbox scenario's throughput), each the time of the whole machine, so
/// `1 / (1 / pgbench + 1 / sandbox)` runs per second. Orchestrator, host
/// and HTTP cost nothing in it, so no end-to-end drain can beat it; below
/// graphile-worker tuned's end-to-end rate, it shows the target out of
/// reach for this queue SQL. Rounds are paired by number across the
/// scenarios of the run.
fn e2e_ceiling(rows: &[Value]) -> Vec<Line> {
    let per_round = |scenario: &str, field: &str| -> Vec<f64> {
        rows.iter()
            .filter(|row| row["scenario"] == scenario)
            .filter_map(|row| row[field].as_f64())
            .collect()
    };
    let pgbench = per_round("queue", "pgbenchRunsPerSec");
    let sandbox = per_round("sandbox", "tasksPerSec");
    let graphile = per_round("e2e", "graphileTunedJobsPerSec");
    let ceiling: Vec<f64> = pgbench
        .iter()
        .zip(&sandbox)
        .map(|(pgbench, sandbox)| 1.0 / (1.0 / pgbench + 1.0 / sandbox))
        .collect();
    if ceiling.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![Line::new(
        "e2e ceiling: queue SQL (pgbench) + one sandbox per run, whole machine (runs/s)",
        &ceiling,
        0,
    )];
    if !graphile.is_empty() {
        let ratios: Vec<f64> = ceiling.iter().zip(&graphile).map(|(c, g)| c / g).collect();
        lines.push(Line::new(
            "ratio e2e ceiling / graphile-worker tuned end to end",
            &ratios,
            2,
        ));
    }
    lines
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn append_results(path: &PathBuf, rows: &[Value]) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    for row in rows {
        writeln!(file, "{row}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_has_no_clashing_arguments() {
        super::Args::command().debug_assert();
    }

    #[test]
    fn the_e2e_ceiling_adds_the_queue_sql_and_the_sandbox_per_run() {
        let rows = [
            serde_json::json!({"scenario": "queue", "pgbenchRunsPerSec": 40_000.0}),
            serde_json::json!({"scenario": "sandbox", "tasksPerSec": 120_000.0}),
            serde_json::json!({"scenario": "e2e", "graphileTunedJobsPerSec": 40_000.0}),
        ];
        let lines = super::e2e_ceiling(&rows);
        assert_eq!(lines.len(), 2);
        // 25 µs of SQL and 8.3 µs of sandbox per run: 30,000 runs/s.
        assert!((lines[0].spread.median - 30_000.0).abs() < 1e-6);
        assert!((lines[1].spread.median - 0.75).abs() < 1e-9);
        assert!(super::e2e_ceiling(&rows[1..]).is_empty());
    }
}
