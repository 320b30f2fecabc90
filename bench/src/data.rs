//! The data scenario: a task's large output (an asset of `--bytes`, 1 GiB
//! by default) stored through a real S3-protocol server by a real host,
//! next to a raw `object_store` copy of the same number of bytes to the
//! same bucket, and what the orchestrator and the host hold in memory
//! meanwhile.
//!
//! The parts are separate processes, as in production: a private
//! PostgreSQL (durability defaults), s3s-fs (`pipeweave_testkit::s3`), and
//! the release `pipeweave` binary as `pipeweave orchestrator` (whose only
//! storage backend is the s3s-fs bucket) and `pipeweave host` (capacity 1).
//! The scenario builds the binary and the `assets` example guest first and
//! registers the guest with `pipeweave register`. One warm-up run (a 1 MiB
//! asset) loads the module before anything is measured.
//!
//! Each round does two things, in alternating order:
//!
//! - **PipeWeave**: enqueue one `assets` run with `{"scratchBytes":
//!   bytes}` and poll its status every 20 ms until it succeeds. The guest
//!   writes the file in its sandbox and reads it back (1 MiB at a time);
//!   after the attempt the host streams it to the bucket with
//!   `pipeweave_storage::transfer::upload_file` (8 MiB parts, 2 in
//!   flight). The upload rate is `bytes` / the host's own `elapsed_ms` from
//!   its `dehydrated` log line (the whole dehydration: the asset plus the
//!   run's two small ones); end to end is from the enqueue request to the
//!   poll that sees the run succeeded.
//! - **Raw**: the same number of bytes, the same pattern, from a local
//!   file (written once, before the rounds) to the same bucket, with
//!   `object_store` alone on a store opened from the same backend
//!   configuration: `put_multipart`, then 1 MiB reads from the file, each
//!   passed to `WriteMultipart::write` after `wait_for_capacity(in_flight)`,
//!   then `finish`. It runs twice: with the host's settings (8 MiB parts, 2
//!   in flight), and with 10 MiB parts and 8 in flight, what
//!   `object_store`'s own `BufWriter` uses by default.
//!
//! Before each PipeWeave part the peak resident memory (`VmHWM`) of the
//! orchestrator and the host is reset to what is resident
//! (`/proc/{pid}/clear_refs`); after it the peak is read. Growth is that
//! peak minus what the process held after start-up and the warm-up run.
//! Every object written in a round is deleted at its end, so the disk use
//! stays at about one copy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use pipeweave_orchestrator::embedded_postgres::{EmbeddedPostgres, Options};
use pipeweave_storage::object_store::path::Path as ObjectPath;
use pipeweave_storage::object_store::{ObjectStore, ObjectStoreExt as _, WriteMultipart};
use pipeweave_testkit::process::{Memory, Server, log_field};
use pipeweave_testkit::s3::S3Server;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use crate::stats::{Line, Outcome, Spread, machine};

/// The deployment's shared secret (64 hex digits); any value will do.
pub(crate) const SECRET: &str = "3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d";
/// The asset of the warm-up run.
const WARM_UP_BYTES: u64 = 1 << 20;
/// Reads from the local file, as the host's copy loop reads.
const READ_BYTES: usize = 1 << 20;
/// The host's upload settings (`pipeweave_storage::transfer`: `PART_BYTES`
/// and its private `PARTS_IN_FLIGHT`).
const HOST_UPLOAD: Upload = Upload {
    part_bytes: pipeweave_storage::transfer::PART_BYTES,
    in_flight: 2,
};
/// What `object_store::buffered::BufWriter` uses when not told otherwise.
const OBJECT_STORE_DEFAULTS: Upload = Upload {
    part_bytes: 10 << 20,
    in_flight: 8,
};
/// 10^6: rates and memory are reported in MB.
const MB: f64 = 1e6;

/// Part size and parts in flight of a raw multipart upload.
#[derive(Debug, Clone, Copy)]
struct Upload {
    part_bytes: usize,
    in_flight: usize,
}

/// One round.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Whether the raw copies ran before the PipeWeave run.
    raw_first: bool,
    /// Raw copy with the host's settings, bytes/s.
    raw_host_settings: f64,
    /// Raw copy with object_store's defaults, bytes/s.
    raw_defaults: f64,
    /// The host's upload (its `dehydrated` line), bytes/s.
    host: f64,
    /// The host's `elapsed_ms`.
    host_ms: u64,
    /// Enqueue to succeeded.
    end_to_end: Duration,
    /// Peak resident bytes during the run.
    orchestrator_peak: u64,
    host_peak: u64,
}

/// Memory after start-up and the warm-up run.
#[derive(Debug, Clone, Copy)]
struct Baseline {
    orchestrator: u64,
    host: u64,
}

/// The data scenario: returns the raw rows and the summary.
pub(crate) fn data(rounds: usize, bytes: u64) -> anyhow::Result<Outcome> {
    ensure!(bytes > 0, "--bytes must be at least 1");
    // The only TLS provider compiled in; reqwest needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("building pipeweave (release) and the assets guest…");
    let pipeweave = build_pipeweave()?;
    let guest = pipeweave_testkit::guest("assets");
    eprintln!("starting PostgreSQL and s3s-fs…");
    let cluster = EmbeddedPostgres::start(&Options::default())?;
    let s3 = S3Server::start();
    let source = tempfile::NamedTempFile::new()?;
    write_pattern(source.path(), bytes)?;

    let measured = run(
        &pipeweave,
        &guest,
        &cluster,
        &s3,
        source.path(),
        rounds,
        bytes,
    );
    cluster.stop();
    let (baseline, measured) = measured?;
    print_table(rounds, bytes, cores, baseline, &measured);

    let base = machine();
    let mut rows = Vec::new();
    for (i, r) in measured.iter().enumerate() {
        let mut row = base.clone();
        row["scenario"] = json!("data");
        row["round"] = json!(i + 1);
        row["config"] = json!({
            "bytes": bytes,
            "threads": cores,
            "store": format!("s3s-fs {}", pipeweave_testkit::s3::S3S_FS_VERSION),
            "hostPartBytes": HOST_UPLOAD.part_bytes,
            "hostPartsInFlight": HOST_UPLOAD.in_flight,
            "rawDefaultsPartBytes": OBJECT_STORE_DEFAULTS.part_bytes,
            "rawDefaultsPartsInFlight": OBJECT_STORE_DEFAULTS.in_flight,
            "rawFirst": r.raw_first,
        });
        row["rawHostSettingsMBps"] = json!(r.raw_host_settings / MB);
        row["rawDefaultsMBps"] = json!(r.raw_defaults / MB);
        row["hostUploadMBps"] = json!(r.host / MB);
        row["hostUploadMs"] = json!(r.host_ms);
        row["ratioToRawHostSettings"] = json!(r.host / r.raw_host_settings);
        row["ratioToRawDefaults"] = json!(r.host / r.raw_defaults);
        row["endToEndMs"] = json!(r.end_to_end.as_secs_f64() * 1e3);
        row["orchestratorBaselineMB"] = json!(baseline.orchestrator as f64 / MB);
        row["orchestratorPeakMB"] = json!(r.orchestrator_peak as f64 / MB);
        row["orchestratorGrowthMB"] =
            json!(r.orchestrator_peak.saturating_sub(baseline.orchestrator) as f64 / MB);
        row["hostBaselineMB"] = json!(baseline.host as f64 / MB);
        row["hostPeakMB"] = json!(r.host_peak as f64 / MB);
        row["hostGrowthMB"] = json!(r.host_peak.saturating_sub(baseline.host) as f64 / MB);
        rows.push(row);
    }
    let each = |f: &dyn Fn(&Round) -> f64| measured.iter().map(f).collect::<Vec<_>>();
    let summary = vec![
        Line::new(
            format!("data: host upload of {bytes} bytes (MB/s)"),
            &each(&|r| r.host / MB),
            0,
        ),
        Line::new(
            "data: raw object_store copy, host's settings (MB/s)",
            &each(&|r| r.raw_host_settings / MB),
            0,
        ),
        Line::new(
            "data: ratio host / raw copy, host's settings (same round)",
            &each(&|r| r.host / r.raw_host_settings),
            2,
        )
        .target("≥ 0.80", |m| m >= 0.8),
        Line::new(
            "data: ratio host / raw copy, object_store defaults (same round)",
            &each(&|r| r.host / r.raw_defaults),
            2,
        )
        .target("≥ 0.80", |m| m >= 0.8),
        Line::new(
            "data: orchestrator growth over start-up (MB)",
            &each(&|r| r.orchestrator_peak.saturating_sub(baseline.orchestrator) as f64 / MB),
            1,
        )
        .target("< 20", |m| m < 20.0),
        Line::new(
            "data: host growth over start-up (MB)",
            &each(&|r| r.host_peak.saturating_sub(baseline.host) as f64 / MB),
            1,
        ),
    ];
    Ok(Outcome { rows, summary })
}

/// Builds the release `pipeweave` binary and returns its path.
pub(crate) fn build_pipeweave() -> anyhow::Result<PathBuf> {
    let root = pipeweave_testkit::workspace_root();
    let mut command = Command::new(pipeweave_testkit::cargo());
    command.current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "pipeweave",
        "--bin",
        "pipeweave",
    ]);
    let status = command.status().context("cannot run cargo")?;
    ensure!(
        status.success(),
        "cargo build of pipeweave failed ({status})"
    );
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join("release").join("pipeweave");
    ensure!(binary.is_file(), "no {} after the build", binary.display());
    Ok(binary)
}

/// The byte at offset `i` is `i % 251`, as the `assets` guest writes it.
fn write_pattern(path: &Path, bytes: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let period: Vec<u8> = (0..=250).collect();
    let mut chunk = Vec::with_capacity(READ_BYTES + period.len());
    while chunk.len() < READ_BYTES {
        chunk.extend_from_slice(&period);
    }
    // A multiple of the period, so every chunk starts at pattern offset 0.
    chunk.truncate(READ_BYTES / period.len() * period.len());
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).map_or(chunk.len(), |left| left.min(chunk.len()));
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .sync_all()?;
    Ok(())
}

/// Starts the processes and runs the rounds.
fn run(
    pipeweave: &Path,
    guest: &Path,
    cluster: &EmbeddedPostgres,
    s3: &S3Server,
    source: &Path,
    rounds: usize,
    bytes: u64,
) -> anyhow::Result<(Baseline, Vec<Round>)> {
    let backends = json!([{
        "id": "s3", "provider": "minio", "endpoint": s3.endpoint(), "bucket": s3.bucket,
        "credentials": { "accessKey": s3.access_key, "secretKey": s3.secret_key }
    }])
    .to_string();
    let mut command = Command::new(pipeweave);
    command
        .arg("orchestrator")
        .env("DATABASE_URL", cluster.url("postgres"))
        .env("PIPEWEAVE_SECRET_KEY", SECRET)
        .env("STORAGE_BACKENDS", &backends)
        .env("PORT", "0")
        .env("PIPEWEAVE_LISTEN_HOST", "127.0.0.1")
        .env("LOG_LEVEL", "minimal");
    let orchestrator = Server::start(command, Duration::from_secs(60));
    let registered = Command::new(pipeweave)
        .arg("register")
        .arg(guest)
        .args(["--orchestrator", &orchestrator.url])
        .output()?;
    ensure!(
        registered.status.success(),
        "pipeweave register failed: {}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let mut command = Command::new(pipeweave);
    command
        .args(["host", "--orchestrator", &orchestrator.url])
        .args(["--listen", "127.0.0.1:0", "--capacity", "1"])
        .args(["--host-id", "bench-data"])
        .env("PIPEWEAVE_SECRET_KEY", SECRET)
        .env(
            "PIPEWEAVE_CACHE_DIR",
            pipeweave_testkit::compile_cache_dir(),
        );
    let host = Server::start_keeping_stderr(command, Duration::from_secs(60));
    let store = pipeweave_storage::Backends::from_json(&backends, None)?
        .default_backend()
        .open()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let warm_up = pipeweave_run(&http, &orchestrator.url, WARM_UP_BYTES).await?;
        delete_assets(&store, &warm_up.2).await?;
        let baseline = Baseline {
            orchestrator: orchestrator.memory()?.rss,
            host: host.memory()?.rss,
        };
        eprintln!(
            "after start-up and a warm-up run: orchestrator {:.1} MB, host {:.1} MB resident",
            baseline.orchestrator as f64 / MB,
            baseline.host as f64 / MB
        );
        let mut measured = Vec::new();
        for round in 0..rounds {
            let raw_first = round % 2 == 1;
            let mut raw = (0.0, 0.0);
            if raw_first {
                raw = raw_copies(&store, source, bytes, round).await?;
            }
            Memory::reset_peak(orchestrator.pid())?;
            Memory::reset_peak(host.pid())?;
            let (end_to_end, run_id, run) = pipeweave_run(&http, &orchestrator.url, bytes).await?;
            let orchestrator_peak = orchestrator.memory()?.peak;
            let host_peak = host.memory()?.peak;
            let host_ms = dehydrated_ms(&host, &run_id)?;
            delete_assets(&store, &run).await?;
            if !raw_first {
                raw = raw_copies(&store, source, bytes, round).await?;
            }
            let r = Round {
                raw_first,
                raw_host_settings: raw.0,
                raw_defaults: raw.1,
                host: bytes as f64 / (host_ms.max(1) as f64 / 1e3),
                host_ms,
                end_to_end,
                orchestrator_peak,
                host_peak,
            };
            eprintln!(
                "round {}: host upload {:.0} MB/s ({} ms), raw {:.0} MB/s (host's settings) \
                 and {:.0} MB/s (object_store defaults), ratio {:.2}; end to end {:.1} s; \
                 peak orchestrator {:.1} MB (+{:.1}), host {:.1} MB (+{:.1})",
                round + 1,
                r.host / MB,
                r.host_ms,
                r.raw_host_settings / MB,
                r.raw_defaults / MB,
                r.host / r.raw_host_settings,
                r.end_to_end.as_secs_f64(),
                r.orchestrator_peak as f64 / MB,
                r.orchestrator_peak.saturating_sub(baseline.orchestrator) as f64 / MB,
                r.host_peak as f64 / MB,
                r.host_peak.saturating_sub(baseline.host) as f64 / MB,
            );
            measured.push(r);
        }
        anyhow::Ok((baseline, measured))
    })
}

/// Enqueues one `assets` run writing a `scratch_bytes` asset and waits
/// for it to succeed; returns the time from the enqueue request to the
/// poll that saw it succeed, the run's id, and the run as the API shows it.
async fn pipeweave_run(
    http: &reqwest::Client,
    url: &str,
    scratch_bytes: u64,
) -> anyhow::Result<(Duration, String, Value)> {
    let started = Instant::now();
    let answer: Value = http
        .post(format!("{url}/api/queue/task"))
        .json(&json!({ "taskId": "assets", "input": { "scratchBytes": scratch_bytes } }))
        .send()
        .await?
        .json()
        .await?;
    let run_id = answer["runId"]
        .as_str()
        .with_context(|| format!("enqueue answered {answer}"))?;
    let deadline = started + Duration::from_secs(600);
    loop {
        let run: Value = http
            .get(format!("{url}/api/task-runs/{run_id}"))
            .send()
            .await?
            .json()
            .await?;
        match run["status"].as_str() {
            Some("succeeded") => {
                let elapsed = started.elapsed();
                let size = run["assets"]["scratch.bin"]["size"].as_u64();
                ensure!(
                    size == Some(scratch_bytes),
                    "the run stored {size:?} bytes, not {scratch_bytes}: {run}"
                );
                return Ok((elapsed, run_id.to_owned(), run));
            }
            Some("dead" | "cancelled") => bail!("run {run_id} failed: {run}"),
            _ if Instant::now() > deadline => bail!("run {run_id} did not finish: {run}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The host's `elapsed_ms` for storing `run_id`'s results, from its log.
fn dehydrated_ms(host: &Server, run_id: &str) -> anyhow::Result<u64> {
    let line = host
        .stderr_lines()
        .into_iter()
        .find(|line| line.contains("dehydrated") && log_field(line, "run_id") == Some(run_id))
        .with_context(|| format!("no `dehydrated` line for {run_id} in the host's log"))?;
    log_field(&line, "elapsed_ms")
        .and_then(|ms| ms.parse().ok())
        .with_context(|| format!("no elapsed_ms in {line:?}"))
}

/// Deletes the objects a run's result names.
async fn delete_assets(store: &Arc<dyn ObjectStore>, run: &Value) -> anyhow::Result<()> {
    let assets = run["assets"].as_object().context("the run has no assets")?;
    for asset in assets.values() {
        let path = asset["path"].as_str().context("an asset has no path")?;
        store.delete(&ObjectPath::from(path)).await?;
    }
    Ok(())
}

/// Both raw copies of `source`; returns their rates in bytes/s (the host's
/// settings, then object_store's defaults).
async fn raw_copies(
    store: &Arc<dyn ObjectStore>,
    source: &Path,
    bytes: u64,
    round: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut rates = [0.0; 2];
    for (rate, upload) in rates.iter_mut().zip([HOST_UPLOAD, OBJECT_STORE_DEFAULTS]) {
        let path = ObjectPath::from(format!("bench/raw-{round}.bin"));
        let started = Instant::now();
        raw_copy(store, source, &path, upload).await?;
        *rate = bytes as f64 / started.elapsed().as_secs_f64();
        let stored = store.head(&path).await?.size;
        ensure!(
            stored == bytes,
            "the raw copy stored {stored} bytes, not {bytes}"
        );
        store.delete(&path).await?;
    }
    Ok((rates[0], rates[1]))
}

/// `source` to `path` with `object_store` alone: `put_multipart`, 1 MiB
/// reads each written after `wait_for_capacity`, then `finish`.
async fn raw_copy(
    store: &Arc<dyn ObjectStore>,
    source: &Path,
    path: &ObjectPath,
    upload: Upload,
) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(source).await?;
    let mut writer =
        WriteMultipart::new_with_chunk_size(store.put_multipart(path).await?, upload.part_bytes);
    let mut buffer = vec![0_u8; READ_BYTES];
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        writer.wait_for_capacity(upload.in_flight).await?;
        writer.write(&buffer[..n]);
    }
    writer.finish().await?;
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**not met**" }
}

fn print_table(rounds: usize, bytes: u64, cores: usize, baseline: Baseline, measured: &[Round]) {
    let of = |f: &dyn Fn(&Round) -> f64| Spread::of(&measured.iter().map(f).collect::<Vec<_>>());
    let host = of(&|r| r.host / MB);
    let raw_host = of(&|r| r.raw_host_settings / MB);
    let raw_defaults = of(&|r| r.raw_defaults / MB);
    let ratio_host = of(&|r| r.host / r.raw_host_settings);
    let ratio_defaults = of(&|r| r.host / r.raw_defaults);
    let end_to_end = of(&|r| r.end_to_end.as_secs_f64());
    let e2e_rate = of(&|r| bytes as f64 / r.end_to_end.as_secs_f64() / MB);
    let orchestrator_peak = of(&|r| r.orchestrator_peak as f64 / MB);
    let orchestrator_growth =
        of(&|r| r.orchestrator_peak.saturating_sub(baseline.orchestrator) as f64 / MB);
    let host_peak = of(&|r| r.host_peak as f64 / MB);
    let host_growth = of(&|r| r.host_peak.saturating_sub(baseline.host) as f64 / MB);

    println!(
        "\ndata: a {bytes}-byte asset stored by a host through s3s-fs, next to raw object_store copies"
    );
    println!(
        "{rounds} rounds, {cores} cores; MB = 10^6 bytes; memory after start-up and a warm-up run: \
         orchestrator {:.1} MB, host {:.1} MB\n",
        baseline.orchestrator as f64 / MB,
        baseline.host as f64 / MB
    );
    println!("| figure | median | min | max | target | |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let row = |name: &str, s: Spread, digits: usize, target: &str, verdict: &str| {
        println!(
            "| {name} | {:.digits$} | {:.digits$} | {:.digits$} | {target} | {verdict} |",
            s.median, s.min, s.max
        );
    };
    row("host upload (MB/s)", host, 0, "", "");
    row(
        "raw copy, 8 MiB parts × 2 in flight (MB/s)",
        raw_host,
        0,
        "",
        "",
    );
    row(
        "raw copy, 10 MiB parts × 8 in flight (MB/s)",
        raw_defaults,
        0,
        "",
        "",
    );
    row(
        "ratio host / raw, host's settings (same round)",
        ratio_host,
        2,
        "≥ 0.80",
        verdict(ratio_host.median >= 0.8),
    );
    row(
        "ratio host / raw, object_store defaults (same round)",
        ratio_defaults,
        2,
        "≥ 0.80",
        verdict(ratio_defaults.median >= 0.8),
    );
    row(
        "end to end, enqueue to succeeded (s)",
        end_to_end,
        1,
        "",
        "",
    );
    row("end to end (MB/s)", e2e_rate, 0, "", "");
    row("orchestrator peak RSS (MB)", orchestrator_peak, 1, "", "");
    row(
        "orchestrator growth over start-up (MB)",
        orchestrator_growth,
        1,
        "< 20 in every round",
        verdict(orchestrator_growth.max < 20.0),
    );
    row("host peak RSS (MB)", host_peak, 1, "", "");
    row("host growth over start-up (MB)", host_growth, 1, "", "");
}
