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
//! Each figure is the median of several rounds with min and max, because
//! the machines this runs on are shared and noisy. Results are printed as
//! a table and appended as JSON lines to `bench/results.jsonl` with the
//! date, machine, load and commit.
//!
//! # Layout
//!
//! - `main`: arguments, the sandbox scenario, the results file.
//! - `queue`: the queue scenario.
//! - `data`: the data scenario.
//! - `pgbench`: the pgbench script built from the orchestrator's SQL.
//! - `stats`: medians, percentiles, the machine description.

mod data;
mod pgbench;
mod queue;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use pipeweave_host::{EngineConfig, LoadedTask, RunRequest, Runner, RunnerConfig};
use serde_json::{Value, json};

use crate::stats::{Spread, machine, percentile};

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
        /// Concurrent claim + complete loops, and pgbench clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
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
    },
    /// A large asset stored by a host through s3s-fs, next to raw
    /// object_store copies of the same bytes to the same bucket, with the
    /// peak memory of the orchestrator and host processes.
    Data {
        /// The asset's size in bytes.
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
    },
    /// Every scenario, with default settings.
    All,
}

fn queue_defaults() -> queue::Settings {
    queue::Settings {
        runs: 100_000,
        batch: 100,
        clients: 8,
        latency_runs: 1_000,
        pause: Duration::from_millis(5),
        explain: false,
        db_settings: Vec::new(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rounds = args.rounds.max(1);
    let rows = match args.scenario {
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
            },
        )?,
        Scenario::Data { bytes } => data::data(rounds, bytes)?,
        Scenario::All => {
            // Each scenario's rows are kept even if a later one fails.
            append_results(&args.results, &sandbox(rounds, 20_000, 100_000, 16)?)?;
            append_results(&args.results, &queue::queue(rounds, &queue_defaults())?)?;
            data::data(rounds, 1 << 30)?
        }
    };
    append_results(&args.results, &rows)?;
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

/// The sandbox scenario: returns the raw rows.
fn sandbox(
    rounds: usize,
    runs: usize,
    throughput_runs: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<Value>> {
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
    Ok(rows)
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
