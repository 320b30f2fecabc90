//! The queue scenario: claim + complete throughput of no-op runs at several
//! numbers of workers, next to pgbench running the same claim and succeed
//! SQL on the same cluster, and idle enqueue-to-start latency through the
//! whole orchestrator; with `--peers`, graphile-worker and pg-boss doing
//! the same in the same rounds (`crate::peers`).
//!
//! Everything runs against one private PostgreSQL cluster with its
//! durability defaults (`fsync`, `synchronous_commit`, `full_page_writes`
//! on), started for the run.
//!
//! - **Throughput**, each round and each number of clients (1, 2, 4, 8 by
//!   default; ascending in odd rounds, descending in even ones): a fresh
//!   database is migrated, the task
//!   `noop` registered and `runs` no-op runs enqueued in bulk
//!   (`storage::runs::enqueue`, 10,000 per statement; timed and reported
//!   on its own). After `VACUUM ANALYZE` and a `CHECKPOINT`, `clients`
//!   tokio tasks loop `storage::runs::claim` (batch `batch`) then
//!   `storage::runs::succeed` of everything claimed, until the queue is
//!   empty: the functions the scheduler and the callback use, on the same
//!   kinds of pools (claims on `scheduler::claims_pool`, which does not
//!   wait for the WAL flush; completions, durable, on
//!   `scheduler::completions_pool`). Throughput is runs / elapsed. Then the same again on another
//!   fresh database with pgbench (`crate::pgbench`), `clients` clients
//!   running `runs / (batch × clients)` transactions each, so both drain
//!   the same queue. The order of the two alternates between rounds.
//! - **Peers**, each round, before PipeWeave's throughput in odd rounds and
//!   after it in even ones: graphile-worker (default and tuned) and pg-boss
//!   each drain the same number of no-op jobs in a fresh database of the
//!   same cluster (graphile-worker's default configuration a twentieth of
//!   them: it completes about 200 jobs/s, one at a time).
//! - **Floor**, each round after the drains: pgbench drains the same number
//!   of jobs (rounded to whole batches) from the smallest durable queue,
//!   at the most clients, in batches of 100 and of 500 (`crate::floor`):
//!   how far any queue that survives a worker crash could go here.
//! - **Latency**, each round: an orchestrator in this process (standalone,
//!   poll interval 1 s, so wake-ups come from LISTEN/NOTIFY) dispatches to
//!   a plain HTTP worker in this process, which notes the instant each
//!   dispatch arrives, answers 202 and sends the success callback. One run
//!   at a time: `POST /api/queue/task`, wait for the dispatch and the
//!   callback, pause, next. Latency is from sending the enqueue request to
//!   the dispatch arriving at the worker. With `--peers`, each round is
//!   followed by the same number of jobs through each peer, from calling
//!   its enqueue function to its handler starting.
//!
//! `--explain` drains once more, unmeasured, with `auto_explain` on and
//! prints the plans the prepared statements use midway through a drain.
//! `--db-setting name=value` sets a server setting on every database of the
//! run, to try a change (say `plan_cache_mode`) without editing code.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use pipeweave_orchestrator::config::LogLevel;
use pipeweave_orchestrator::embedded_postgres::{EmbeddedPostgres, Options};
use pipeweave_orchestrator::scheduler::{claims_pool, completions_pool};
use pipeweave_orchestrator::storage::{self, Runtime, runs};
use pipeweave_orchestrator::{Config, Mode, Shutdown};
use pipeweave_protocol::TaskDescriptor;
use pipeweave_protocol::wire::Dispatch;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::peers::{self, Mode as PeerMode, Peer, Peers};
use crate::stats::{Line, Outcome, machine, percentile, print_lines};
use crate::{floor, pgbench};

/// The task every run belongs to.
pub(crate) const TASK: &str = "noop";
/// Runs per enqueue statement.
const ENQUEUE_CHUNK: usize = 10_000;
/// Latency runs before the first measured one.
const LATENCY_WARMUP: usize = 200;

/// The scenario's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Runs enqueued and drained per throughput round (rounded up to a
    /// multiple of `batch × clients`).
    pub(crate) runs: usize,
    /// Runs per claim.
    pub(crate) batch: i64,
    /// Concurrent claim + complete loops, and pgbench clients: one drain
    /// per entry, each round.
    pub(crate) clients: Vec<usize>,
    /// Runs per latency round.
    pub(crate) latency_runs: usize,
    /// Pause between latency runs, so the queue is idle.
    pub(crate) pause: Duration,
    /// After the throughput rounds, drain once more with `auto_explain`
    /// on and print the plans of the claim and succeed statements.
    pub(crate) explain: bool,
    /// `name=value` server settings for every database of the run
    /// (`ALTER DATABASE … SET`), to try a change without editing code.
    pub(crate) db_settings: Vec<String>,
    /// The peers to interleave with PipeWeave, if any.
    pub(crate) peers: Option<Peers>,
}

impl Settings {
    /// The most clients of the run: the figure compared with the peers.
    fn top_clients(&self) -> usize {
        self.clients.iter().copied().max().unwrap_or(1)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The least common multiple of `values` (1 for none).
fn lcm(values: &[usize]) -> usize {
    values.iter().fold(
        1,
        |acc, &v| if v == 0 { acc } else { acc / gcd(acc, v) * v },
    )
}

/// Checks `name=value` settings and turns them into `name = 'value'`.
fn parse_db_settings(settings: &[String]) -> anyhow::Result<Vec<String>> {
    settings
        .iter()
        .map(|setting| {
            let (name, value) = setting
                .split_once('=')
                .with_context(|| format!("--db-setting {setting:?} is not name=value"))?;
            let name = name.trim();
            ensure!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
                "--db-setting {setting:?}: {name:?} is not a setting name"
            );
            Ok(format!("{name} = '{}'", value.trim().replace('\'', "''")))
        })
        .collect()
}

/// One drain of one round at one number of clients.
#[derive(Debug, Clone, Copy)]
struct Drained {
    /// Claim loops and pgbench clients.
    clients: usize,
    /// PipeWeave's claim + complete, runs/s.
    pipeweave: f64,
    /// pgbench with the same SQL, runs/s.
    pgbench: f64,
    /// Bulk enqueue, runs/s (both databases' enqueues).
    enqueue: f64,
    /// PipeWeave: average claim statement, ms.
    claim_ms: f64,
    /// PipeWeave: average succeed statement, ms.
    succeed_ms: f64,
    /// pgbench: average claim statement, ms.
    pgbench_claim_ms: f64,
    /// pgbench: average succeed statement, ms.
    pgbench_succeed_ms: f64,
}

/// One latency round.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Until the enqueue request's answer, p50.
    answered_p50: Duration,
}

/// A peer's drain in one round.
#[derive(Debug, Clone, Copy)]
struct PeerDrained {
    peer: Peer,
    jobs: usize,
    /// Jobs completed per second.
    rate: f64,
    /// Jobs enqueued per second (its own bulk call).
    enqueue: f64,
}

/// A peer's latency round, in ms.
#[derive(Debug, Clone, Copy)]
struct PeerLatency {
    peer: Peer,
    p50: f64,
    p99: f64,
    max: f64,
}

/// One drain of the durable queue floor (`crate::floor`) at the most
/// clients.
#[derive(Debug, Clone, Copy)]
struct Floor {
    batch: i64,
    /// Jobs locked and deleted per second.
    rate: f64,
}

/// Everything one round measured.
#[derive(Debug, Clone)]
struct Round {
    drained: Vec<Drained>,
    peers: Vec<PeerDrained>,
    floors: Vec<Floor>,
    latency: Latency,
    peer_latency: Vec<PeerLatency>,
}

impl Round {
    fn at(&self, clients: usize) -> Option<&Drained> {
        self.drained.iter().find(|d| d.clients == clients)
    }

    fn peer(&self, peer: Peer) -> Option<&PeerDrained> {
        self.peers.iter().find(|p| p.peer == peer)
    }

    fn peer_latency(&self, peer: Peer) -> Option<&PeerLatency> {
        self.peer_latency.iter().find(|p| p.peer == peer)
    }

    fn floor(&self, batch: i64) -> Option<&Floor> {
        self.floors.iter().find(|f| f.batch == batch)
    }
}

/// The queue scenario: returns the raw rows and the summary.
pub(crate) fn queue(rounds: usize, settings: &Settings) -> anyhow::Result<Outcome> {
    ensure!(settings.batch > 0, "--batch must be at least 1");
    ensure!(
        !settings.clients.is_empty() && settings.clients.iter().all(|&c| c > 0),
        "--clients must be at least 1"
    );
    // The only TLS provider compiled in; reqwest needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let per_round = settings.batch.unsigned_abs() as usize * lcm(&settings.clients);
    let settings = Settings {
        runs: settings.runs.max(1).div_ceil(per_round) * per_round,
        db_settings: parse_db_settings(&settings.db_settings)?,
        ..settings.clone()
    };
    eprintln!("starting a private PostgreSQL with its durability defaults…");
    let cluster = EmbeddedPostgres::start(&Options::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let measured = runtime.block_on(measure(&cluster, rounds, &settings));
    drop(runtime);
    cluster.stop();
    let (server_version, measured) = measured?;
    let summary = summary(&settings, &measured);
    print_table(rounds, &settings, cores, &server_version, &summary);

    let base = machine();
    let mut rows = Vec::new();
    let top = settings.top_clients();
    for (i, round) in measured.iter().enumerate() {
        let mut row = base.clone();
        row["scenario"] = json!("queue");
        row["round"] = json!(i + 1);
        row["config"] = json!({
            "runs": settings.runs,
            "batch": settings.batch,
            "clients": top,
            "clientCounts": settings.clients,
            "threads": cores,
            "latencyRuns": settings.latency_runs,
            "pauseMs": millis(settings.pause),
            "postgres": server_version,
            "durable": true,
            "dbSettings": settings.db_settings,
            "peers": settings.peers.as_ref().map(|p| p.versions.clone()),
        });
        // The top-level throughput fields are those at the most clients,
        // as in the rows of earlier runs (one client count).
        if let Some(d) = round.at(top) {
            row["claimCompleteRunsPerSec"] = json!(d.pipeweave);
            row["pgbenchRunsPerSec"] = json!(d.pgbench);
            row["ratioToPgbench"] = json!(d.pipeweave / d.pgbench);
            row["enqueueRunsPerSec"] = json!(d.enqueue);
            row["claimMs"] = json!(d.claim_ms);
            row["succeedMs"] = json!(d.succeed_ms);
            row["pgbenchClaimMs"] = json!(d.pgbench_claim_ms);
            row["pgbenchSucceedMs"] = json!(d.pgbench_succeed_ms);
        }
        row["byClients"] = json!(
            round
                .drained
                .iter()
                .map(|d| json!({
                    "clients": d.clients,
                    "claimCompleteRunsPerSec": d.pipeweave,
                    "pgbenchRunsPerSec": d.pgbench,
                    "ratioToPgbench": d.pipeweave / d.pgbench,
                    "enqueueRunsPerSec": d.enqueue,
                    "claimMs": d.claim_ms,
                    "succeedMs": d.succeed_ms,
                    "pgbenchClaimMs": d.pgbench_claim_ms,
                    "pgbenchSucceedMs": d.pgbench_succeed_ms,
                }))
                .collect::<Vec<_>>()
        );
        row["floor"] = json!(
            round
                .floors
                .iter()
                .map(|f| json!({
                    "batch": f.batch,
                    "clients": top,
                    "jobsPerSec": f.rate,
                }))
                .collect::<Vec<_>>()
        );
        let l = &round.latency;
        row["latencyP50Ms"] = json!(millis(l.p50));
        row["latencyP99Ms"] = json!(millis(l.p99));
        row["latencyMaxMs"] = json!(millis(l.max));
        row["enqueueAnsweredP50Ms"] = json!(millis(l.answered_p50));
        if !round.peers.is_empty() || !round.peer_latency.is_empty() {
            let mut peers = json!({});
            for p in &round.peers {
                peers[p.peer.key()] = json!({
                    "jobs": p.jobs,
                    "jobsPerSec": p.rate,
                    "enqueueJobsPerSec": p.enqueue,
                    "ratioPipeweaveToPeer": round.at(top).map(|d| d.pipeweave / p.rate),
                });
            }
            for p in &round.peer_latency {
                peers[p.peer.key()]["latencyP50Ms"] = json!(p.p50);
                peers[p.peer.key()]["latencyP99Ms"] = json!(p.p99);
                peers[p.peer.key()]["latencyMaxMs"] = json!(p.max);
            }
            row["peers"] = peers;
        }
        rows.push(row);
    }
    Ok(Outcome { rows, summary })
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn measure(
    cluster: &EmbeddedPostgres,
    rounds: usize,
    settings: &Settings,
) -> anyhow::Result<(String, Vec<Round>)> {
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&cluster.url("postgres"))
        .await
        .context("cannot connect to the private cluster")?;
    let server_version: String = sqlx::query_scalar("show server_version")
        .fetch_one(&admin)
        .await?;
    let script = pgbench::write_script("queue", &pgbench::script(settings.batch)?)?;
    let mut floor_scripts = Vec::new();
    for batch in floor::BATCHES {
        floor_scripts.push((
            batch,
            pgbench::write_script(&format!("floor-{batch}"), &floor::script(batch))?,
        ));
    }
    let result = async {
        let mut all_drained = Vec::new();
        let mut all_peers = Vec::new();
        let mut all_floors = Vec::new();
        for round in 0..rounds {
            let peers_first = round % 2 == 0;
            let mut peers = Vec::new();
            if peers_first {
                peers = peer_throughput(cluster, &admin, settings, round).await?;
            }
            let mut counts = settings.clients.clone();
            counts.sort_unstable();
            if round % 2 == 1 {
                counts.reverse();
            }
            let mut drained = Vec::new();
            for clients in counts {
                let d = throughput_round(cluster, &admin, &script, settings, clients, round).await?;
                eprintln!(
                    "throughput round {}, {clients} clients: PipeWeave {:.0} runs/s, pgbench {:.0} runs/s, \
                     ratio {:.2}; enqueue {:.0} runs/s; claim/succeed avg {:.2}/{:.2} ms \
                     (pgbench {:.2}/{:.2} ms)",
                    round + 1,
                    d.pipeweave,
                    d.pgbench,
                    d.pipeweave / d.pgbench,
                    d.enqueue,
                    d.claim_ms,
                    d.succeed_ms,
                    d.pgbench_claim_ms,
                    d.pgbench_succeed_ms,
                );
                drained.push(d);
            }
            drained.sort_by_key(|d| d.clients);
            if !peers_first {
                peers = peer_throughput(cluster, &admin, settings, round).await?;
            }
            let mut floors = Vec::new();
            let top = settings.top_clients();
            // Each batch size in one order in odd rounds, the other in even.
            let mut order = floor_scripts.clone();
            order.rotate_left(round % floor_scripts.len().max(1));
            for (batch, floor_script) in &order {
                let name = format!("bench_floor_{batch}_{}", round + 1);
                let jobs = settings.runs.div_ceil(*batch as usize * top) * *batch as usize * top;
                let rate =
                    floor::drain(cluster, &admin, &name, floor_script, jobs, *batch, top).await?;
                eprintln!(
                    "throughput round {}: minimal durable queue, batch {batch}, {top} clients: {rate:.0} jobs/s",
                    round + 1
                );
                floors.push(Floor {
                    batch: *batch,
                    rate,
                });
            }
            floors.sort_by_key(|f| f.batch);
            all_drained.push(drained);
            all_peers.push(peers);
            all_floors.push(floors);
        }
        if settings.explain {
            explain(cluster, &admin, settings).await?;
        }
        let latencies = latency_rounds(cluster, &admin, rounds, settings).await?;
        let measured: Vec<Round> = all_drained
            .into_iter()
            .zip(all_peers)
            .zip(all_floors)
            .zip(latencies)
            .map(|(((drained, peers), floors), (latency, peer_latency))| Round {
                drained,
                peers,
                floors,
                latency,
                peer_latency,
            })
            .collect();
        anyhow::Ok(measured)
    }
    .await;
    let _ = std::fs::remove_file(&script);
    for (_, floor_script) in &floor_scripts {
        let _ = std::fs::remove_file(floor_script);
    }
    admin.close().await;
    Ok((server_version, result?))
}

/// Drops and creates database `name`, empty (a peer or the minimal queue
/// creates its own schema; an orchestrator migrates its own).
pub(crate) async fn empty_database(admin: &PgPool, name: &str) -> anyhow::Result<()> {
    drop_empty_database(admin, name).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(admin)
        .await?;
    Ok(())
}

/// Drops database `name`, closing its connections.
pub(crate) async fn drop_empty_database(admin: &PgPool, name: &str) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "drop database if exists {name} with (force)"
    )))
    .execute(admin)
    .await?;
    Ok(())
}

/// Each peer drains `runs` no-op jobs (graphile-worker's defaults a
/// twentieth of them) in a database of its own; the order of the peers
/// turns with the round.
async fn peer_throughput(
    cluster: &EmbeddedPostgres,
    admin: &PgPool,
    settings: &Settings,
    round: usize,
) -> anyhow::Result<Vec<PeerDrained>> {
    let Some(installed) = &settings.peers else {
        return Ok(Vec::new());
    };
    let mut order = Peer::ALL.to_vec();
    order.rotate_left(round % Peer::ALL.len());
    let mut measured = Vec::new();
    for peer in order {
        let jobs = match peer {
            Peer::GraphileDefault => (settings.runs / 20).max(1_000),
            Peer::GraphileTuned | Peer::PgBoss => settings.runs,
        };
        let name = format!("bench_peer_{}_{}", peer.key().to_lowercase(), round + 1);
        empty_database(admin, &name).await?;
        let mode = PeerMode::Throughput {
            jobs,
            chunk: ENQUEUE_CHUNK,
            batch: settings.batch,
            clients: settings.top_clients(),
        };
        let url = cluster.url(&name);
        let figures = tokio::task::block_in_place(|| installed.measure(peer, &mode, &url));
        drop_empty_database(admin, &name).await?;
        let figures = figures?;
        let p = PeerDrained {
            peer,
            jobs,
            rate: peers::figure(&figures, "jobsPerSec")?,
            enqueue: peers::figure(&figures, "enqueueJobsPerSec")?,
        };
        eprintln!(
            "throughput round {}: {} {:.0} jobs/s ({jobs} jobs; enqueue {:.0} jobs/s)",
            round + 1,
            peer.name(),
            p.rate,
            p.enqueue
        );
        measured.push(p);
    }
    measured.sort_by_key(|p| Peer::ALL.iter().position(|&q| q == p.peer));
    Ok(measured)
}

/// Each peer's idle latency, `latency_runs` jobs after the same warm-up as
/// PipeWeave's, in a database of its own.
async fn peer_latency(
    cluster: &EmbeddedPostgres,
    admin: &PgPool,
    settings: &Settings,
    round: usize,
) -> anyhow::Result<Vec<PeerLatency>> {
    let Some(installed) = &settings.peers else {
        return Ok(Vec::new());
    };
    let mut order = Peer::ALL.to_vec();
    order.rotate_left(round % Peer::ALL.len());
    let mut measured = Vec::new();
    for peer in order {
        let name = format!("bench_peer_latency_{}", peer.key().to_lowercase());
        empty_database(admin, &name).await?;
        let mode = PeerMode::Latency {
            runs: settings.latency_runs,
            warmup: LATENCY_WARMUP,
            pause_ms: u64::try_from(settings.pause.as_millis())?,
        };
        let url = cluster.url(&name);
        let figures = tokio::task::block_in_place(|| installed.measure(peer, &mode, &url));
        drop_empty_database(admin, &name).await?;
        let figures = figures?;
        let p = PeerLatency {
            peer,
            p50: peers::figure(&figures, "latencyP50Ms")?,
            p99: peers::figure(&figures, "latencyP99Ms")?,
            max: peers::figure(&figures, "latencyMaxMs")?,
        };
        eprintln!(
            "latency round {}: {} enqueue-to-start p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            round + 1,
            peer.name(),
            p.p50,
            p.p99,
            p.max
        );
        measured.push(p);
    }
    measured.sort_by_key(|p| Peer::ALL.iter().position(|&q| q == p.peer));
    Ok(measured)
}

/// Drops and creates database `name`, migrates it and registers `noop`.
pub(crate) async fn fresh_database(
    cluster: &EmbeddedPostgres,
    admin: &PgPool,
    name: &str,
    connections: u32,
    db_settings: &[String],
) -> anyhow::Result<PgPool> {
    empty_database(admin, name).await?;
    for setting in db_settings {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "alter database {name} set {setting}"
        )))
        .execute(admin)
        .await
        .with_context(|| format!("cannot set {setting}"))?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .min_connections(connections)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&cluster.url(name))
        .await?;
    storage::migrate(&pool).await?;
    let now = Utc::now();
    let mut conn = pool.acquire().await?;
    storage::services::upsert(
        &mut conn,
        "bench",
        "1",
        Runtime::Http,
        Some("http://127.0.0.1:9"),
        None,
        now,
    )
    .await?;
    storage::tasks::upsert(
        &mut conn,
        &storage::tasks::Upsert {
            id: TASK,
            service_id: "bench",
            code_hash: "n1",
            code_version: 1,
            descriptor: serde_json::to_value(TaskDescriptor::new(TASK))?,
            priority: 100,
            concurrency: 0,
            timeout_ms: 300_000,
            heartbeat_interval_ms: 60_000,
        },
        now,
    )
    .await?;
    Ok(pool)
}

/// Closes `pool` and drops its database `name`.
pub(crate) async fn drop_database(admin: &PgPool, pool: PgPool, name: &str) -> anyhow::Result<()> {
    pool.close().await;
    drop_empty_database(admin, name).await
}

/// Enqueues `n` no-op runs in bulk; returns the time it took.
pub(crate) async fn enqueue(pool: &PgPool, n: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut left = n;
    while left > 0 {
        let now = Utc::now();
        let chunk: Vec<runs::NewRun> = (0..left.min(ENQUEUE_CHUNK))
            .map(|_| runs::NewRun {
                id: Uuid::now_v7(),
                task_id: TASK.to_owned(),
                priority: Some(100),
                scheduled_at: now,
                input: json!({}),
                input_path: None,
                backend_id: None,
                metadata: None,
                idempotency_key: None,
            })
            .collect();
        runs::enqueue(pool, &chunk, now, 86_400).await?;
        left -= chunk.len();
    }
    Ok(started.elapsed())
}

/// `VACUUM ANALYZE` and `CHECKPOINT`, so every drain starts alike.
pub(crate) async fn settle(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("vacuum analyze").execute(pool).await?;
    sqlx::query("checkpoint").execute(pool).await?;
    Ok(())
}

async fn succeeded(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select count(*) from runs where state = 'succeeded'")
            .fetch_one(pool)
            .await?,
    )
}

/// What the claim + complete loops did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Loops {
    pub(crate) runs: u64,
    claims: u64,
    claim_time: Duration,
    succeeds: u64,
    succeed_time: Duration,
}

/// `clients` loops of claim `batch` → succeed all, until the queue is
/// empty.
pub(crate) async fn drain(
    pool: &PgPool,
    clients: usize,
    batch: i64,
) -> anyhow::Result<(Loops, Duration)> {
    let started = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    // Claims and completions go through the orchestrator's own kinds of
    // pool: claims do not wait for the WAL flush, completions do, and both
    // use the fixed-plan settings.
    let connections = u32::try_from(clients).unwrap_or(u32::MAX);
    let claims = claims_pool(pool, connections);
    let completions = completions_pool(pool, connections);
    for client in 0..clients {
        let (completions, claims) = (completions.clone(), claims.clone());
        loops.spawn(async move {
            let task_ids = vec![TASK.to_owned()];
            let target = format!("bench-{client}");
            let result = json!({ "output": {} });
            let mut done = Loops::default();
            loop {
                let t = Instant::now();
                let claimed = runs::claim(
                    &claims,
                    &task_ids,
                    batch,
                    Utc::now(),
                    &target,
                    pgbench::TARGET_CAPACITY,
                )
                .await?;
                done.claim_time += t.elapsed();
                done.claims += 1;
                if claimed.is_empty() {
                    break;
                }
                let successes = successes(&claimed, &result);
                let t = Instant::now();
                let finished = runs::succeed(&completions, &successes, Utc::now()).await?;
                done.succeed_time += t.elapsed();
                done.succeeds += 1;
                ensure!(
                    finished.len() == claimed.len(),
                    "{} of {} claimed runs succeeded",
                    finished.len(),
                    claimed.len()
                );
                done.runs += finished.len() as u64;
            }
            anyhow::Ok(done)
        });
    }
    let mut total = Loops::default();
    while let Some(joined) = loops.join_next().await {
        let done = joined??;
        total.runs += done.runs;
        total.claims += done.claims;
        total.claim_time += done.claim_time;
        total.succeeds += done.succeeds;
        total.succeed_time += done.succeed_time;
    }
    Ok((total, started.elapsed()))
}

fn average_ms(total: Duration, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        millis(total) / n as f64
    }
}

async fn throughput_round(
    cluster: &EmbeddedPostgres,
    admin: &PgPool,
    script: &Path,
    settings: &Settings,
    clients: usize,
    round: usize,
) -> anyhow::Result<Drained> {
    let connections = u32::try_from(clients)?;
    let n = settings.runs;
    let mut enqueue_time = Duration::ZERO;
    let mut result = Drained {
        clients,
        pipeweave: 0.0,
        pgbench: 0.0,
        enqueue: 0.0,
        claim_ms: 0.0,
        succeed_ms: 0.0,
        pgbench_claim_ms: 0.0,
        pgbench_succeed_ms: 0.0,
    };
    // Alternate which goes first, so a drift in the machine's load does
    // not always favour the same side.
    let pgbench_first = round % 2 == 1;
    for side in 0..2 {
        if (side == 0) != pgbench_first {
            let name = format!("bench_pipeweave_{}_{clients}", round + 1);
            let pool =
                fresh_database(cluster, admin, &name, connections, &settings.db_settings).await?;
            enqueue_time += enqueue(&pool, n).await?;
            settle(&pool).await?;
            let (loops, elapsed) = drain(&pool, clients, settings.batch).await?;
            let count = succeeded(&pool).await?;
            ensure!(
                loops.runs == n as u64 && count == n as i64,
                "PipeWeave drained {} runs ({count} succeeded) of {n}",
                loops.runs
            );
            result.pipeweave = n as f64 / elapsed.as_secs_f64();
            result.claim_ms = average_ms(loops.claim_time, loops.claims);
            result.succeed_ms = average_ms(loops.succeed_time, loops.succeeds);
            drop_database(admin, pool, &name).await?;
        } else {
            let name = format!("bench_pgbench_{}_{clients}", round + 1);
            let pool = fresh_database(cluster, admin, &name, 2, &settings.db_settings).await?;
            enqueue_time += enqueue(&pool, n).await?;
            settle(&pool).await?;
            let transactions = (n / (settings.batch.unsigned_abs() as usize * clients)) as u64;
            let run = pgbench::Run {
                bindir: cluster.bindir(),
                port: cluster.port(),
                database: &name,
                script,
                clients,
                transactions,
            };
            let outcome = tokio::task::block_in_place(|| pgbench::run(&run))?;
            let count = succeeded(&pool).await?;
            if count != n as i64 {
                bail!(
                    "pgbench completed {count} runs of {n}; its report:\n{}",
                    outcome.report
                );
            }
            result.pgbench = count as f64 / outcome.seconds();
            result.pgbench_claim_ms = outcome.statement_ms.first().copied().unwrap_or(0.0);
            result.pgbench_succeed_ms = outcome.statement_ms.get(1).copied().unwrap_or(0.0);
            drop_database(admin, pool, &name).await?;
        }
    }
    result.enqueue = 2.0 * n as f64 / enqueue_time.as_secs_f64();
    Ok(result)
}

/// One more PipeWeave drain, unmeasured, with `auto_explain` logging a
/// sample of the statements with their actual row counts and timings;
/// prints the last logged plan of the claim and of the succeed statement.
/// These are the plans the prepared statements really use midway through
/// a drain, which `EXPLAIN` on a fresh queue does not show.
async fn explain(
    cluster: &EmbeddedPostgres,
    admin: &PgPool,
    settings: &Settings,
) -> anyhow::Result<()> {
    const NAME: &str = "bench_explain";
    let setup = fresh_database(cluster, admin, NAME, 1, &settings.db_settings).await?;
    enqueue(&setup, settings.runs).await?;
    settle(&setup).await?;
    setup.close().await;
    for setting in [
        "session_preload_libraries = 'auto_explain'",
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_analyze = on",
        "auto_explain.log_buffers = on",
        "auto_explain.log_triggers = on",
        "auto_explain.sample_rate = 0.02",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "alter database {NAME} set {setting}"
        )))
        .execute(admin)
        .await?;
    }
    let data: String = sqlx::query_scalar("show data_directory")
        .fetch_one(admin)
        .await?;
    // The embedded cluster logs to postgres.log next to its data folder.
    let log_path = Path::new(&data)
        .parent()
        .context("the data directory has no parent")?
        .join("postgres.log");
    let skip = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(settings.top_clients())?)
        .connect(&cluster.url(NAME))
        .await?;
    let (loops, elapsed) = drain(&pool, settings.top_clients(), settings.batch).await?;
    eprintln!(
        "explain drain (auto_explain on, not a measurement): {} runs in {elapsed:.1?}",
        loops.runs
    );
    drop_database(admin, pool, NAME).await?;
    let log =
        std::fs::read(&log_path).with_context(|| format!("cannot read {}", log_path.display()))?;
    let log = String::from_utf8_lossy(log.get(usize::try_from(skip)?..).unwrap_or_default());
    // A plan is a `LOG:  duration: … plan:` line and the lines after it
    // that start with a tab.
    let mut plans: Vec<String> = Vec::new();
    for line in log.lines() {
        if line.contains("LOG:  duration:") && line.ends_with("plan:") {
            plans.push(format!("{line}\n"));
        } else if let (Some(plan), true) = (plans.last_mut(), line.starts_with('\t')) {
            plan.push_str(line);
            plan.push('\n');
        }
    }
    for (name, marker) in [
        (
            "claim (queries/claim.sql)",
            "with limited as materialized (",
        ),
        ("succeed (queries/succeed.sql)", "with reported as ("),
    ] {
        let matching: Vec<&String> = plans.iter().filter(|p| p.contains(marker)).collect();
        println!("\n{name}: {} plans logged; the last one:\n", matching.len());
        match matching.last() {
            Some(plan) => println!("{plan}"),
            None => println!("(none)"),
        }
    }
    Ok(())
}

/// What the worker saw of one dispatch.
#[derive(Debug)]
struct Arrival {
    run_id: String,
    at: Instant,
    /// The callback's status, or why it failed.
    callback: Result<u16, String>,
}

#[derive(Debug, Clone)]
struct Worker {
    http: reqwest::Client,
    arrivals: mpsc::UnboundedSender<Arrival>,
}

/// `POST /tasks/noop`: note the instant, answer 202, call back.
async fn dispatched(
    State(worker): State<Worker>,
    axum::Json(dispatch): axum::Json<Dispatch>,
) -> StatusCode {
    let at = Instant::now();
    tokio::spawn(async move {
        let body = json!({
            "status": "success",
            "attempt": dispatch.attempt,
            "attemptToken": dispatch.attempt_token,
            "output": {},
        });
        let callback = match worker
            .http
            .post(&dispatch.callback_url)
            .json(&body)
            .send()
            .await
        {
            Ok(response) => Ok(response.status().as_u16()),
            Err(error) => Err(error.to_string()),
        };
        let _ = worker.arrivals.send(Arrival {
            run_id: dispatch.run_id,
            at,
            callback,
        });
    });
    StatusCode::ACCEPTED
}

async fn latency_rounds(
    cluster: &EmbeddedPostgres,
    admin: &PgPool,
    rounds: usize,
    settings: &Settings,
) -> anyhow::Result<Vec<(Latency, Vec<PeerLatency>)>> {
    const NAME: &str = "bench_latency";
    let setup = fresh_database(cluster, admin, NAME, 1, &settings.db_settings).await?;
    setup.close().await;
    let pool = pipeweave_orchestrator::connect(&cluster.url(NAME)).await?;

    // The worker.
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()?;
    let worker = Worker {
        http: http.clone(),
        arrivals: arrivals_tx,
    };
    let worker_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let worker_address = worker_listener.local_addr()?;
    let app = axum::Router::new()
        .route("/tasks/{task_id}", axum::routing::post(dispatched))
        .with_state(worker);
    let (trigger, shutdown) = Shutdown::new();
    let worker_stop = shutdown.clone();
    let worker_server = tokio::spawn(async move {
        axum::serve(worker_listener, app)
            .with_graceful_shutdown(async move { worker_stop.wait().await })
            .await
    });

    // The orchestrator.
    let storage_dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let api = format!("http://{address}");
    let config = Config {
        database_url: cluster.url(NAME),
        listen: address,
        public_url: api.clone(),
        secret_key: [7; 32],
        mode: Mode::Standalone,
        max_concurrency: 16,
        poll_interval: Duration::from_millis(1000),
        max_body_bytes: 1 << 20,
        max_module_bytes: 8 << 20,
        log_level: LogLevel::Minimal,
        dlq_retention: Duration::from_secs(30 * 86_400),
        idempotency_ttl: Duration::from_secs(86_400),
        api_key: None,
        storage: pipeweave_storage::Backends::local_default(storage_dir.path().to_string_lossy()),
    };
    let state = pipeweave_orchestrator::app_state(pool.clone(), config)?;
    let orchestrator = tokio::spawn(pipeweave_orchestrator::serve(
        listener,
        state,
        shutdown.clone(),
    ));

    let measured = async {
        let registration = json!({
            "serviceId": "bench",
            "baseUrl": format!("http://{worker_address}"),
            "capacity": 64,
            "tasks": [{ "id": TASK, "codeHash": "n1" }],
        });
        let response = http
            .post(format!("{api}/api/register"))
            .json(&registration)
            .send()
            .await?;
        let status = response.status();
        ensure!(
            status.is_success(),
            "registration answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
        // Let the LISTEN connection come up before the first run.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut one = async || -> anyhow::Result<(Duration, Duration)> {
            let started = Instant::now();
            let response = http
                .post(format!("{api}/api/queue/task"))
                .json(&json!({ "taskId": TASK, "input": {} }))
                .send()
                .await?;
            let answered = started.elapsed();
            let status = response.status();
            let body: Value = response.json().await?;
            ensure!(status == 201, "enqueue answered {status}: {body}");
            let run_id = body["runId"].as_str().context("no runId in the answer")?;
            let arrival = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
                .await
                .context("no dispatch within 10 s")?
                .context("the worker stopped")?;
            ensure!(
                arrival.run_id == run_id,
                "dispatch of {} while waiting for {run_id}",
                arrival.run_id
            );
            match arrival.callback {
                Ok(200) => {}
                Ok(status) => bail!("the callback answered {status}"),
                Err(error) => bail!("the callback failed: {error}"),
            }
            tokio::time::sleep(settings.pause).await;
            Ok((arrival.at.saturating_duration_since(started), answered))
        };
        for _ in 0..LATENCY_WARMUP {
            one().await?;
        }
        let mut latencies = Vec::new();
        for round in 0..rounds {
            let mut samples = Vec::with_capacity(settings.latency_runs);
            let mut answered = Vec::with_capacity(settings.latency_runs);
            for _ in 0..settings.latency_runs {
                let (sample, answer) = one().await?;
                samples.push(sample);
                answered.push(answer);
            }
            samples.sort_unstable();
            answered.sort_unstable();
            let latency = Latency {
                p50: percentile(&samples, 0.50),
                p99: percentile(&samples, 0.99),
                max: percentile(&samples, 1.0),
                answered_p50: percentile(&answered, 0.50),
            };
            eprintln!(
                "latency round {}: enqueue-to-start p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
                 (enqueue answered p50 {:.2} ms)",
                round + 1,
                millis(latency.p50),
                millis(latency.p99),
                millis(latency.max),
                millis(latency.answered_p50),
            );
            let peers = peer_latency(cluster, admin, settings, round).await?;
            latencies.push((latency, peers));
        }
        anyhow::Ok(latencies)
    }
    .await;

    trigger.trigger();
    let _ = orchestrator.await;
    let _ = worker_server.await;
    pool.close().await;
    measured
}

/// The scenario's table: one line per figure, ratios taken within rounds.
fn summary(settings: &Settings, rounds: &[Round]) -> Vec<Line> {
    let top = settings.top_clients();
    let mut clients = settings.clients.clone();
    clients.sort_unstable();
    clients.dedup();
    let each = |f: &dyn Fn(&Round) -> Option<f64>| rounds.iter().filter_map(f).collect::<Vec<_>>();
    let mut lines = Vec::new();
    for &c in &clients {
        let pipeweave = Line::new(
            format!("PipeWeave claim + complete, {c} clients (runs/s)"),
            &each(&|r| r.at(c).map(|d| d.pipeweave)),
            0,
        );
        lines.push(if c == top {
            pipeweave.target("≥ 40,000", |m| m >= 40_000.0)
        } else {
            pipeweave
        });
        lines.push(Line::new(
            format!("pgbench, same SQL, {c} clients (runs/s)"),
            &each(&|r| r.at(c).map(|d| d.pgbench)),
            0,
        ));
        lines.push(
            Line::new(
                format!("ratio PipeWeave / pgbench, {c} clients (same round)"),
                &each(&|r| r.at(c).map(|d| d.pipeweave / d.pgbench)),
                2,
            )
            .target("≥ 0.60", |m| m >= 0.60),
        );
    }
    for peer in Peer::ALL {
        let rates = each(&|r| r.peer(peer).map(|p| p.rate));
        if rates.is_empty() {
            continue;
        }
        lines.push(Line::new(format!("{} (jobs/s)", peer.name()), &rates, 0));
        let ratio = Line::new(
            format!(
                "ratio PipeWeave ({top} clients) / {} (same round)",
                peer.name()
            ),
            &each(&|r| Some(r.at(top)?.pipeweave / r.peer(peer)?.rate)),
            2,
        );
        lines.push(if peer == Peer::GraphileTuned {
            ratio.target("≥ 2", |m| m >= 2.0)
        } else {
            ratio
        });
    }
    for batch in floor::BATCHES {
        let rates = each(&|r| r.floor(batch).map(|f| f.rate));
        if rates.is_empty() {
            continue;
        }
        lines.push(Line::new(
            format!("minimal durable queue (lock + delete), batch {batch}, {top} clients (jobs/s)"),
            &rates,
            0,
        ));
        if batch == settings.batch {
            lines.push(Line::new(
                format!("ratio PipeWeave / minimal queue, batch {batch} (same round)"),
                &each(&|r| Some(r.at(top)?.pipeweave / r.floor(batch)?.rate)),
                2,
            ));
        }
        if !each(&|r| r.peer(Peer::GraphileTuned).map(|p| p.rate)).is_empty() {
            lines.push(Line::new(
                format!(
                    "ratio minimal queue, batch {batch} / {} (same round)",
                    Peer::GraphileTuned.name()
                ),
                &each(&|r| Some(r.floor(batch)?.rate / r.peer(Peer::GraphileTuned)?.rate)),
                2,
            ));
        }
    }
    let ms = |f: fn(&Latency) -> Duration| each(&|r| Some(millis(f(&r.latency))));
    lines.push(
        Line::new("idle enqueue-to-start p50 (ms)", &ms(|l| l.p50), 2)
            .target("≤ 2", |m| m <= 2.0),
    );
    lines.push(
        Line::new("idle enqueue-to-start p99 (ms)", &ms(|l| l.p99), 2)
            .target("≤ 8", |m| m <= 8.0),
    );
    lines.push(Line::new(
        "idle enqueue-to-start max (ms)",
        &ms(|l| l.max),
        2,
    ));
    lines.push(Line::new(
        "enqueue request answered p50 (ms)",
        &ms(|l| l.answered_p50),
        2,
    ));
    for peer in Peer::ALL {
        let p50 = each(&|r| r.peer_latency(peer).map(|p| p.p50));
        if p50.is_empty() {
            continue;
        }
        lines.push(Line::new(
            format!("{} enqueue-to-start p50 (ms)", peer.name()),
            &p50,
            2,
        ));
        lines.push(Line::new(
            format!("{} enqueue-to-start p99 (ms)", peer.name()),
            &each(&|r| r.peer_latency(peer).map(|p| p.p99)),
            2,
        ));
        let ratio = Line::new(
            format!("ratio PipeWeave / {} p50 (same round)", peer.name()),
            &each(&|r| Some(millis(r.latency.p50) / r.peer_latency(peer)?.p50)),
            2,
        );
        lines.push(
            if matches!(peer, Peer::GraphileDefault | Peer::GraphileTuned) {
                ratio.target("< 1", |m| m < 1.0)
            } else {
                ratio
            },
        );
        lines.push(Line::new(
            format!("ratio PipeWeave / {} p99 (same round)", peer.name()),
            &each(&|r| Some(millis(r.latency.p99) / r.peer_latency(peer)?.p99)),
            2,
        ));
    }
    lines.push(Line::new(
        format!("PipeWeave bulk enqueue, {ENQUEUE_CHUNK} per statement (runs/s)"),
        &each(&|r| r.at(top).map(|d| d.enqueue)),
        0,
    ));
    for peer in Peer::ALL {
        let rates = each(&|r| r.peer(peer).map(|p| p.enqueue));
        if !rates.is_empty() {
            lines.push(Line::new(
                format!(
                    "{} bulk enqueue, {ENQUEUE_CHUNK} per call (jobs/s)",
                    peer.name()
                ),
                &rates,
                0,
            ));
        }
    }
    lines.push(Line::new(
        format!("PipeWeave claim statement, {top} clients (ms)"),
        &each(&|r| r.at(top).map(|d| d.claim_ms)),
        2,
    ));
    lines.push(Line::new(
        format!("PipeWeave succeed statement, {top} clients (ms)"),
        &each(&|r| r.at(top).map(|d| d.succeed_ms)),
        2,
    ));
    lines.push(Line::new(
        format!("pgbench claim statement, {top} clients (ms)"),
        &each(&|r| r.at(top).map(|d| d.pgbench_claim_ms)),
        2,
    ));
    lines.push(Line::new(
        format!("pgbench succeed statement, {top} clients (ms)"),
        &each(&|r| r.at(top).map(|d| d.pgbench_succeed_ms)),
        2,
    ));
    lines
}

fn print_table(
    rounds: usize,
    settings: &Settings,
    cores: usize,
    server_version: &str,
    lines: &[Line],
) {
    println!("\nqueue: claim + complete of no-op runs, and idle enqueue-to-start latency");
    println!(
        "{rounds} rounds on PostgreSQL {server_version} (durability defaults), {cores} threads; \
         throughput rounds drain {} runs in claims of {} with {:?} clients; \
         latency rounds of {} runs one at a time, {} ms apart",
        settings.runs,
        settings.batch,
        settings.clients,
        settings.latency_runs,
        settings.pause.as_millis(),
    );
    if let Some(peers) = &settings.peers {
        println!(
            "peers ({}) in the same rounds, each in a fresh database of the same cluster",
            peers.versions.join(", ")
        );
    }
    if !settings.db_settings.is_empty() {
        println!("database settings: {}", settings.db_settings.join(", "));
    }
    println!();
    print_lines(lines);
}

/// The successes that complete `claimed` runs with `result`, as a callback
/// would.
pub(crate) fn successes(
    claimed: &[runs::Claimed],
    result: &serde_json::Value,
) -> Vec<runs::Success> {
    claimed
        .iter()
        .map(|run| runs::Success {
            logs_path: None,
            run_id: run.id,
            attempt: run.attempt,
            attempt_token: run.attempt_token,
            result: result.clone(),
        })
        .collect()
}
