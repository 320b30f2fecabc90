//! The PipeWeave orchestrator: an HTTP API over a PostgreSQL queue that
//! dispatches task attempts to PipeWeave hosts (WebAssembly tasks) and to
//! plain HTTP workers in any language, watches their heartbeats, and
//! retries by each task's policy.
//!
//! All state is in PostgreSQL. A task run is a row of `runs`; claiming is
//! one `FOR UPDATE SKIP LOCKED` statement that honours priority, delayed
//! runs and each task's concurrency limit across every replica; wake-ups
//! come from `LISTEN/NOTIFY` with polling as the fallback. Every state
//! change is one transaction guarded by the attempt's token, so any number
//! of orchestrators can share a database and a crash at any instant loses
//! nothing. The orchestrator never links wasmtime: hosts and workers meet
//! it only in the wire protocol of `pipeweave_protocol::wire`
//! (`docs/protocol.md`).
//!
//! # Layout
//!
//! - [`config`]: environment variables and flags, checked into a `Config`
//! - [`api`]: the HTTP API, one module per resource; `api::error` maps
//!   errors to statuses
//! - [`queue`]: retry policy and the failure of an attempt; LISTEN/NOTIFY
//! - [`scheduler`]: dispatch rounds and the heartbeat watch
//! - [`storage`]: every SQL statement, one file per table
//! - [`serve`]: runs the API and, in standalone mode, the scheduler
//! - [`embedded_postgres`]: a private PostgreSQL cluster for the quick
//!   start, tests and benchmarks

pub mod api;
pub mod config;
pub mod embedded_postgres;
mod error;
pub mod ids;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod scheduler;
pub mod shutdown;
pub mod storage;

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use config::{Config, Mode};
pub use error::{Error, Result};
pub use ids::{PipelineRunId, RunId};
pub use shutdown::{Shutdown, ShutdownTrigger};

/// An error and its causes on one line: `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their source in their own message.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Connects to the database (waiting up to 30 s for it to come up).
pub async fn connect(database_url: &str) -> Result<sqlx::PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(false)
        .connect(database_url)
        .await?;
    Ok(pool)
}

/// The API state for a pool and configuration.
pub fn app_state(pool: sqlx::PgPool, config: Config) -> Result<api::AppState> {
    // The only TLS provider compiled in; reqwest needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stores = pipeweave_storage::Stores::open(config.storage.clone())?;
    Ok(api::AppState {
        stores: Arc::new(stores),
        sealer: pipeweave_storage::Sealer::new(&config.secret_key),
        secret_box: pipeweave_storage::SecretBox::new(&config.secret_key),
        claims: scheduler::claims_pool(&pool, 4),
        completions: scheduler::completions_pool(&pool, 8),
        pool,
        config: Arc::new(config),
        wake_scheduler: Arc::new(Notify::new()),
        started_at: chrono::Utc::now(),
        targets_changed: Arc::default(),
        metrics: Arc::default(),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default(),
    })
}

/// How long in-flight requests and the scheduler's current round get to
/// finish once shutdown begins. With a healthy database they take
/// milliseconds; when the database stops answering they would wait for
/// it, so after this the orchestrator stops anyway. Nothing is lost: an
/// unanswered callback is sent again by its host or worker, and a claimed
/// attempt whose dispatch was not sent is retried when its heartbeats do
/// not come.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves the API on `listener` and, in standalone mode, runs the
/// scheduler and the heartbeat watch, until `shutdown` (and then at most
/// [`SHUTDOWN_GRACE`] more). Migrations must have been applied
/// ([`storage::migrate`]).
pub async fn serve(listener: TcpListener, state: api::AppState, shutdown: Shutdown) -> Result<()> {
    let mut background = Vec::new();
    if state.config.mode == Mode::Standalone {
        let scheduler = Arc::new(scheduler::Scheduler::new(state.clone()));
        background.push(tokio::spawn(
            scheduler.clone().run_dispatcher(shutdown.clone()),
        ));
        background.push(tokio::spawn(scheduler.run_watch(shutdown.clone())));
    }
    let app = api::router(state);
    let stop = shutdown.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.wait().await })
        .into_future();
    tokio::pin!(served);
    // Set when shutdown begins; everything must have stopped by then.
    let mut deadline = None;
    let served = tokio::select! {
        served = &mut served => served.map_err(Error::Serve),
        () = shutdown.wait() => {
            let stop_by = tokio::time::Instant::now() + SHUTDOWN_GRACE;
            deadline = Some(stop_by);
            match tokio::time::timeout_at(stop_by, &mut served).await {
                Ok(served) => served.map_err(Error::Serve),
                Err(_) => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still in flight at the end of the shutdown grace; stopping without them");
                    Ok(())
                }
            }
        }
    };
    let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + SHUTDOWN_GRACE);
    for mut task in background {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "a scheduler loop was still busy at the end of the shutdown grace; stopping it");
            task.abort();
        }
    }
    served
}
