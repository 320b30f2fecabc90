//! The scale scenario: how the claim behaves as the backlog grows, and how
//! long a large backlog takes to burn down.
//!
//! One private PostgreSQL cluster (durability defaults), one database per
//! backlog size (10k, 100k and 1M runs pending by default; `--sizes`),
//! each migrated with the task `noop` registered as the queue scenario
//! does. The backlog is written with one `insert … select … from
//! generate_series` per size: the same columns `storage::runs::enqueue`
//! fills (priority from the task, `scheduled_at` and `created_at` the
//! fill's instant, input `{}`), with UUID v7 ids in insertion order; then
//! `VACUUM ANALYZE` and `CHECKPOINT`.
//!
//! Each round visits every size (the order turns with the round):
//!
//! - **Claim latency**: one client claims one run at a time
//!   (`storage::runs::claim` with a batch of 1, on the scheduler's kind of
//!   pool) and succeeds it, `probe` times; the figure is the claim
//!   statement's p50 and p99.
//! - **Throughput**: `clients` loops of claim `batch` → succeed all (the
//!   queue scenario's loop) until `probe` runs more have succeeded.
//! - The runs consumed are enqueued again the same way, followed by
//!   `VACUUM ANALYZE`, so every round starts with the same number pending.
//!
//! The figures are the ratios of the largest backlog to the smallest, per
//! round. Then the **burn-down**: the largest backlog drained to empty by
//! the queue scenario's loops, `--burn-down-rounds` times, each from a
//! freshly written backlog (the table truncated and filled again).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chrono::{DateTime, Utc};
use pipeweave_orchestrator::embedded_postgres::{EmbeddedPostgres, Options};
use pipeweave_orchestrator::scheduler::{claims_pool, completions_pool};
use pipeweave_orchestrator::storage::runs;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::pgbench;
use crate::queue::successes;
use crate::queue::{TASK, drain, drop_database, fresh_database, settle};
use crate::stats::{Line, Outcome, machine, percentile};

/// The scenario's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Backlog sizes, runs pending.
    pub(crate) sizes: Vec<usize>,
    /// Runs claimed by each probe (latency, then throughput).
    pub(crate) probe: usize,
    /// Runs per claim in the throughput probe and the burn-down.
    pub(crate) batch: i64,
    /// Claim loops in the throughput probe and the burn-down.
    pub(crate) clients: usize,
    /// Burn-downs of the largest backlog (0 for none).
    pub(crate) burn_down_rounds: usize,
}

/// One size in one round.
#[derive(Debug, Clone, Copy)]
struct Probe {
    size: usize,
    claim_p50_ms: f64,
    claim_p99_ms: f64,
    runs_per_sec: f64,
}

/// One burn-down.
#[derive(Debug, Clone, Copy)]
struct BurnDown {
    fill_secs: f64,
    seconds: f64,
    runs_per_sec: f64,
}

/// Writes `n` queued no-op runs with one statement; returns the time taken.
///
/// The ids are UUID v7: the fill's millisecond, version 7, then a counter
/// in the 74 bits that `Uuid::now_v7` fills with a counter and random
/// bits, so they sort in insertion order and after every earlier fill.
pub(crate) async fn fill(pool: &PgPool, n: usize, now: DateTime<Utc>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let inserted = sqlx::query(
        "insert into runs (id, task_id, priority, scheduled_at, input, created_at)
         select (lpad(to_hex(ms), 12, '0') || '7' || substr(counter, 1, 3)
                 || '8' || substr(counter, 4, 15))::uuid,
                tasks.id, tasks.priority, $1, '{}'::jsonb, $1
         from tasks,
              (select (extract(epoch from $1::timestamptz) * 1000)::bigint as ms) fill,
              lateral (select lpad(to_hex(g), 18, '0') as counter
                       from generate_series(1::bigint, $2::bigint) g) counters
         where tasks.id = $3",
    )
    .bind(now)
    .bind(i64::try_from(n)?)
    .bind(TASK)
    .execute(pool)
    .await?
    .rows_affected();
    ensure!(inserted == n as u64, "filled {inserted} runs of {n}");
    Ok(started.elapsed())
}

async fn pending(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from runs where state = 'queued'")
            .fetch_one(pool)
            .await?,
    )
}

/// Claims before the measured ones: the first connects and prepares.
const LATENCY_WARMUP: usize = 10;

/// One client, `probe` claims of one run each, each followed by its
/// succeed; returns the claim statement's p50 and p99 in ms, without the
/// first few claims.
async fn claim_latency(
    completions: &PgPool,
    claims: &PgPool,
    probe: usize,
) -> anyhow::Result<(f64, f64)> {
    let task_ids = vec![TASK.to_owned()];
    let result = json!({ "output": {} });
    let mut samples = Vec::with_capacity(probe);
    for i in 0..probe {
        let started = Instant::now();
        let claimed = runs::claim(
            claims,
            &task_ids,
            1,
            Utc::now(),
            "bench-scale",
            pgbench::TARGET_CAPACITY,
        )
        .await?;
        if i >= LATENCY_WARMUP.min(probe / 2) {
            samples.push(started.elapsed());
        }
        let run = claimed.first().context("the backlog ran out")?;
        let success = runs::Success {
            logs_path: None,
            run_id: run.id,
            attempt: run.attempt,
            attempt_token: run.attempt_token,
            result: result.clone(),
        };
        runs::succeed(completions, &[success], Utc::now()).await?;
    }
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok((
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
    ))
}

/// `clients` loops of claim `batch` → succeed, until `probe` runs have
/// succeeded (the last claims may take the total a little past it);
/// returns runs and elapsed time.
async fn claim_throughput(
    pool: &PgPool,
    clients: usize,
    batch: i64,
    probe: usize,
) -> anyhow::Result<(u64, Duration)> {
    let connections = u32::try_from(clients)?;
    let (claims, completions) = (
        claims_pool(pool, connections),
        completions_pool(pool, connections),
    );
    let left = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::try_from(probe)?));
    let started = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (completions, claims, left) = (completions.clone(), claims.clone(), left.clone());
        loops.spawn(async move {
            let task_ids = vec![TASK.to_owned()];
            let target = format!("bench-scale-{client}");
            let result = json!({ "output": {} });
            let mut done = 0_u64;
            loop {
                let want = left.fetch_sub(batch, std::sync::atomic::Ordering::Relaxed);
                if want <= 0 {
                    break;
                }
                let claimed = runs::claim(
                    &claims,
                    &task_ids,
                    want.min(batch),
                    Utc::now(),
                    &target,
                    pgbench::TARGET_CAPACITY,
                )
                .await?;
                ensure!(!claimed.is_empty(), "the backlog ran out");
                let successes = successes(&claimed, &result);
                let finished = runs::succeed(&completions, &successes, Utc::now()).await?;
                done += finished.len() as u64;
            }
            anyhow::Ok(done)
        });
    }
    let mut total = 0;
    while let Some(joined) = loops.join_next().await {
        total += joined??;
    }
    claims.close().await;
    Ok((total, started.elapsed()))
}

fn database(size: usize) -> String {
    format!("bench_scale_{size}")
}

/// The scale scenario: returns the raw rows and the summary.
pub(crate) fn scale(rounds: usize, settings: &Settings) -> anyhow::Result<Outcome> {
    ensure!(
        !settings.sizes.is_empty(),
        "--sizes needs at least one size"
    );
    ensure!(settings.probe > 0, "--probe must be at least 1");
    ensure!(
        settings.batch > 0 && settings.clients > 0,
        "--batch and --clients must be at least 1"
    );
    let smallest = settings.sizes.iter().copied().min().unwrap_or(0);
    ensure!(
        settings.probe * 2 <= smallest,
        "--probe ({}) must be at most half the smallest backlog ({smallest}): each round claims \
         it twice from every backlog",
        settings.probe
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("starting a private PostgreSQL with its durability defaults…");
    let cluster = EmbeddedPostgres::start(&Options::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let measured = runtime.block_on(measure(&cluster, rounds, settings));
    drop(runtime);
    cluster.stop();
    let (server_version, fills, probes, burn_downs) = measured?;

    let mut sizes = settings.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let (small, large) = (sizes[0], sizes[sizes.len() - 1]);
    let of = |size: usize, f: fn(&Probe) -> f64| -> Vec<f64> {
        probes
            .iter()
            .map(|round| round.iter().find(|p| p.size == size).map_or(0.0, f))
            .collect()
    };
    let ratio = |size: usize, f: fn(&Probe) -> f64| -> Vec<f64> {
        of(size, f)
            .iter()
            .zip(of(small, f))
            .map(|(a, b)| a / b)
            .collect()
    };
    let mut summary = Vec::new();
    for &size in &sizes {
        summary.push(Line::new(
            format!("scale: claim of 1 with {size} pending, p50 (ms)"),
            &of(size, |p| p.claim_p50_ms),
            3,
        ));
        summary.push(Line::new(
            format!("scale: claim of 1 with {size} pending, p99 (ms)"),
            &of(size, |p| p.claim_p99_ms),
            3,
        ));
        summary.push(Line::new(
            format!(
                "scale: claim + complete with {size} pending, {} clients × {} (runs/s)",
                settings.clients, settings.batch
            ),
            &of(size, |p| p.runs_per_sec),
            0,
        ));
    }
    for &size in sizes.iter().filter(|&&s| s != small) {
        let p50 = Line::new(
            format!("scale: ratio claim p50, {size} / {small} pending (same round)"),
            &ratio(size, |p| p.claim_p50_ms),
            2,
        );
        summary.push(if size == large {
            p50.target("≤ 1.3", |m| m <= 1.3)
        } else {
            p50
        });
        summary.push(Line::new(
            format!("scale: ratio throughput, {size} / {small} pending (same round)"),
            &ratio(size, |p| p.runs_per_sec),
            2,
        ));
    }
    if !burn_downs.is_empty() {
        summary.push(Line::new(
            format!("scale: burn-down of {large} runs (s)"),
            &burn_downs.iter().map(|b| b.seconds).collect::<Vec<_>>(),
            1,
        ));
        summary.push(Line::new(
            format!("scale: burn-down of {large} runs (runs/s)"),
            &burn_downs
                .iter()
                .map(|b| b.runs_per_sec)
                .collect::<Vec<_>>(),
            0,
        ));
    }

    println!("\nscale: claims as the backlog grows, and the burn-down of the largest");
    println!(
        "{rounds} rounds on PostgreSQL {server_version} (durability defaults), {cores} threads; \
         backlogs {sizes:?} written with generate_series ({}); probes of {} runs; \
         throughput and burn-down with {} clients claiming {}\n",
        fills
            .iter()
            .map(|(size, secs)| format!("{size} in {secs:.1} s"))
            .collect::<Vec<_>>()
            .join(", "),
        settings.probe,
        settings.clients,
        settings.batch,
    );
    crate::stats::print_lines(&summary);

    let base = machine();
    let mut rows = Vec::new();
    for (i, round) in probes.iter().enumerate() {
        let mut row = base.clone();
        row["scenario"] = json!("scale");
        row["round"] = json!(i + 1);
        row["config"] = json!({
            "sizes": sizes,
            "probe": settings.probe,
            "batch": settings.batch,
            "clients": settings.clients,
            "threads": cores,
            "postgres": server_version,
            "durable": true,
        });
        row["bySize"] = json!(
            round
                .iter()
                .map(|p| json!({
                    "pending": p.size,
                    "claimP50Ms": p.claim_p50_ms,
                    "claimP99Ms": p.claim_p99_ms,
                    "claimCompleteRunsPerSec": p.runs_per_sec,
                }))
                .collect::<Vec<_>>()
        );
        if let (Some(a), Some(b)) = (
            round.iter().find(|p| p.size == large),
            round.iter().find(|p| p.size == small),
        ) {
            row["ratioClaimP50LargestToSmallest"] = json!(a.claim_p50_ms / b.claim_p50_ms);
            row["ratioThroughputLargestToSmallest"] = json!(a.runs_per_sec / b.runs_per_sec);
        }
        if let Some(b) = burn_downs.get(i) {
            row["burnDown"] = json!({
                "runs": large,
                "fillSecs": b.fill_secs,
                "seconds": b.seconds,
                "runsPerSec": b.runs_per_sec,
            });
        }
        rows.push(row);
    }
    Ok(Outcome { rows, summary })
}

type Measured = (String, Vec<(usize, f64)>, Vec<Vec<Probe>>, Vec<BurnDown>);

async fn measure(
    cluster: &EmbeddedPostgres,
    rounds: usize,
    settings: &Settings,
) -> anyhow::Result<Measured> {
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&cluster.url("postgres"))
        .await
        .context("cannot connect to the private cluster")?;
    let server_version: String = sqlx::query_scalar("show server_version")
        .fetch_one(&admin)
        .await?;
    let mut sizes = settings.sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let connections = u32::try_from(settings.clients)?;

    // The backlogs.
    let mut pools = Vec::new();
    let mut fills = Vec::new();
    for &size in &sizes {
        let pool = fresh_database(cluster, &admin, &database(size), connections, &[]).await?;
        let took = fill(&pool, size, Utc::now()).await?;
        settle(&pool).await?;
        eprintln!(
            "backlog of {size} runs written in {:.1} s",
            took.as_secs_f64()
        );
        fills.push((size, took.as_secs_f64()));
        pools.push((size, pool));
    }

    let mut probes = Vec::new();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..pools.len()).collect();
        order.rotate_left(round % pools.len());
        let mut measured = Vec::new();
        for i in order {
            let (size, pool) = &pools[i];
            let (claims, completions) = (claims_pool(pool, 1), completions_pool(pool, 1));
            let (p50, p99) = claim_latency(&completions, &claims, settings.probe).await?;
            claims.close().await;
            completions.close().await;
            let (done, elapsed) =
                claim_throughput(pool, settings.clients, settings.batch, settings.probe).await?;
            let probe = Probe {
                size: *size,
                claim_p50_ms: p50,
                claim_p99_ms: p99,
                runs_per_sec: done as f64 / elapsed.as_secs_f64(),
            };
            eprintln!(
                "round {}, {size} pending: claim of 1 p50 {p50:.3} ms, p99 {p99:.3} ms; \
                 claim + complete {:.0} runs/s",
                round + 1,
                probe.runs_per_sec
            );
            // Back to `size` pending for the next round.
            let missing = usize::try_from(i64::try_from(*size)? - pending(pool).await?)?;
            if missing > 0 {
                fill(pool, missing, Utc::now()).await?;
            }
            sqlx::query("vacuum analyze runs").execute(pool).await?;
            measured.push(probe);
        }
        measured.sort_by_key(|p| p.size);
        probes.push(measured);
    }

    // The burn-downs of the largest backlog.
    let mut burn_downs = Vec::new();
    if let Some((size, pool)) = pools.last() {
        for round in 0..settings.burn_down_rounds {
            let mut fill_secs = 0.0;
            if round > 0 || !probes.is_empty() {
                sqlx::query("truncate runs cascade").execute(pool).await?;
                fill_secs = fill(pool, *size, Utc::now()).await?.as_secs_f64();
                settle(pool).await?;
            }
            let (loops, elapsed) = drain(pool, settings.clients, settings.batch).await?;
            ensure!(
                loops.runs == *size as u64,
                "the burn-down drained {} runs of {size}",
                loops.runs
            );
            let b = BurnDown {
                fill_secs,
                seconds: elapsed.as_secs_f64(),
                runs_per_sec: *size as f64 / elapsed.as_secs_f64(),
            };
            eprintln!(
                "burn-down {}: {size} runs in {:.1} s, {:.0} runs/s (backlog written in {fill_secs:.1} s)",
                round + 1,
                b.seconds,
                b.runs_per_sec
            );
            burn_downs.push(b);
        }
    }
    for (size, pool) in pools {
        drop_database(&admin, pool, &database(size)).await?;
    }
    admin.close().await;
    Ok((server_version, fills, probes, burn_downs))
}
