//! The end-to-end scenario: no-op runs through real processes, as in
//! production, next to graphile-worker (tuned) doing the same number of
//! no-op jobs on the same cluster in the same round.
//!
//! One private PostgreSQL (durability defaults) and two pipelines of
//! processes, each with a database of its own, since both register a task
//! called `noop`:
//!
//! - **WASM**: the release `pipeweave` binary as `pipeweave orchestrator`
//!   and `pipeweave host` (its default capacity, one attempt per core,
//!   unless `--host-capacity`; no prefetch unless `--host-prefetch`), with
//!   `examples/noop` registered by
//!   `pipeweave register`. Each run goes orchestrator → host over HTTP →
//!   sandbox → callback.
//! - **Plain HTTP worker**: another `pipeweave orchestrator` and the Python
//!   example worker (`examples/python-worker`, its task `noop`), dispatched
//!   to with the orchestrator's default `MAX_CONCURRENCY`.
//!
//! Everything runs with its defaults; the processes' logs go to files in a
//! scratch directory. The host also logs `pipeweave_host::server` at debug
//! level, for its `dispatch accepted` lines (below).
//!
//! Each round, in an order that turns with the round:
//!
//! - **Throughput**: `runs` no-op runs enqueued with `POST /api/queue/batch`
//!   (1,000 per request) while the processes run; the figure is `runs` over
//!   the time from the first enqueue request to the first look (every
//!   20 ms, on the database's partial indexes) that finds none queued or
//!   running. Any run that ended dead fails the scenario. The table is
//!   truncated before each drain, untimed.
//! - **graphile-worker tuned**: the same number of jobs
//!   (`crate::peers`), enqueued in bulk and drained, in a fresh database.
//! - **CPU per run**: around each drain, the CPU time of the cluster's
//!   processes (the postmaster, its living backends and the ones it has
//!   reaped), of the orchestrator, of the host or worker, and of this
//!   process (the client that enqueues and watches), read from `/proc` in
//!   ticks of 10 ms, divided by the runs. For graphile-worker: the cluster
//!   and its Node process over the whole measurement (start-up, bulk
//!   enqueue and drain), so its figures include work that PipeWeave's
//!   drain-only window leaves out.
//! - **Latency** (WASM only): `latency_runs` runs one at a time, `pause`
//!   apart, after a warm-up; from just before the enqueue request to the
//!   host's `dispatch accepted` log line for that run (both wall-clock
//!   times on the same machine; the host writes the line when the dispatch
//!   arrives, right before it starts the sandbox, whose cost the sandbox
//!   scenario measures). The next run starts once the host has logged the
//!   callback as delivered.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, Utc};
use pipeweave_orchestrator::embedded_postgres::{EmbeddedPostgres, Options};
use pipeweave_testkit::process::{CPU_TICK_MS, CpuTime, Server, log_field};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::data::{SECRET, build_pipeweave};
use crate::peers::{self, Mode as PeerMode, Peer, Peers};
use crate::queue::{drop_empty_database, empty_database};
use crate::stats::{Line, Outcome, machine, percentile, print_lines};

/// Runs per `POST /api/queue/batch`.
const BATCH_REQUEST: usize = 1_000;
/// Runs through each pipeline before anything is measured.
const WARM_UP_RUNS: usize = 20;
/// Latency runs before the first measured one.
const LATENCY_WARMUP: usize = 20;
/// The host's log filter: its defaults, plus the dispatch lines.
const HOST_LOG: &str = "warn,pipeweave=info,pipeweave_host=info,pipeweave_host::server=debug";

/// The scenario's settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Runs per throughput measurement, each pipeline and the peer.
    pub(crate) runs: usize,
    /// Runs per latency round.
    pub(crate) latency_runs: usize,
    /// Pause between latency runs.
    pub(crate) pause: Duration,
    /// `pipeweave host --capacity`; its default when `None`.
    pub(crate) host_capacity: Option<usize>,
    /// `pipeweave host --prefetch`.
    pub(crate) host_prefetch: usize,
    /// graphile-worker tuned in the same rounds, if installed.
    pub(crate) peers: Option<Peers>,
    /// Load `pg_stat_statements` and report, for each drain, the
    /// statements that took most of PostgreSQL's time.
    pub(crate) statements: bool,
}

/// One round.
#[derive(Debug, Clone)]
struct Round {
    wasm: f64,
    python: f64,
    /// With `--statements`: where PostgreSQL's time went in each drain.
    wasm_statements: Vec<StatementCost>,
    python_statements: Vec<StatementCost>,
    wasm_cpu: CpuPerRun,
    python_cpu: CpuPerRun,
    graphile_tuned: Option<f64>,
    graphile_cpu: Option<CpuPerRun>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// One orchestrator with its database.
struct Pipeline {
    orchestrator: Server,
    pool: PgPool,
}

/// Starts `program args…` with its stderr appended to `log`.
fn logged(program: &Path, args: &[&str], log: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("exec \"$0\" \"$@\" 2>>\"$PIPEWEAVE_BENCH_LOG\"")
        .arg(program)
        .args(args)
        .env("PIPEWEAVE_BENCH_LOG", log);
    command
}

/// The end-to-end scenario: returns the raw rows and the summary.
pub(crate) fn e2e(rounds: usize, settings: &Settings) -> anyhow::Result<Outcome> {
    ensure!(settings.runs > 0, "--runs must be at least 1");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let has_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        pipeweave_orchestrator::embedded_postgres::install_debian_package("python3")
            .map_err(|why| anyhow::anyhow!("the plain HTTP worker needs python3: {why}"))?;
    }
    eprintln!("building pipeweave (release) and the noop guest…");
    let pipeweave = build_pipeweave()?;
    let guest = pipeweave_testkit::guest("noop");
    eprintln!("starting PostgreSQL…");
    let mut options = Options::default();
    if settings.statements {
        options.settings = vec![
            (
                "shared_preload_libraries".into(),
                "pg_stat_statements".into(),
            ),
            // Statements inside others too, such as foreign-key checks.
            ("pg_stat_statements.track".into(), "all".into()),
        ];
    }
    let cluster = EmbeddedPostgres::start(&options)?;
    let scratch = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()?;
    let measured = runtime.block_on(run(
        &pipeweave,
        &guest,
        &cluster,
        scratch.path(),
        rounds,
        settings,
    ));
    drop(runtime);
    cluster.stop();
    let measured = measured?;

    let each =
        |f: &dyn Fn(&Round) -> Option<f64>| measured.iter().filter_map(f).collect::<Vec<_>>();
    let capacity = settings
        .host_capacity
        .map_or_else(|| format!("{cores} (default)"), |c| c.to_string());
    let capacity = match settings.host_prefetch {
        0 => capacity,
        prefetch => format!("{capacity}, prefetch {prefetch}"),
    };
    let mut summary = vec![
        Line::new(
            format!(
                "e2e: no-op WASM run, orchestrator → host (capacity {capacity}) → callback (runs/s)"
            ),
            &each(&|r| Some(r.wasm)),
            0,
        ),
        Line::new(
            "e2e: no-op run through the Python plain HTTP worker (runs/s)",
            &each(&|r| Some(r.python)),
            0,
        ),
    ];
    type Figure = fn(&Round) -> f64;
    let cpu_lines: [(&str, Figure); 6] = [
        ("WASM run, PostgreSQL", |r| r.wasm_cpu.postgres),
        ("WASM run, orchestrator", |r| r.wasm_cpu.orchestrator),
        ("WASM run, host", |r| r.wasm_cpu.worker),
        ("Python worker run, PostgreSQL", |r| r.python_cpu.postgres),
        ("Python worker run, orchestrator", |r| {
            r.python_cpu.orchestrator
        }),
        ("Python worker run, worker", |r| r.python_cpu.worker),
    ];
    for (figure, cpu) in cpu_lines {
        summary.push(Line::new(
            format!("e2e: CPU per {figure} (µs)"),
            &each(&|r| Some(cpu(r))),
            0,
        ));
    }
    let graphile = each(&|r| r.graphile_tuned);
    if !graphile.is_empty() {
        summary.push(Line::new(
            "e2e: graphile-worker tuned, same jobs (jobs/s)",
            &graphile,
            0,
        ));
        summary.push(
            Line::new(
                "e2e: ratio WASM / graphile-worker tuned (same round)",
                &each(&|r| Some(r.wasm / r.graphile_tuned?)),
                3,
            )
            .target("≥ 1", |m| m >= 1.0),
        );
        summary.push(Line::new(
            "e2e: ratio Python worker / graphile-worker tuned (same round)",
            &each(&|r| Some(r.python / r.graphile_tuned?)),
            3,
        ));
        summary.push(Line::new(
            "e2e: CPU per graphile-worker tuned job, PostgreSQL (µs)",
            &each(&|r| Some(r.graphile_cpu?.postgres)),
            0,
        ));
        summary.push(Line::new(
            "e2e: CPU per graphile-worker tuned job, Node worker (µs)",
            &each(&|r| Some(r.graphile_cpu?.worker)),
            0,
        ));
    }
    summary.push(Line::new(
        "e2e: idle enqueue → host accepts the dispatch, p50 (ms)",
        &each(&|r| Some(r.p50_ms)),
        2,
    ));
    summary.push(Line::new(
        "e2e: idle enqueue → host accepts the dispatch, p99 (ms)",
        &each(&|r| Some(r.p99_ms)),
        2,
    ));
    summary.push(Line::new(
        "e2e: idle enqueue → host accepts the dispatch, max (ms)",
        &each(&|r| Some(r.max_ms)),
        2,
    ));

    println!("\ne2e: no-op runs through real orchestrator, host and worker processes");
    println!(
        "{rounds} rounds, {cores} cores; {} runs per throughput measurement, enqueued {BATCH_REQUEST} \
         per request; latency rounds of {} runs one at a time, {} ms apart\n",
        settings.runs,
        settings.latency_runs,
        settings.pause.as_millis()
    );
    print_lines(&summary);

    let base = machine();
    let mut rows = Vec::new();
    for (i, r) in measured.iter().enumerate() {
        let mut row = base.clone();
        row["scenario"] = json!("e2e");
        row["round"] = json!(i + 1);
        row["config"] = json!({
            "runs": settings.runs,
            "batchRequest": BATCH_REQUEST,
            "hostCapacity": settings.host_capacity,
            "hostPrefetch": settings.host_prefetch,
            "hostLog": HOST_LOG,
            "threads": cores,
            "latencyRuns": settings.latency_runs,
            "pauseMs": settings.pause.as_secs_f64() * 1e3,
            "peers": settings.peers.as_ref().map(|p| p.versions.clone()),
        });
        row["wasmRunsPerSec"] = json!(r.wasm);
        row["pythonWorkerRunsPerSec"] = json!(r.python);
        row["graphileTunedJobsPerSec"] = json!(r.graphile_tuned);
        row["ratioWasmToGraphileTuned"] = json!(r.graphile_tuned.map(|g| r.wasm / g));
        row["wasmCpuPerRunUs"] = r.wasm_cpu.as_json();
        row["pythonCpuPerRunUs"] = r.python_cpu.as_json();
        row["graphileTunedCpuPerJobUs"] = json!(r.graphile_cpu.map(|c| c.as_json()));
        row["latencyToHostP50Ms"] = json!(r.p50_ms);
        row["latencyToHostP99Ms"] = json!(r.p99_ms);
        row["latencyToHostMaxMs"] = json!(r.max_ms);
        if settings.statements {
            let as_json = |costs: &[StatementCost]| -> Vec<Value> {
                costs.iter().map(StatementCost::as_json).collect()
            };
            row["wasmStatements"] = json!(as_json(&r.wasm_statements));
            row["pythonStatements"] = json!(as_json(&r.python_statements));
        }
        rows.push(row);
    }
    Ok(Outcome { rows, summary })
}

/// Creates database `name` and starts an orchestrator on it.
async fn pipeline(
    pipeweave: &Path,
    cluster: &EmbeddedPostgres,
    admin: &PgPool,
    scratch: &Path,
    name: &str,
) -> anyhow::Result<Pipeline> {
    empty_database(admin, name).await?;
    let storage = scratch.join(format!("{name}-storage"));
    let mut command = logged(
        pipeweave,
        &["orchestrator"],
        &scratch.join(format!("{name}-orchestrator.log")),
    );
    command
        .env("DATABASE_URL", cluster.url(name))
        .env("PIPEWEAVE_SECRET_KEY", SECRET)
        .env("PIPEWEAVE_STORAGE_DIR", &storage)
        .env("PORT", "0")
        .env("PIPEWEAVE_LISTEN_HOST", "127.0.0.1")
        .env("LOG_LEVEL", "minimal");
    let orchestrator =
        tokio::task::block_in_place(|| Server::start(command, Duration::from_secs(60)));
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&cluster.url(name))
        .await?;
    Ok(Pipeline { orchestrator, pool })
}

async fn run(
    pipeweave: &Path,
    guest: &Path,
    cluster: &EmbeddedPostgres,
    scratch: &Path,
    rounds: usize,
    settings: &Settings,
) -> anyhow::Result<Vec<Round>> {
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&cluster.url("postgres"))
        .await
        .context("cannot connect to the private cluster")?;
    let wasm = pipeline(pipeweave, cluster, &admin, scratch, "bench_e2e_wasm").await?;
    let registered = Command::new(pipeweave)
        .arg("register")
        .arg(guest)
        .args(["--orchestrator", &wasm.orchestrator.url])
        .output()?;
    ensure!(
        registered.status.success(),
        "pipeweave register failed: {}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let host_log = scratch.join("host.log");
    let capacity = settings.host_capacity.map(|c| c.to_string());
    let prefetch = settings.host_prefetch.to_string();
    let mut args = vec![
        "host",
        "--orchestrator",
        &wasm.orchestrator.url,
        "--listen",
        "127.0.0.1:0",
        "--host-id",
        "bench-e2e",
        "--prefetch",
        &prefetch,
    ];
    if let Some(capacity) = &capacity {
        args.extend(["--capacity", capacity]);
    }
    let mut command = logged(pipeweave, &args, &host_log);
    command
        .env("PIPEWEAVE_SECRET_KEY", SECRET)
        .env("PIPEWEAVE_LOG", HOST_LOG)
        .env(
            "PIPEWEAVE_CACHE_DIR",
            pipeweave_testkit::compile_cache_dir(),
        );
    let host = tokio::task::block_in_place(|| Server::start(command, Duration::from_secs(60)));

    let python = pipeline(pipeweave, cluster, &admin, scratch, "bench_e2e_python").await?;
    let script = pipeweave_testkit::process::python_worker_script();
    let script = script.to_string_lossy();
    let command = logged(
        Path::new("python3"),
        &[
            "-u",
            &script,
            "--orchestrator",
            &python.orchestrator.url,
            "--port",
            "0",
        ],
        &scratch.join("python-worker.log"),
    );
    let worker = tokio::task::block_in_place(|| Server::start(command, Duration::from_secs(40)));
    let postmaster = cluster
        .postmaster_pid()
        .context("the private cluster's postmaster is not running")?;
    let watched_wasm = Watched {
        postmaster,
        orchestrator: Some(wasm.orchestrator.pid()),
        worker: Some(host.pid()),
    };
    let watched_python = Watched {
        postmaster,
        orchestrator: Some(python.orchestrator.pid()),
        worker: Some(worker.pid()),
    };

    if settings.statements {
        for pipeline in [&wasm, &python] {
            sqlx::query("create extension if not exists pg_stat_statements")
                .execute(&pipeline.pool)
                .await?;
        }
    }
    let http = reqwest::Client::new();
    eprintln!("warming up: {WARM_UP_RUNS} runs through each pipeline…");
    throughput(&http, &wasm, &watched_wasm, WARM_UP_RUNS, false).await?;
    throughput(&http, &python, &watched_python, WARM_UP_RUNS, false).await?;
    latency(
        &http,
        &wasm.orchestrator.url,
        &host_log,
        LATENCY_WARMUP,
        settings.pause,
    )
    .await?;

    let mut measured = Vec::new();
    for round in 0..rounds {
        let mut drains = [Drain::default(), Drain::default()];
        let mut graphile = None;
        for step in 0..3 {
            match (step + round) % 3 {
                0 => {
                    drains[0] = throughput(
                        &http,
                        &wasm,
                        &watched_wasm,
                        settings.runs,
                        settings.statements,
                    )
                    .await?
                }
                1 => {
                    drains[1] = throughput(
                        &http,
                        &python,
                        &watched_python,
                        settings.runs,
                        settings.statements,
                    )
                    .await?
                }
                _ => graphile = peer(cluster, postmaster, &admin, settings, round).await?,
            }
        }
        let [wasm_drain, python_drain] = drains;
        let (p50, p99, max) = latency(
            &http,
            &wasm.orchestrator.url,
            &host_log,
            settings.latency_runs,
            settings.pause,
        )
        .await?;
        let r = Round {
            wasm: wasm_drain.rate,
            python: python_drain.rate,
            wasm_statements: wasm_drain.statements,
            python_statements: python_drain.statements,
            wasm_cpu: wasm_drain.cpu,
            python_cpu: python_drain.cpu,
            graphile_tuned: graphile.map(|(rate, _)| rate),
            graphile_cpu: graphile.map(|(_, cpu)| cpu),
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
        };
        eprintln!(
            "round {}: WASM {:.0} runs/s, Python worker {:.0} runs/s, graphile-worker tuned {}; \
             enqueue → host p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
            round + 1,
            r.wasm,
            r.python,
            r.graphile_tuned
                .map_or_else(|| "not run".to_owned(), |g| format!("{g:.0} jobs/s")),
        );
        eprintln!(
            "  CPU per run (µs), PostgreSQL / orchestrator / host or worker / this client: \
             WASM {}, Python worker {}{}",
            r.wasm_cpu,
            r.python_cpu,
            r.graphile_cpu
                .map(|c| format!(", graphile-worker tuned {c}"))
                .unwrap_or_default(),
        );
        if settings.statements {
            print_statements("WASM", &r.wasm_statements);
            print_statements("Python worker", &r.python_statements);
        }
        measured.push(r);
    }
    wasm.pool.close().await;
    python.pool.close().await;
    admin.close().await;
    Ok(measured)
}

/// graphile-worker tuned draining `runs` jobs in a fresh database: its
/// jobs/s, and the CPU per job of the cluster and of its Node process.
async fn peer(
    cluster: &EmbeddedPostgres,
    postmaster: u32,
    admin: &PgPool,
    settings: &Settings,
    round: usize,
) -> anyhow::Result<Option<(f64, CpuPerRun)>> {
    let Some(installed) = &settings.peers else {
        return Ok(None);
    };
    let name = format!("bench_e2e_peer_{}", round + 1);
    empty_database(admin, &name).await?;
    let mode = PeerMode::Throughput {
        jobs: settings.runs,
        chunk: BATCH_REQUEST,
        batch: 100,
        clients: 8,
    };
    let url = cluster.url(&name);
    // Node is a child of this process: its time shows once it is reaped.
    let watched = Watched {
        postmaster,
        orchestrator: None,
        worker: None,
    };
    let before = watched.ticks()?;
    let figures =
        tokio::task::block_in_place(|| installed.measure(Peer::GraphileTuned, &mode, &url));
    let cpu = CpuPerRun::between(before, watched.ticks()?, settings.runs);
    drop_empty_database(admin, &name).await?;
    Ok(Some((peers::figure(&figures?, "jobsPerSec")?, cpu)))
}

/// The processes whose CPU time a drain is charged with.
#[derive(Debug, Clone, Copy)]
struct Watched {
    /// The cluster's postmaster; its backends are its children.
    postmaster: u32,
    orchestrator: Option<u32>,
    /// The host or the worker; `None` for a child of this process that
    /// has been waited for by the time of the second reading.
    worker: Option<u32>,
}

/// CPU time, in ticks, of each watched process at one instant.
#[derive(Debug, Clone, Copy)]
struct Ticks {
    postgres: u64,
    orchestrator: u64,
    worker: u64,
    client: u64,
}

impl Watched {
    fn ticks(&self) -> anyhow::Result<Ticks> {
        let client = CpuTime::of(std::process::id())?;
        Ok(Ticks {
            postgres: CpuTime::of_family(self.postmaster)?,
            orchestrator: match self.orchestrator {
                Some(pid) => CpuTime::of(pid)?.own_ticks,
                None => 0,
            },
            worker: match self.worker {
                Some(pid) => CpuTime::of(pid)?.own_ticks,
                None => client.reaped_children_ticks,
            },
            client: client.own_ticks,
        })
    }
}

/// CPU time per run over one drain, by process, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
struct CpuPerRun {
    postgres: f64,
    orchestrator: f64,
    worker: f64,
    /// This process: the client that enqueues and watches the drain.
    client: f64,
}

impl CpuPerRun {
    fn between(before: Ticks, after: Ticks, runs: usize) -> Self {
        let per_run = |from: u64, to: u64| {
            to.saturating_sub(from) as f64 * CPU_TICK_MS * 1e3 / runs.max(1) as f64
        };
        Self {
            postgres: per_run(before.postgres, after.postgres),
            orchestrator: per_run(before.orchestrator, after.orchestrator),
            worker: per_run(before.worker, after.worker),
            client: per_run(before.client, after.client),
        }
    }

    /// The raw row's form.
    fn as_json(&self) -> Value {
        json!({
            "postgres": self.postgres,
            "orchestrator": self.orchestrator,
            "worker": self.worker,
            "client": self.client,
        })
    }
}

impl std::fmt::Display for CpuPerRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} / {:.0} / {:.0} / {:.0}",
            self.postgres, self.orchestrator, self.worker, self.client
        )
    }
}

/// One measured drain.
#[derive(Debug, Clone, Default)]
struct Drain {
    rate: f64,
    /// With `--statements`: where PostgreSQL's time went.
    statements: Vec<StatementCost>,
    cpu: CpuPerRun,
}

/// Enqueues `n` no-op runs in requests of [`BATCH_REQUEST`] and waits until
/// none is queued or running; returns runs/s from the first request, the
/// CPU per run of the `watched` processes and, with `statements`, where
/// PostgreSQL's time went meanwhile.
async fn throughput(
    http: &reqwest::Client,
    pipeline: &Pipeline,
    watched: &Watched,
    n: usize,
    statements: bool,
) -> anyhow::Result<Drain> {
    let url = &pipeline.orchestrator.url;
    // Whatever earlier runs left (latency runs, an earlier drain), untimed.
    sqlx::query("truncate runs cascade")
        .execute(&pipeline.pool)
        .await?;
    if statements {
        sqlx::query("select pg_stat_statements_reset()")
            .execute(&pipeline.pool)
            .await?;
    }
    let cpu_before = watched.ticks()?;
    let started = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH_REQUEST);
        let tasks: Vec<Value> = (0..k)
            .map(|_| json!({ "taskId": "noop", "input": {} }))
            .collect();
        let response = http
            .post(format!("{url}/api/queue/batch"))
            .json(&json!({ "tasks": tasks }))
            .send()
            .await?;
        let status = response.status();
        if status != 201 {
            bail!(
                "the batch enqueue answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        left -= k;
    }
    let deadline = started + Duration::from_secs(1_800);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Each half matches a partial index (runs_claimable, runs_running)
        // exactly, and the statement is planned at each look: a generic
        // plan cached while the table was empty (it is truncated before
        // each drain) scanned the heap from its succeeded front, 50 times
        // a second, on the cores under test.
        let open: bool = sqlx::query_scalar(
            "select exists (select from runs where state in ('queued', 'awaiting_retry'))
                 or exists (select from runs where state = 'running')",
        )
        .persistent(false)
        .fetch_one(&pipeline.pool)
        .await?;
        if !open {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{n} runs did not finish within 30 minutes"
        );
    }
    let elapsed = started.elapsed();
    let cpu = CpuPerRun::between(cpu_before, watched.ticks()?, n);
    let (succeeded, other): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where state = 'succeeded'), count(*) filter (where state <> 'succeeded') from runs",
    )
    .fetch_one(&pipeline.pool)
    .await?;
    ensure!(
        succeeded == n as i64 && other == 0,
        "{succeeded} of {n} runs succeeded and {other} ended otherwise"
    );
    let costs = if statements {
        statement_costs(&pipeline.pool).await?
    } else {
        Vec::new()
    };
    Ok(Drain {
        rate: n as f64 / elapsed.as_secs_f64(),
        statements: costs,
        cpu,
    })
}

/// One statement's share of PostgreSQL's time in a drain, from
/// `pg_stat_statements`.
#[derive(Debug, Clone)]
struct StatementCost {
    calls: i64,
    total_ms: f64,
    rows: i64,
    /// Its first line that is not a comment, at most 100 characters.
    statement: String,
}

impl StatementCost {
    /// The raw row's form.
    fn as_json(&self) -> Value {
        json!({
            "calls": self.calls,
            "totalMs": self.total_ms,
            "rows": self.rows,
            "statement": self.statement,
        })
    }
}

/// The statements of the pipeline's database that took the most execution
/// time since the last reset, most first.
async fn statement_costs(pool: &PgPool) -> anyhow::Result<Vec<StatementCost>> {
    let rows: Vec<(i64, f64, i64, String)> = sqlx::query_as(
        "select calls, total_exec_time, rows, query from pg_stat_statements
         where dbid = (select oid from pg_database where datname = current_database())
           and query not like '%pg_stat_statements%'
         order by total_exec_time desc limit 8",
    )
    .fetch_all(pool)
    .await
    .context("reading pg_stat_statements")?;
    Ok(rows
        .into_iter()
        .map(|(calls, total_ms, rows, query)| {
            let first = query
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty() && !line.starts_with("--"))
                .unwrap_or_default();
            StatementCost {
                calls,
                total_ms,
                rows,
                statement: first.chars().take(100).collect(),
            }
        })
        .collect())
}

/// Prints where PostgreSQL's time went in one drain.
fn print_statements(pipeline: &str, costs: &[StatementCost]) {
    let total: f64 = costs.iter().map(|c| c.total_ms).sum();
    eprintln!(
        "  {pipeline} drain, PostgreSQL time by statement (pg_stat_statements, top {}):",
        costs.len()
    );
    eprintln!(
        "  {:>6} {:>9} {:>7} {:>8} {:>9}  statement",
        "share", "total ms", "calls", "mean ms", "rows/call"
    );
    for cost in costs {
        let calls = cost.calls.max(1) as f64;
        eprintln!(
            "  {:>5.1}% {:>9.0} {:>7} {:>8.3} {:>9.1}  {}",
            100.0 * cost.total_ms / total.max(f64::MIN_POSITIVE),
            cost.total_ms,
            cost.calls,
            cost.total_ms / calls,
            cost.rows as f64 / calls,
            cost.statement
        );
    }
}

/// The host's log, read as it grows.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            offset: std::fs::metadata(path).map_or(0, |m| m.len()),
            partial: String::new(),
        }
    }

    /// The complete lines written since the last call.
    fn lines(&mut self) -> anyhow::Result<Vec<String>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut text = String::new();
        self.offset += file.read_to_string(&mut text)? as u64;
        self.partial.push_str(&text);
        let Some(end) = self.partial.rfind('\n') else {
            return Ok(Vec::new());
        };
        let complete: Vec<String> = self.partial[..end].lines().map(str::to_owned).collect();
        self.partial.drain(..=end);
        Ok(complete)
    }
}

/// The wall-clock instant at the start of a `tracing` log line.
fn logged_at(line: &str) -> Option<DateTime<Utc>> {
    let first = line.split_whitespace().next()?;
    DateTime::parse_from_rfc3339(first)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `runs` runs one at a time: from just before the enqueue request to the
/// host's `dispatch accepted` line; returns p50, p99 and max in ms.
async fn latency(
    http: &reqwest::Client,
    url: &str,
    host_log: &Path,
    runs: usize,
    pause: Duration,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut tail = LogTail::new(host_log);
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let sent = Utc::now();
        let response = http
            .post(format!("{url}/api/queue/task"))
            .json(&json!({ "taskId": "noop", "input": {} }))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        ensure!(status == 201, "enqueue answered {status}: {body}");
        let run_id = body["runId"].as_str().context("no runId in the answer")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut accepted = None;
        let mut delivered = false;
        while !delivered {
            for line in tail.lines()? {
                if log_field(&line, "run_id") != Some(run_id) {
                    continue;
                }
                if line.contains("dispatch accepted") {
                    accepted = logged_at(&line);
                } else if line.contains("callback delivered") {
                    delivered = true;
                }
            }
            ensure!(
                Instant::now() < deadline,
                "run {run_id}: no dispatch and callback in the host's log within 10 s"
            );
            if !delivered {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let accepted =
            accepted.with_context(|| format!("no `dispatch accepted` line for {run_id}"))?;
        samples.push((accepted - sent).to_std().unwrap_or_default());
        tokio::time::sleep(pause).await;
    }
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok((
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(percentile(&samples, 1.0)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_instant_and_fields_of_a_host_log_line() {
        let line = "2026-11-26T10:09:43.123456Z DEBUG pipeweave_host::server: dispatch accepted \
                    run_id=trun_0193 attempt=1 task_id=noop";
        let at = logged_at(line).expect("a timestamp");
        assert_eq!(at.timestamp_subsec_micros(), 123_456);
        assert_eq!(log_field(line, "run_id"), Some("trun_0193"));
        assert_eq!(logged_at("no timestamp here"), None);
    }
}
