//! The dispatch server of `pipeweave host`: receives attempts from the
//! orchestrator over HTTP and runs them with the same [`Runner`] as
//! `pipeweave run`, so what a task author debugs locally is what runs in
//! production.
//!
//! For each `POST /tasks/{taskId}` ([`Dispatch`]), and for each attempt of
//! a `POST /dispatches` ([`DispatchBatch`], how the orchestrator sends
//! them), the server answers `202 Accepted` at once, then:
//!
//! 1. sends a heartbeat every `heartbeatIntervalMs` from that moment, the
//!    first one interval after the dispatch (the guest does not have to),
//!    carrying the latest progress; an answer
//!    that the attempt was cancelled or superseded interrupts the guest;
//! 2. waits for one of its `capacity` slots; attempts beyond capacity
//!    (those it registered to `prefetch`, and any surplus) queue here,
//!    still heartbeating, and one that waited a second or more reports
//!    its real start with a heartbeat (`started`) before it runs;
//! 3. fetches the module by code hash the first time (`GET
//!    /api/modules/{codeHash}`, checked against the hash), after which the
//!    runner's compiled cache serves it;
//! 4. hydrates the input: inline (`initialInput`) or read from `inputPath`
//!    through the dispatch's storage token;
//! 5. runs the attempt, handing it the secrets its task declared from the
//!    host's [`SecretStore`] and the dispatch's `sealedSecrets`; while it runs, rewrites its log object with
//!    the log so far at the heartbeat interval whenever new lines arrived
//!    (so the log can be followed live); on success stores its assets and
//!    a large output (dehydration); either way stores its final log
//!    (`logsPath`);
//! 6. reports with `POST /api/callback/{runId}`, or, when the dispatch
//!    names a `callbacksUrl`, together with the other callbacks that are
//!    ready (`POST /api/callbacks`), retrying while the orchestrator is
//!    unreachable.
//!
//! `POST /runs/{runId}/cancel` ([`CancelNotice`], with the attempt's
//! token) interrupts an attempt at once when the orchestrator cancels it;
//! no callback follows.
//!
//! The host registers itself with `POST /api/hosts` and repeats that as a
//! liveness ping.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use pipeweave_protocol::wire::{
    AttemptError, Callback, CallbackBatchResponse, CallbackStatus, CancelNotice, Dispatch,
    DispatchBatch, DispatchBatchResponse, Heartbeat, HeartbeatResponse, HostRegistration,
    HostRegistrationResponse, INLINE_LIMIT_BYTES, ResultRef,
};
use pipeweave_protocol::{CodeHash, FailureReason};
use pipeweave_storage::object_store::{ObjectStore, ObjectStoreExt as _};
use pipeweave_storage::{Access, Sealer, SecretBox, layout};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, Semaphore};

use crate::secrets::SecretStore;
use crate::{CancelToken, EventSink, LoadedTask, RunEvent, RunRequest, Runner};

/// How long callbacks are retried while the orchestrator is unreachable.
const CALLBACK_PATIENCE: Duration = Duration::from_secs(600);

/// What the dispatch server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The orchestrator's base URL, without a trailing slash.
    pub orchestrator_url: String,
    /// How the orchestrator reaches this host.
    pub public_url: String,
    /// This host's id.
    pub host_id: String,
    /// Attempts run at once.
    pub capacity: usize,
    /// Dispatches accepted beyond `capacity` and held until a slot frees
    /// (`HostRegistration::prefetch`).
    pub prefetch: usize,
    /// The orchestrator's API key (`PIPEWEAVE_API_KEY`), if it requires
    /// one: the host's registration is a write.
    pub api_key: Option<String>,
    /// The deployment's `PIPEWEAVE_SECRET_KEY`, which opens the storage
    /// token of each dispatch.
    pub secret_key: [u8; 32],
    /// The secrets tasks may read (a secrets directory or file); each
    /// attempt is handed only those its task declared.
    pub secrets: SecretStore,
}

/// The dispatch server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket failed.
    #[error("cannot serve HTTP: {0}")]
    Serve(#[source] std::io::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The API key cannot be sent in a header.
    #[error("the API key has characters an HTTP header cannot carry")]
    ApiKey,
}

#[derive(Debug)]
struct Host {
    runner: Arc<Runner>,
    config: ServerConfig,
    http: reqwest::Client,
    slots: Semaphore,
    /// Loaded tasks by code hash; each cell is filled once, by the first
    /// attempt that needs it.
    modules: Mutex<HashMap<String, Arc<OnceCell<Arc<LoadedTask>>>>>,
    /// Attempts accepted and not finished, by run id, so a cancel notice
    /// can reach them.
    in_flight: Mutex<HashMap<String, InFlight>>,
    /// Opens storage tokens.
    sealer: Sealer,
    /// Opens the secrets a dispatch carries.
    secret_box: SecretBox,
    /// Callbacks for [`callback_sender`].
    callbacks: tokio::sync::mpsc::UnboundedSender<PendingCallback>,
}

/// What a cancel notice needs of an attempt in flight.
#[derive(Debug, Clone)]
struct InFlight {
    attempt: u32,
    attempt_token: String,
    cancel: CancelToken,
    abandoned: Arc<Abandoned>,
}

impl InFlight {
    /// Stops the attempt: interrupts the guest (or keeps it from starting)
    /// and sends no callback.
    fn abandon(&self) {
        self.abandoned
            .0
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cancel.cancel();
    }
}

/// Serves dispatches on `listener` and pings the orchestrator until
/// `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    runner: Arc<Runner>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = orchestrator_client(config.api_key.as_deref())?
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(ServerError::Client)?;
    let (callbacks, queued_callbacks) = tokio::sync::mpsc::unbounded_channel();
    let sender = tokio::spawn(callback_sender(http.clone(), queued_callbacks));
    let host = Arc::new(Host {
        callbacks,
        runner,
        sealer: Sealer::new(&config.secret_key),
        secret_box: SecretBox::new(&config.secret_key),
        slots: Semaphore::new(config.capacity.max(1)),
        config,
        http,
        modules: Mutex::new(HashMap::new()),
        in_flight: Mutex::new(HashMap::new()),
    });
    let pinger = tokio::spawn(ping_loop(host.clone()));
    let app = Router::new()
        .route("/tasks/{task_id}", post(accept))
        .route("/dispatches", post(accept_batch))
        .route("/runs/{run_id}/cancel", post(cancel_notice))
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .with_state(host);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve);
    pinger.abort();
    sender.abort();
    served
}

/// A client builder for calls to the orchestrator that sends
/// `Authorization: Bearer <key>` when its API key is given (hosts and
/// `pipeweave register` use it).
pub fn orchestrator_client(api_key: Option<&str>) -> Result<reqwest::ClientBuilder, ServerError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key.filter(|key| !key.is_empty()) {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| ServerError::ApiKey)?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().default_headers(headers))
}

/// Registers with the orchestrator, then repeats it at the interval the
/// orchestrator asks for.
async fn ping_loop(host: Arc<Host>) {
    let registration = HostRegistration {
        host_id: host.config.host_id.clone(),
        url: host.config.public_url.clone(),
        capacity: u32::try_from(host.config.capacity).unwrap_or(u32::MAX),
        prefetch: u32::try_from(host.config.prefetch).unwrap_or(u32::MAX),
    };
    let url = format!("{}/api/hosts", host.config.orchestrator_url);
    let mut registered = false;
    loop {
        let interval = match post_json::<_, HostRegistrationResponse>(
            &host.http,
            &url,
            &registration,
        )
        .await
        {
            Ok(answer) => {
                if !registered {
                    tracing::info!(orchestrator = %host.config.orchestrator_url, "registered with the orchestrator");
                    registered = true;
                }
                Duration::from_millis(answer.ping_interval_ms.max(100))
            }
            Err(error) => {
                tracing::warn!(%url, "cannot register with the orchestrator: {error}");
                registered = false;
                Duration::from_millis(500)
            }
        };
        tokio::time::sleep(interval).await;
    }
}

async fn post_json<T: serde::Serialize, R: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    body: &T,
) -> Result<R, String> {
    let response = http
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("{status}: {text}"));
    }
    response.json().await.map_err(|e| e.to_string())
}

async fn accept(
    State(host): State<Arc<Host>>,
    Path(task_id): Path<String>,
    Json(dispatch): Json<Dispatch>,
) -> (StatusCode, Json<Value>) {
    if dispatch.task_id != task_id {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({ "error": format!("taskId: {:?} does not match the path's {task_id:?}", dispatch.task_id) }),
            ),
        );
    }
    start_attempt(&host, dispatch);
    (StatusCode::ACCEPTED, Json(json!({ "accepted": true })))
}

/// `POST /dispatches`: several attempts in one request
/// ([`DispatchBatch`]), each started as if dispatched alone.
async fn accept_batch(
    State(host): State<Arc<Host>>,
    Json(batch): Json<DispatchBatch>,
) -> (StatusCode, Json<DispatchBatchResponse>) {
    let accepted = batch.dispatches.len();
    for dispatch in batch.dispatches {
        start_attempt(&host, dispatch);
    }
    (
        StatusCode::ACCEPTED,
        Json(DispatchBatchResponse { accepted }),
    )
}

/// Runs an accepted attempt on a task of its own.
fn start_attempt(host: &Arc<Host>, dispatch: Dispatch) {
    tracing::debug!(run_id = %dispatch.run_id, attempt = dispatch.attempt, task_id = %dispatch.task_id, "dispatch accepted");
    tokio::spawn(run_attempt(host.clone(), dispatch));
}

/// `POST /runs/{runId}/cancel`: the orchestrator cancelled an attempt this
/// host is running or queueing; it stops at once, with no callback.
async fn cancel_notice(
    State(host): State<Arc<Host>>,
    Path(run_id): Path<String>,
    Json(notice): Json<CancelNotice>,
) -> (StatusCode, Json<Value>) {
    let in_flight = host
        .in_flight
        .lock()
        .ok()
        .and_then(|attempts| attempts.get(&run_id).cloned());
    match in_flight {
        Some(attempt)
            if attempt.attempt == notice.attempt
                && attempt.attempt_token == notice.attempt_token =>
        {
            tracing::info!(%run_id, attempt = attempt.attempt, "attempt cancelled by the orchestrator; interrupting it");
            attempt.abandon();
            (StatusCode::OK, Json(json!({ "cancelled": true })))
        }
        Some(_) => (
            StatusCode::CONFLICT,
            Json(
                json!({ "error": "attempt or attemptToken does not match the attempt running here" }),
            ),
        ),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no attempt of run {run_id} is running here") })),
        ),
    }
}

/// What an attempt reports as it runs: its latest progress, for the next
/// heartbeat, and its log as JSON lines, stored while it runs and when it
/// ends. The runner's log budget (`max_log_bytes`) bounds the log, and the
/// runner has redacted secret values from every event before it gets here.
#[derive(Debug, Default)]
struct AttemptEvents {
    progress: Mutex<Option<(u8, Option<String>)>>,
    log: Mutex<Vec<u8>>,
}

impl EventSink for AttemptEvents {
    fn event(&self, event: RunEvent) {
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let line = match event {
            RunEvent::Progress { percent, message } => {
                if let Ok(mut latest) = self.progress.lock() {
                    *latest = Some((percent, message));
                }
                return;
            }
            RunEvent::Log { level, message } => {
                json!({ "timestampMs": timestamp_ms, "level": level.as_str(), "message": message })
            }
            RunEvent::Output { stream, line } => {
                let stream = match stream {
                    crate::StdStream::Stdout => "stdout",
                    crate::StdStream::Stderr => "stderr",
                };
                json!({ "timestampMs": timestamp_ms, "stream": stream, "message": line })
            }
            RunEvent::Asset { key, size } => {
                json!({ "timestampMs": timestamp_ms, "asset": key, "size": size })
            }
            RunEvent::LogTruncated { limit_bytes } => json!({
                "timestampMs": timestamp_ms,
                "level": "warn",
                "message": format!("the log reached its budget of {limit_bytes} bytes; later lines are dropped"),
            }),
        };
        if let Ok(mut log) = self.log.lock()
            && serde_json::to_writer(&mut *log, &line).is_ok()
        {
            log.push(b'\n');
        }
    }
}

impl AttemptEvents {
    /// A copy of the log so far, if it is longer than `uploaded` bytes.
    fn log_if_longer(&self, uploaded: usize) -> Option<Vec<u8>> {
        let log = self.log.lock().ok()?;
        (log.len() > uploaded).then(|| log.clone())
    }
}

/// Set when the orchestrator no longer wants an attempt's result (it was
/// cancelled or superseded), so no callback is sent.
#[derive(Debug, Default)]
struct Abandoned(std::sync::atomic::AtomicBool);

async fn run_attempt(host: Arc<Host>, dispatch: Dispatch) {
    let cancel = CancelToken::new();
    let events = Arc::new(AttemptEvents::default());
    let abandoned = Arc::new(Abandoned::default());
    let in_flight = InFlight {
        attempt: dispatch.attempt,
        attempt_token: dispatch.attempt_token.clone(),
        cancel: cancel.clone(),
        abandoned: abandoned.clone(),
    };
    let _registered = InFlightGuard::register(&host, &dispatch, in_flight.clone());
    let attempt = in_flight.clone();
    let heartbeats = tokio::spawn(heartbeat_loop(
        host.clone(),
        dispatch.clone(),
        in_flight,
        events.clone(),
    ));
    let mut live_log = tokio::spawn(live_log_loop(
        host.clone(),
        dispatch.clone(),
        events.clone(),
    ));
    let callback = {
        let _slot = take_slot(&host, &dispatch, &attempt).await;
        if cancel.is_cancelled() {
            None
        } else {
            let mut callback = execute(&host, &dispatch, cancel.clone(), events.clone()).await;
            // An interim upload must not land after the final one.
            live_log.abort();
            let _ = (&mut live_log).await;
            if !abandoned.0.load(std::sync::atomic::Ordering::SeqCst) {
                callback.logs_path = store_log(&host, &dispatch, &events).await;
            }
            Some(callback)
        }
    };
    live_log.abort();
    heartbeats.abort();
    let Some(callback) = callback else { return };
    if abandoned.0.load(std::sync::atomic::Ordering::SeqCst) {
        tracing::info!(run_id = %dispatch.run_id, attempt = dispatch.attempt, "attempt abandoned; no callback");
        return;
    }
    send_callback(&host, &dispatch, &callback).await;
}

/// Keeps an attempt in [`Host::in_flight`] while it lives.
struct InFlightGuard {
    host: Arc<Host>,
    run_id: String,
    attempt: u32,
}

impl InFlightGuard {
    fn register(host: &Arc<Host>, dispatch: &Dispatch, in_flight: InFlight) -> Self {
        if let Ok(mut attempts) = host.in_flight.lock() {
            attempts.insert(dispatch.run_id.clone(), in_flight);
        }
        Self {
            host: host.clone(),
            run_id: dispatch.run_id.clone(),
            attempt: dispatch.attempt,
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut attempts) = self.host.in_flight.lock()
            && attempts
                .get(&self.run_id)
                .is_some_and(|a| a.attempt == self.attempt)
        {
            attempts.remove(&self.run_id);
        }
    }
}

/// Waits for one of the host's slots; `None` if the attempt is cancelled
/// first (it then frees its place at once, not when a slot frees). An
/// attempt that waited at least [`START_REPORT_AFTER`] (the host holds
/// dispatches beyond its capacity when it registered a `prefetch`, and
/// queues any surplus) first tells the orchestrator that it starts now, so
/// that its timeout counts from here; if the orchestrator has given up on
/// it meanwhile, it is abandoned and does not run.
async fn take_slot<'a>(
    host: &'a Host,
    dispatch: &Dispatch,
    attempt: &InFlight,
) -> Option<tokio::sync::SemaphorePermit<'a>> {
    if let Ok(slot) = host.slots.try_acquire() {
        return Some(slot);
    }
    let waiting_since = std::time::Instant::now();
    let slot = tokio::select! {
        slot = host.slots.acquire() => slot.ok(),
        () = attempt.cancel.cancelled() => return None,
    };
    let waited = waiting_since.elapsed();
    if waited >= START_REPORT_AFTER {
        tracing::debug!(run_id = %dispatch.run_id, attempt = dispatch.attempt, waited_ms = waited.as_millis(), "held attempt starts; reporting its start");
        let beat = Heartbeat {
            started: true,
            ..heartbeat_of(dispatch, None)
        };
        send_heartbeat(host, dispatch, attempt, &beat).await;
    }
    slot
}

/// How long a held attempt waits before its start is worth reporting.
const START_REPORT_AFTER: Duration =
    Duration::from_millis(pipeweave_protocol::wire::START_REPORT_AFTER_MS);

/// A heartbeat of `dispatch`'s attempt with the latest progress, if any.
fn heartbeat_of(dispatch: &Dispatch, latest: Option<(u8, Option<String>)>) -> Heartbeat {
    Heartbeat {
        run_id: dispatch.run_id.clone(),
        attempt: dispatch.attempt,
        attempt_token: Some(dispatch.attempt_token.clone()),
        progress: latest.as_ref().map(|(percent, _)| *percent),
        message: latest.and_then(|(_, message)| message),
        started: false,
    }
}

/// Sends one heartbeat and acts on the answer; returns whether the attempt
/// is still wanted (false: it was cancelled or superseded, and is now
/// abandoned).
async fn send_heartbeat(
    host: &Host,
    dispatch: &Dispatch,
    attempt: &InFlight,
    beat: &Heartbeat,
) -> bool {
    match host
        .http
        .post(&dispatch.heartbeat_url)
        .json(beat)
        .send()
        .await
    {
        Ok(response)
            if response.status() == StatusCode::CONFLICT
                || response.status() == StatusCode::NOT_FOUND =>
        {
            tracing::info!(run_id = %dispatch.run_id, attempt = dispatch.attempt, "attempt superseded; interrupting it");
            attempt.abandon();
            false
        }
        Ok(response) if response.status().is_success() => {
            if response
                .json::<HeartbeatResponse>()
                .await
                .is_ok_and(|answer| answer.cancel)
            {
                tracing::info!(run_id = %dispatch.run_id, "attempt cancelled by the orchestrator");
                attempt.abandon();
                return false;
            }
            true
        }
        Ok(response) => {
            tracing::warn!(run_id = %dispatch.run_id, status = %response.status(), "heartbeat refused");
            true
        }
        Err(error) => {
            tracing::warn!(run_id = %dispatch.run_id, "heartbeat failed: {error}");
            true
        }
    }
}

async fn heartbeat_loop(
    host: Arc<Host>,
    dispatch: Dispatch,
    attempt: InFlight,
    events: Arc<AttemptEvents>,
) {
    let interval = Duration::from_millis(dispatch.heartbeat_interval_ms.max(50));
    loop {
        // The claim started the attempt's heartbeat clock, so the first
        // beat is due one interval after the dispatch, not at once: an
        // attempt shorter than its interval costs the orchestrator no
        // heartbeat at all.
        tokio::time::sleep(interval).await;
        let latest = events.progress.lock().ok().and_then(|p| p.clone());
        if !send_heartbeat(&host, &dispatch, &attempt, &heartbeat_of(&dispatch, latest)).await {
            return;
        }
    }
}

/// A failure callback carrying `error`.
fn failure_callback(error: AttemptError) -> Callback {
    Callback {
        status: CallbackStatus::Failure,
        attempt: None,
        attempt_token: None,
        result: ResultRef::default(),
        logs_path: None,
        selected_next: None,
        error: Some(error),
    }
}

/// A failure callback for a reason the host decided (the module could not
/// be fetched or loaded, the runner failed).
fn failure(reason: FailureReason, message: String, retryable: bool) -> Callback {
    failure_callback(AttemptError {
        retryable,
        ..AttemptError::decided(reason, message)
    })
}

/// The loaded task for a dispatch, fetching and compiling it the first
/// time its code hash is seen.
async fn load(host: &Host, dispatch: &Dispatch) -> Result<Arc<LoadedTask>, Callback> {
    let expected: CodeHash = dispatch.code_hash.parse().map_err(|_| {
        failure(
            FailureReason::InvalidComponent,
            format!("codeHash {:?} is not a module digest", dispatch.code_hash),
            false,
        )
    })?;
    let cell = {
        let mut modules = host.modules.lock().map_err(|_| {
            failure(
                FailureReason::DispatchFailed,
                "the host's module table is poisoned".into(),
                true,
            )
        })?;
        modules
            .entry(dispatch.code_hash.clone())
            .or_default()
            .clone()
    };
    let task = cell
        .get_or_try_init(|| async {
            let url = format!(
                "{}/api/modules/{}",
                host.config.orchestrator_url, dispatch.code_hash
            );
            let response = host.http.get(&url).send().await.map_err(|e| {
                failure(
                    FailureReason::DispatchFailed,
                    format!("cannot fetch module {url}: {e}"),
                    true,
                )
            })?;
            if !response.status().is_success() {
                return Err(failure(
                    FailureReason::InvalidComponent,
                    format!("cannot fetch module {url}: {}", response.status()),
                    false,
                ));
            }
            let bytes = response.bytes().await.map_err(|e| {
                failure(
                    FailureReason::DispatchFailed,
                    format!("cannot fetch module {url}: {e}"),
                    true,
                )
            })?;
            if CodeHash::of(&bytes) != expected {
                return Err(failure(
                    FailureReason::DispatchFailed,
                    format!("module {url} does not hash to {expected}"),
                    true,
                ));
            }
            let task = host.runner.load(bytes.to_vec()).await.map_err(|e| {
                failure(
                    FailureReason::InvalidComponent,
                    format!("cannot load module {expected}: {e}"),
                    false,
                )
            })?;
            tracing::info!(code_hash = %expected, task_id = %task.descriptor().id, "module loaded");
            Ok(task)
        })
        .await?;
    if task.descriptor().id != dispatch.task_id {
        return Err(failure(
            FailureReason::InvalidComponent,
            format!(
                "module {expected} implements task {:?}, not {:?}",
                task.descriptor().id,
                dispatch.task_id
            ),
            false,
        ));
    }
    Ok(task.clone())
}

async fn execute(
    host: &Host,
    dispatch: &Dispatch,
    cancel: CancelToken,
    events: Arc<AttemptEvents>,
) -> Callback {
    let task = match load(host, dispatch).await {
        Ok(task) => task,
        Err(callback) => return callback,
    };
    let hydrated = match hydrate(host, dispatch).await {
        Ok(hydrated) => hydrated,
        Err(callback) => return callback,
    };
    let mut request = RunRequest::new(hydrated.input.clone());
    request.run_id = dispatch.run_id.clone();
    request.pipeline_run_id = dispatch.pipeline_run_id.clone();
    request.attempt = dispatch.attempt;
    request.code_version = dispatch.code_version;
    request.previous_attempts = dispatch.previous_attempts.clone();
    request.secrets = match attempt_secrets(host, dispatch, &task) {
        Ok(secrets) => secrets,
        Err(message) => return failure(FailureReason::DispatchFailed, message, true),
    };
    request.upstream = hydrated.upstream.clone();
    request.upstream_assets = hydrated.upstream_assets.clone();
    request.timeout = Some(Duration::from_millis(dispatch.timeout_ms));
    request.cancel = Some(cancel);
    request.events = events;
    match host.runner.run(&task, request).await {
        Ok(report) => match &report.outcome {
            Ok(success) => match dehydrate(host, dispatch, &report, &success.output).await {
                Ok(result) => Callback {
                    status: CallbackStatus::Success,
                    attempt: None,
                    attempt_token: None,
                    result,
                    logs_path: None,
                    selected_next: success.run_next.clone(),
                    error: None,
                },
                Err(message) => failure(FailureReason::StorageFailed, message, true),
            },
            Err(failed) => failure_callback(AttemptError {
                message: failed.message.clone(),
                code: failed.code.clone(),
                retryable: failed.retryable,
                reason: Some(failed.reason),
                details: failed.details.clone(),
            }),
        },
        Err(error) => failure(
            FailureReason::DispatchFailed,
            format!("the host could not run the attempt: {error}"),
            true,
        ),
    }
}

/// The secrets an attempt gets: those its task declared, from the
/// dispatch's `sealedSecrets` (kept by the orchestrator) and from the
/// host's own [`SecretStore`], which wins on a name both hold. Sealed
/// secrets that do not open fail the attempt (retryable: the key may be
/// rotated into place).
fn attempt_secrets(
    host: &Host,
    dispatch: &Dispatch,
    task: &LoadedTask,
) -> Result<HashMap<String, String>, String> {
    let mut secrets = HashMap::new();
    if let Some(sealed) = &dispatch.sealed_secrets {
        let opened = host
            .secret_box
            .open_dispatch(sealed, &dispatch.run_id, dispatch.attempt)
            .map_err(|error| format!("cannot open the dispatch's secrets: {error}"))?;
        let declared = &task.descriptor().secrets;
        secrets.extend(
            opened
                .into_iter()
                .filter(|(name, _)| declared.contains(name)),
        );
    }
    secrets.extend(host.config.secrets.for_task(task.descriptor()));
    Ok(secrets)
}

/// The run whose prefix (`runs/{runId}/`) the attempt writes under: its
/// pipeline run, or the task run itself when standalone.
fn run_prefix(dispatch: &Dispatch) -> &str {
    dispatch
        .pipeline_run_id
        .as_deref()
        .unwrap_or(&dispatch.run_id)
}

/// Opens the attempt's storage token and its backend; `need` says why
/// storage is needed, for the error when the dispatch has no token.
fn open_storage(
    host: &Host,
    dispatch: &Dispatch,
    need: &str,
) -> Result<(pipeweave_storage::Grant, Arc<dyn ObjectStore>), String> {
    let token = dispatch.storage_token.as_deref().ok_or_else(|| {
        format!("the attempt {need}, but its dispatch carries no storage token (see the orchestrator's log)")
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let grant = host
        .sealer
        .open(token, now)
        .map_err(|error| format!("cannot use the attempt's storage token: {error}"))?;
    if grant.run_id != dispatch.run_id {
        return Err(format!(
            "the storage token is for run {}, not {}",
            grant.run_id, dispatch.run_id
        ));
    }
    let store = grant.backend.open().map_err(|error| error.to_string())?;
    Ok((grant, store))
}

/// What hydration hands the guest: the input, the upstream outputs, and
/// the upstream assets downloaded into a directory that lives as long as
/// the attempt.
struct Hydrated {
    input: Value,
    upstream: BTreeMap<String, Value>,
    upstream_assets: HashMap<String, std::path::PathBuf>,
    _assets_dir: Option<tempfile::TempDir>,
}

/// Hydration: the input (inline, or read from `inputPath`), each upstream
/// task's output (inline, or read from its `outputPath`) and its assets
/// (streamed to local files, which the runner copies into the sandbox when
/// the guest opens them; on a key that two upstream tasks share, the first
/// task in id order wins), all through the storage token. A stored object
/// that is gone or not JSON fails the attempt for good; any other storage
/// error may pass, so it is retryable.
async fn hydrate(host: &Host, dispatch: &Dispatch) -> Result<Hydrated, Callback> {
    read_stored(host, dispatch).await.map_err(|problem| {
        failure(
            FailureReason::StorageFailed,
            problem.message,
            problem.retryable,
        )
    })
}

/// Why hydration failed, and whether trying again may help.
struct StorageProblem {
    message: String,
    retryable: bool,
}

async fn read_stored(host: &Host, dispatch: &Dispatch) -> Result<Hydrated, StorageProblem> {
    let fail = |message: String, retryable: bool| StorageProblem { message, retryable };
    let needs_storage = dispatch.input_path.is_some()
        || dispatch
            .upstream_refs
            .values()
            .any(|r| r.output.is_none() && r.output_path.is_some() || !r.assets.is_empty());
    let mut hydrated = Hydrated {
        input: dispatch.initial_input.clone().unwrap_or(Value::Null),
        upstream: BTreeMap::new(),
        upstream_assets: HashMap::new(),
        _assets_dir: None,
    };
    if !needs_storage {
        hydrated.upstream = dispatch
            .upstream_refs
            .iter()
            .filter_map(|(task, r)| r.output.clone().map(|output| (task.clone(), output)))
            .collect();
        return Ok(hydrated);
    }
    let (grant, store) =
        open_storage(host, dispatch, "reads stored data").map_err(|m| fail(m, true))?;
    let readable = |field: &str, path: &str| {
        grant
            .scope
            .check(Access::Read, path)
            .map_err(|error| fail(format!("{field}: {error}"), false))
    };
    let storage_error = |what: &str, error: pipeweave_storage::object_store::Error| {
        let gone = matches!(
            error,
            pipeweave_storage::object_store::Error::NotFound { .. }
        );
        fail(format!("cannot read {what}: {error}"), !gone)
    };
    let read_json = |field: String, path: String| {
        let store = store.clone();
        async move {
            let location = readable(&field, &path)?;
            let bytes = match store.get(&location).await {
                Ok(found) => found.bytes().await,
                Err(error) => Err(error),
            }
            .map_err(|error| storage_error(&path, error))?;
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|error| fail(format!("{path} ({field}) is not JSON: {error}"), false))
        }
    };
    if let Some(path) = &dispatch.input_path {
        hydrated.input = read_json("inputPath".to_owned(), path.clone()).await?;
    }
    for (task, result) in &dispatch.upstream_refs {
        let output = match (&result.output, &result.output_path) {
            (Some(output), _) => output.clone(),
            (None, Some(path)) => {
                read_json(format!("upstreamRefs.{task}.outputPath"), path.clone()).await?
            }
            (None, None) => Value::Null,
        };
        hydrated.upstream.insert(task.clone(), output);
    }
    let assets: Vec<(&String, &pipeweave_protocol::wire::AssetRef)> = dispatch
        .upstream_refs
        .values()
        .flat_map(|result| result.assets.iter())
        .collect();
    if !assets.is_empty() {
        let dir = tempfile::tempdir().map_err(|error| {
            fail(
                format!("cannot make a directory for upstream assets: {error}"),
                true,
            )
        })?;
        for (index, (key, asset)) in assets.into_iter().enumerate() {
            if hydrated.upstream_assets.contains_key(key) {
                continue;
            }
            let location = readable(&format!("upstream asset {key:?}"), &asset.path)?;
            let file = dir.path().join(format!("{index}"));
            pipeweave_storage::transfer::download_file(store.clone(), &location, &file)
                .await
                .map_err(|error| match error {
                    pipeweave_storage::transfer::DownloadError::Store(error) => {
                        storage_error(&asset.path, error)
                    }
                    other => fail(other.to_string(), true),
                })?;
            hydrated.upstream_assets.insert(key.clone(), file);
        }
        hydrated._assets_dir = Some(dir);
    }
    Ok(hydrated)
}

/// Where the attempt's log is stored: `runs/{prefix}/logs/{runId}/{attempt}.jsonl`
/// in the backend its storage token opens.
fn log_location(
    host: &Host,
    dispatch: &Dispatch,
) -> Result<
    (
        Arc<dyn ObjectStore>,
        pipeweave_storage::object_store::path::Path,
    ),
    String,
> {
    let (grant, store) = open_storage(host, dispatch, "has a log")?;
    let path = grant
        .scope
        .check(
            Access::Write,
            &layout::logs(run_prefix(dispatch), &dispatch.run_id, dispatch.attempt),
        )
        .map_err(|error| error.to_string())?;
    Ok((store, path))
}

/// Stores the attempt's log, if it has one, at
/// `runs/{prefix}/logs/{runId}/{attempt}.jsonl`, whether it succeeded or
/// failed: a failed attempt's log is what its dead-letter entry shows.
/// Returns its path. The log is diagnostic, so a failure to store it is
/// logged here and does not fail the attempt.
async fn store_log(host: &Host, dispatch: &Dispatch, events: &AttemptEvents) -> Option<String> {
    let log = events
        .log
        .lock()
        .map(|mut log| std::mem::take(&mut *log))
        .unwrap_or_default();
    if log.is_empty() || dispatch.storage_token.is_none() {
        return None;
    }
    let run_id = &dispatch.run_id;
    let stored = async {
        let (store, path) = log_location(host, dispatch)?;
        store
            .put(&path, log.into())
            .await
            .map_err(|error| format!("cannot write {path}: {error}"))?;
        Ok::<_, String>(path.to_string())
    }
    .await;
    stored
        .inspect_err(|error| tracing::warn!(%run_id, attempt = dispatch.attempt, "the attempt's log was not stored: {error}"))
        .ok()
}

/// The shortest time between two interim uploads of a log.
const MIN_LIVE_LOG_INTERVAL: Duration = Duration::from_millis(200);
/// The longest wait between interim log uploads, whatever the heartbeat
/// interval (60 s by default): `pipeweave logs -f` should show a line
/// within seconds.
const MAX_LIVE_LOG_INTERVAL: Duration = Duration::from_secs(2);

/// Stores the attempt's log so far while it runs, at the heartbeat
/// interval (at most every 2 s) and only when new lines arrived since the last upload, at the
/// same path as the final log, so `pipeweave logs -f` can follow a run by
/// polling it. [`run_attempt`] stops this before the final [`store_log`],
/// which replaces the object. A failed interim upload is logged (a warning
/// the first time, then at debug) and never fails the attempt.
async fn live_log_loop(host: Arc<Host>, dispatch: Dispatch, events: Arc<AttemptEvents>) {
    if dispatch.storage_token.is_none() {
        return;
    }
    let interval = Duration::from_millis(dispatch.heartbeat_interval_ms)
        .clamp(MIN_LIVE_LOG_INTERVAL, MAX_LIVE_LOG_INTERVAL);
    let (run_id, attempt) = (&dispatch.run_id, dispatch.attempt);
    let mut location = None;
    let mut uploaded = 0;
    let mut warned = false;
    loop {
        tokio::time::sleep(interval).await;
        let Some(log) = events.log_if_longer(uploaded) else {
            continue;
        };
        let (store, path) = match &location {
            Some(location) => location,
            None => match log_location(&host, &dispatch) {
                Ok(found) => location.insert(found),
                Err(error) => {
                    tracing::warn!(%run_id, attempt, "the attempt's log cannot be stored while it runs: {error}");
                    return;
                }
            },
        };
        let length = log.len();
        match store.put(path, log.into()).await {
            Ok(_) => {
                uploaded = length;
                tracing::debug!(%run_id, attempt, bytes = length, "stored the log so far");
            }
            Err(error) if !warned => {
                warned = true;
                tracing::warn!(%run_id, attempt, "cannot store the log so far (retrying at the next interval): {error}");
            }
            Err(error) => {
                tracing::debug!(%run_id, attempt, "cannot store the log so far: {error}");
            }
        }
    }
}

/// Stores a successful attempt's results where its storage token allows
/// (dehydration): every asset, streamed from the sandbox, and the output
/// when it is over [`INLINE_LIMIT_BYTES`]. Small outputs of attempts
/// without assets stay inline and need no storage. If any write fails,
/// what was written is deleted and the attempt fails: a run that does not
/// succeed leaves no objects.
async fn dehydrate(
    host: &Host,
    dispatch: &Dispatch,
    report: &crate::RunReport,
    output: &Value,
) -> Result<ResultRef, String> {
    let serialized =
        serde_json::to_vec(output).map_err(|e| format!("cannot encode the output: {e}"))?;
    if report.assets.is_empty() && serialized.len() <= INLINE_LIMIT_BYTES {
        return Ok(ResultRef {
            output: Some(output.clone()),
            ..ResultRef::default()
        });
    }
    let (grant, store) = open_storage(host, dispatch, "produced assets or a large output")?;
    let run_id = &dispatch.run_id;
    let started = std::time::Instant::now();
    let mut written = Vec::new();
    let stored = async {
        let mut result = ResultRef::default();
        for asset in &report.assets {
            let path = grant
                .scope
                .check(
                    Access::Write,
                    &layout::asset(run_prefix(dispatch), run_id, &asset.key),
                )
                .map_err(|error| error.to_string())?;
            let file = report
                .open_asset(&asset.key)
                .map_err(|error| format!("cannot read asset {:?}: {error}", asset.key))?;
            written.push(path.clone());
            let size = pipeweave_storage::transfer::upload_file(
                store.clone(),
                &path,
                &mut tokio::fs::File::from_std(file),
            )
            .await
            .map_err(|error| format!("asset {:?}: {error}", asset.key))?;
            result.assets.insert(
                asset.key.clone(),
                pipeweave_protocol::wire::AssetRef {
                    path: path.to_string(),
                    size,
                    kind: asset.kind,
                },
            );
        }
        if serialized.len() > INLINE_LIMIT_BYTES {
            let path = grant
                .scope
                .check(Access::Write, &layout::output(run_prefix(dispatch), run_id))
                .map_err(|error| error.to_string())?;
            let size = serialized.len() as u64;
            written.push(path.clone());
            store
                .put(&path, serialized.into())
                .await
                .map_err(|error| format!("cannot write the output to {path}: {error}"))?;
            result.output_path = Some(path.to_string());
            result.output_size = Some(size);
        } else {
            result.output = Some(output.clone());
        }
        Ok::<_, String>(result)
    }
    .await;
    match &stored {
        Ok(result) => {
            let bytes: u64 = result.assets.values().map(|a| a.size).sum::<u64>()
                + result.output_size.unwrap_or(0);
            tracing::info!(
                run_id = %run_id,
                objects = written.len(),
                bytes,
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "dehydrated"
            );
        }
        Err(_) => {
            for path in &written {
                let _ = store.delete(path).await;
            }
        }
    }
    stored
}

/// Reports the attempt: with other attempts' callbacks in one request when
/// the dispatch names a `callbacksUrl` (see [`callback_sender`]), else
/// alone to its `callbackUrl`. Returns once it is delivered, refused, or
/// given up on.
async fn send_callback(host: &Host, dispatch: &Dispatch, callback: &Callback) {
    let mut callback = callback.clone();
    callback.attempt = Some(dispatch.attempt);
    callback.attempt_token = Some(dispatch.attempt_token.clone());
    let single = SingleCallback {
        url: dispatch.callback_url.clone(),
        run_id: dispatch.run_id.clone(),
        callback,
    };
    let Some(batch_url) = dispatch.callbacks_url.clone() else {
        return send_single(&host.http, &single).await;
    };
    let (delivered, done) = tokio::sync::oneshot::channel();
    let pending = PendingCallback {
        batch_url,
        single,
        delivered,
    };
    if let Err(unsent) = host.callbacks.send(pending) {
        // The sender is gone (shutting down): go alone.
        return send_single(&host.http, &unsent.0.single).await;
    }
    let _ = done.await;
}

/// A callback and where it goes on its own.
#[derive(Debug)]
struct SingleCallback {
    url: String,
    run_id: String,
    callback: Callback,
}

/// A callback waiting for [`callback_sender`].
#[derive(Debug)]
struct PendingCallback {
    batch_url: String,
    single: SingleCallback,
    delivered: tokio::sync::oneshot::Sender<()>,
}

/// Most callbacks the host sends in one request.
const HOST_CALLBACK_BATCH: usize = 256;

/// Sends queued callbacks: whatever has queued while the previous request
/// was under way goes in the next one (`POST /api/callbacks`), so an idle
/// host sends each callback at once and a busy one sends one request per
/// round trip instead of one per attempt.
async fn callback_sender(
    http: reqwest::Client,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<PendingCallback>,
) {
    let mut taken = Vec::with_capacity(HOST_CALLBACK_BATCH);
    while queue.recv_many(&mut taken, HOST_CALLBACK_BATCH).await > 0 {
        let mut by_url: BTreeMap<String, Vec<PendingCallback>> = BTreeMap::new();
        for pending in taken.drain(..) {
            by_url
                .entry(pending.batch_url.clone())
                .or_default()
                .push(pending);
        }
        for (url, group) in by_url {
            match batch_bodies(&group, HOST_CALLBACK_BATCH_BYTES) {
                Some(bodies) => {
                    for (chunk, body) in bodies {
                        send_batch(&http, &url, chunk, body).await;
                    }
                }
                None => {
                    for pending in &group {
                        send_single(&http, &pending.single).await;
                    }
                }
            }
            for pending in group {
                let _ = pending.delivered.send(());
            }
        }
    }
}

/// Most bytes of callbacks the host puts in one request, well under the
/// orchestrator's default body limit (1 MiB): a batch of large inline
/// outputs goes in several requests.
const HOST_CALLBACK_BATCH_BYTES: usize = 256 * 1024;

/// One item of a [`pipeweave_protocol::wire::CallbackBatch`], encoded
/// without cloning the callback.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchedCallbackRef<'a> {
    run_id: &'a str,
    #[serde(flatten)]
    callback: &'a Callback,
}

/// `group` as request bodies
/// ([`pipeweave_protocol::wire::CallbackBatch`]es) of at most `limit` bytes
/// each (a single larger callback goes alone), with the callbacks each
/// carries; `None` if one cannot be encoded.
fn batch_bodies<'a>(
    group: &'a [PendingCallback],
    limit: usize,
) -> Option<Vec<pipeweave_protocol::wire::BatchBody<'a, PendingCallback>>> {
    let as_json = |pending: &'a PendingCallback| BatchedCallbackRef {
        run_id: &pending.single.run_id,
        callback: &pending.single.callback,
    };
    pipeweave_protocol::wire::batch_bodies("callbacks", group, as_json, limit)
        .inspect_err(|error| {
            tracing::error!("cannot encode a batch of callbacks ({error}); sending each alone")
        })
        .ok()
}

/// Sends `group`, encoded as `body`, in one request, retrying with backoff while the
/// orchestrator is unreachable or answers 5xx. If it refuses the batch as
/// a whole with a 4xx (a body it cannot take), each callback goes alone.
async fn send_batch(http: &reqwest::Client, url: &str, group: &[PendingCallback], body: Vec<u8>) {
    let body = bytes::Bytes::from(body);
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        let request = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                match response.json::<CallbackBatchResponse>().await {
                    Ok(answer) => {
                        for result in answer.results {
                            if result.http_status == 200 {
                                tracing::debug!(run_id = %result.run_id, "callback delivered");
                            } else {
                                tracing::warn!(run_id = %result.run_id, status = result.http_status, "callback refused: {}", result.error.unwrap_or_default());
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%url, callbacks = group.len(), "callbacks delivered; their answer is unreadable: {error}")
                    }
                }
                return;
            }
            Ok(response)
                if response.status().is_client_error()
                    && response.status() != StatusCode::TOO_MANY_REQUESTS =>
            {
                let status = response.status();
                tracing::warn!(%url, %status, callbacks = group.len(), "the orchestrator refused a batch of callbacks; sending each alone");
                for pending in group {
                    send_single(http, &pending.single).await;
                }
                return;
            }
            Ok(response) => {
                tracing::warn!(%url, status = %response.status(), callbacks = group.len(), "callbacks failed; retrying")
            }
            Err(error) => {
                tracing::warn!(%url, callbacks = group.len(), "callbacks failed; retrying: {error}")
            }
        }
        if started.elapsed() > CALLBACK_PATIENCE {
            tracing::error!(%url, callbacks = group.len(), "giving up on callbacks after {CALLBACK_PATIENCE:?}");
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Sends one callback alone, retrying with backoff while the orchestrator
/// is unreachable or answers 5xx; a 4xx is final (the attempt is over).
async fn send_single(http: &reqwest::Client, single: &SingleCallback) {
    let (run_id, attempt) = (&single.run_id, single.callback.attempt.unwrap_or(0));
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match http.post(&single.url).json(&single.callback).send().await {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(%run_id, attempt, "callback delivered");
                return;
            }
            Ok(response)
                if response.status().is_client_error()
                    && response.status() != StatusCode::TOO_MANY_REQUESTS =>
            {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                tracing::warn!(%run_id, %status, "callback refused: {text}");
                return;
            }
            Ok(response) => {
                tracing::warn!(%run_id, status = %response.status(), "callback failed; retrying")
            }
            Err(error) => {
                tracing::warn!(%run_id, "callback failed; retrying: {error}")
            }
        }
        if started.elapsed() > CALLBACK_PATIENCE {
            tracing::error!(%run_id, "giving up on the callback after {CALLBACK_PATIENCE:?}");
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeweave_protocol::wire::CallbackBatch;

    fn pending(run_id: &str, output_bytes: usize) -> PendingCallback {
        let (delivered, _) = tokio::sync::oneshot::channel();
        PendingCallback {
            batch_url: "http://orchestrator/api/callbacks".into(),
            single: SingleCallback {
                url: format!("http://orchestrator/api/callback/{run_id}"),
                run_id: run_id.into(),
                callback: Callback {
                    status: CallbackStatus::Success,
                    attempt: Some(1),
                    attempt_token: Some("t".into()),
                    result: ResultRef {
                        output: Some(json!("x".repeat(output_bytes))),
                        ..ResultRef::default()
                    },
                    logs_path: None,
                    selected_next: None,
                    error: None,
                },
            },
            delivered,
        }
    }

    /// How bodies are split by size is `wire::batch_bodies`' test; here,
    /// that what the host sends decodes as the orchestrator reads it.
    #[test]
    fn batch_bodies_decode_as_callback_batches() {
        let group: Vec<PendingCallback> = (0..10)
            .map(|i| pending(&format!("trun_{i}"), if i == 7 { 5000 } else { 100 }))
            .collect();
        let bodies = batch_bodies(&group, 1000).expect("callbacks encode");
        assert!(bodies.len() > 1, "split under the limit");
        let mut seen = 0;
        for (chunk, body) in &bodies {
            let batch: CallbackBatch = serde_json::from_slice(body).expect("a CallbackBatch");
            assert_eq!(batch.callbacks.len(), chunk.len());
            for (item, pending) in batch.callbacks.iter().zip(chunk.iter()) {
                assert_eq!(item.run_id, pending.single.run_id);
                assert_eq!(item.callback, pending.single.callback);
                seen += 1;
            }
        }
        assert_eq!(seen, group.len());
    }
}
