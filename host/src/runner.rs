//! The runner: loads task components and runs attempts, each in a fresh
//! sandbox. `pipeweave run` and the host's dispatch server both use it, so
//! what a task author debugs locally is what production runs.
//!
//! Loading compiles a component once (or takes it from the cache), links it
//! against WASI, `wasi:http` and the `pipeweave:task/runtime` functions,
//! and calls `describe`. Running an attempt creates a store with the task's
//! limits, instantiates from the pre-linked component, calls `run`, and
//! turns whatever happened (a result, the task's own error, a trap, a
//! timeout, a limit) into a [`RunReport`]. A misbehaving guest fails its
//! own attempt; the runner goes on with the next.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipeweave_protocol::{
    CodeHash, Credential, FailureReason, LogLevel, OutboundRule, OutboundRules, PreviousAttempt,
    RetryBackoff, TaskDescriptor,
};
use serde_json::Value;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::bindings::{TaskWorld, TaskWorldPre, runtime, types};
use crate::cache::ComponentCache;
use crate::cancel::CancelToken;
use crate::engine::{EngineConfig, TaskEngine};
use crate::error::{Error, Result};
use crate::events::{
    CapturedStream, DiscardEvents, EventSink, LogBudget, RedactingSink, RunEvent, StdStream,
};
use crate::human::{format_bytes, format_duration};
use crate::sandbox::{SandboxDir, SandboxPool};
use crate::secrets::Redactor;
use crate::state::{
    ASSETS_DIR, AssetRecord, InjectedCredential, Interrupt, TaskState, TaskStateParts,
};

/// How the runner treats every task. Per-task limits come from the task's
/// descriptor and may be overridden per attempt in [`RunRequest`].
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The wasmtime engine.
    pub engine: EngineConfig,
    /// Where compiled components are kept between processes; `None` keeps
    /// them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Where sandbox directories are made; `None` is the system temp dir.
    /// A tmpfs here makes attempts that write files cheaper.
    pub sandbox_parent: Option<PathBuf>,
    /// Memory limit for a task that declares none, in bytes.
    pub default_memory_limit_bytes: u64,
    /// Largest output JSON accepted, in bytes; larger fails the attempt
    /// with `output_too_large` (large data belongs in assets).
    pub max_output_bytes: usize,
    /// Log bytes one attempt may write (its log calls, stdout and stderr
    /// together); later lines are dropped and the drop is reported once.
    pub max_log_bytes: usize,
    /// Time limit for a component's `describe`.
    pub describe_timeout: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            cache_dir: None,
            sandbox_parent: None,
            default_memory_limit_bytes: 256 << 20,
            max_output_bytes: 16 << 20,
            max_log_bytes: 1 << 20,
            describe_timeout: Duration::from_secs(10),
        }
    }
}

/// A compiled, linked and described task, ready to run any number of
/// attempts.
pub struct LoadedTask {
    code_hash: CodeHash,
    descriptor: TaskDescriptor,
    rules: Arc<OutboundRules>,
    /// Each declared credential with its host entry parsed.
    credentials: Vec<(OutboundRule, Credential)>,
    declared_secrets: Arc<[String]>,
    pre: TaskWorldPre<TaskState>,
    size_bytes: usize,
}

impl std::fmt::Debug for LoadedTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTask")
            .field("code_hash", &self.code_hash)
            .field("id", &self.descriptor.id)
            .finish_non_exhaustive()
    }
}

impl LoadedTask {
    /// The SHA-256 of the component's bytes.
    pub fn code_hash(&self) -> &CodeHash {
        &self.code_hash
    }

    /// What the task's `describe` returned.
    pub fn descriptor(&self) -> &TaskDescriptor {
        &self.descriptor
    }

    /// Size of the component in bytes.
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }
}

/// One attempt to run. [`RunRequest::new`] fills in what a local run needs.
pub struct RunRequest {
    /// The run's id; the same for every attempt.
    pub run_id: String,
    /// The pipeline run it belongs to.
    pub pipeline_run_id: Option<String>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The task's code version, as the orchestrator numbers it.
    pub code_version: u32,
    /// The input.
    pub input: Value,
    /// Upstream outputs by task id.
    pub upstream: BTreeMap<String, Value>,
    /// Earlier failed attempts, oldest first.
    pub previous_attempts: Vec<PreviousAttempt>,
    /// Secret values by name; the task sees only those it declared (the
    /// others are dropped), and their values are redacted from its events
    /// and its failure (see [`crate::secrets`]).
    pub secrets: HashMap<String, String>,
    /// Upstream assets by key: host files the task may read through
    /// `asset-path` (copied into its sandbox on first use).
    pub upstream_assets: HashMap<String, PathBuf>,
    /// Overrides the descriptor's timeout.
    pub timeout: Option<Duration>,
    /// Overrides the descriptor's memory limit.
    pub memory_limit_bytes: Option<u64>,
    /// Cancels the attempt from outside.
    pub cancel: Option<CancelToken>,
    /// Receives logs, output lines, progress and assets as they happen.
    pub events: Arc<dyn EventSink>,
}

impl std::fmt::Debug for RunRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRequest")
            .field("run_id", &self.run_id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl RunRequest {
    /// A first attempt of a fresh local run with this input.
    pub fn new(input: Value) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            run_id: format!("local-{nanos:x}"),
            pipeline_run_id: None,
            attempt: 1,
            code_version: 1,
            input,
            upstream: BTreeMap::new(),
            previous_attempts: Vec::new(),
            secrets: HashMap::new(),
            upstream_assets: HashMap::new(),
            timeout: None,
            memory_limit_bytes: None,
            cancel: None,
            events: Arc::new(DiscardEvents),
        }
    }
}

/// What a successful attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSuccess {
    /// The output.
    pub output: Value,
    /// Which allowed next tasks run: `None` is all of them, empty ends the
    /// branch.
    pub run_next: Option<Vec<String>>,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The named reason.
    pub reason: FailureReason,
    /// The error code later attempts see: the task's own for `task_error`,
    /// otherwise the reason in upper case (`TIMEOUT`).
    pub code: Option<String>,
    /// What went wrong, for people.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
    /// Extra detail: the task's own, or the wasm backtrace of a trap.
    pub details: Option<Value>,
}

impl Failure {
    fn host(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            code: Some(reason.error_code()),
            message: message.into(),
            retryable: reason.host_retryable(),
            details: None,
        }
    }
}

/// Everything known about a finished attempt.
#[derive(Debug)]
pub struct RunReport {
    /// The result, or why there is none.
    pub outcome: std::result::Result<TaskSuccess, Failure>,
    /// The code that ran.
    pub code_hash: CodeHash,
    /// Wall-clock time from sandbox creation to the end of the call.
    pub duration: Duration,
    /// The most linear memory the task had at once, in bytes.
    pub peak_memory_bytes: u64,
    /// Assets the attempt registered; empty if it failed (failed attempts
    /// keep nothing).
    pub assets: Vec<AssetRecord>,
    /// `scheme://host:port` of every origin the task reached.
    pub hosts_contacted: Vec<String>,
    /// Every request the allow-list refused.
    pub denied_requests: Vec<String>,
    /// The sandbox, kept while the report lives so assets can be read.
    sandbox: Option<SandboxDir>,
}

impl RunReport {
    /// Opens an asset of a successful attempt for reading. The path is
    /// resolved inside the sandbox, so a link the guest left cannot point
    /// the host elsewhere.
    pub fn open_asset(&self, key: &str) -> std::io::Result<std::fs::File> {
        let not_found =
            || std::io::Error::new(std::io::ErrorKind::NotFound, format!("no asset {key:?}"));
        if !self.assets.iter().any(|a| a.key == key) {
            return Err(not_found());
        }
        let sandbox = self.sandbox.as_ref().ok_or_else(not_found)?;
        let file = sandbox.open()?.open(Path::new(ASSETS_DIR).join(key))?;
        Ok(file.into_std())
    }

    /// Copies every asset into `dir` (created if missing), one file per key.
    pub fn copy_assets_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for asset in &self.assets {
            let mut from = self.open_asset(&asset.key)?;
            let mut to = std::fs::File::create(dir.join(&asset.key))?;
            std::io::copy(&mut from, &mut to)?;
        }
        Ok(())
    }
}

/// Loads and runs tasks. One per process; share it behind an `Arc`.
pub struct Runner {
    engine: TaskEngine,
    linker: Linker<TaskState>,
    cache: ComponentCache,
    sandboxes: SandboxPool,
    config: RunnerConfig,
    no_rules: Arc<OutboundRules>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// Builds the engine, the linker and the sandbox pool.
    pub fn new(config: RunnerConfig) -> Result<Self> {
        let engine = TaskEngine::new(config.engine.clone())?;
        let mut linker = Linker::new(engine.engine());
        let link_error =
            |e: wasmtime::Error| Error::Engine(format!("cannot link host functions: {e}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link_error)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(link_error)?;
        runtime::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).map_err(link_error)?;
        types::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).map_err(link_error)?;
        let cache = ComponentCache::new(config.cache_dir.clone());
        let max_idle = usize::try_from(config.engine.max_instances).unwrap_or(usize::MAX);
        let sandboxes = SandboxPool::new(config.sandbox_parent.as_deref(), max_idle)?;
        Ok(Self {
            engine,
            linker,
            cache,
            sandboxes,
            config,
            no_rules: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Loads a component from a file.
    pub async fn load_file(&self, path: &Path) -> Result<Arc<LoadedTask>> {
        let bytes = tokio::fs::read(path).await.map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load(bytes).await
    }

    /// Loads a component: compiles it (or takes it from the cache), links
    /// it, and calls `describe`. Loading the same bytes again is a lookup.
    pub async fn load(&self, bytes: Vec<u8>) -> Result<Arc<LoadedTask>> {
        let code_hash = CodeHash::of(&bytes);
        if let Some(task) = self.cache.loaded(&code_hash) {
            return Ok(task);
        }
        let size_bytes = bytes.len();
        let component = self
            .cache
            .compile(self.engine.engine(), &code_hash, bytes)
            .await?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| Error::NotATask(format!("{e:#}")))?;
        let pre = TaskWorldPre::new(instance_pre).map_err(|e| Error::NotATask(format!("{e:#}")))?;
        let descriptor = self.describe(&pre).await?;
        descriptor.validate()?;
        let rules = Arc::new(descriptor.outbound_rules()?);
        let credentials = descriptor
            .credentials
            .iter()
            .map(|credential| {
                let rule = credential.host.parse::<OutboundRule>().map_err(|source| {
                    pipeweave_protocol::DescriptorError::OutboundHost {
                        task: descriptor.id.clone(),
                        source,
                    }
                })?;
                Ok((rule, credential.clone()))
            })
            .collect::<Result<_>>()?;
        let task = Arc::new(LoadedTask {
            code_hash: code_hash.clone(),
            credentials,
            declared_secrets: descriptor.secrets.clone().into(),
            descriptor,
            rules,
            pre,
            size_bytes,
        });
        Ok(self.cache.insert(code_hash, task))
    }

    async fn describe(&self, pre: &TaskWorldPre<TaskState>) -> Result<TaskDescriptor> {
        let wasi = WasiCtxBuilder::new().build();
        let mut store = self.store(TaskStateParts {
            wasi,
            rules: Arc::clone(&self.no_rules),
            credentials: Vec::new(),
            redactor: Arc::default(),
            memory_limit: self.config.default_memory_limit_bytes,
            deadline: Instant::now() + self.config.describe_timeout,
            cancel: None,
            sink: Arc::new(DiscardEvents),
            budget: Arc::new(LogBudget::new(0)),
            declared_secrets: Arc::new([]),
            secrets: Arc::default(),
            sandbox: None,
            upstream_assets: Arc::default(),
        });
        let call = async {
            let world = pre.instantiate_async(&mut store).await?;
            world.pipeweave_task_task().call_describe(&mut store).await
        };
        let descriptor = tokio::time::timeout(self.config.describe_timeout, call)
            .await
            .map_err(|_| {
                Error::Describe(format!(
                    "did not return within {:?}",
                    self.config.describe_timeout
                ))
            })?
            .map_err(|e| Error::Describe(format!("{e:#}")))?;
        Ok(from_wit_descriptor(descriptor))
    }

    fn store(&self, parts: TaskStateParts) -> Store<TaskState> {
        let mut store = Store::new(self.engine.engine(), TaskState::new(parts));
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            Ok(match ctx.data_mut().check_interrupt() {
                Some(_) => UpdateDeadline::Interrupt,
                None => UpdateDeadline::Yield(1),
            })
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Runs one attempt of `task` in a fresh sandbox. Whatever the guest
    /// does is in the report; `Err` means the host itself could not set the
    /// attempt up (no sandbox directory).
    pub async fn run(&self, task: &LoadedTask, request: RunRequest) -> Result<RunReport> {
        let started = Instant::now();
        let descriptor = &task.descriptor;
        let timeout = request
            .timeout
            .unwrap_or_else(|| Duration::from_secs(u64::from(descriptor.timeout)));
        let memory_limit = request
            .memory_limit_bytes
            .or(descriptor.memory_limit_bytes)
            .unwrap_or(self.config.default_memory_limit_bytes)
            .min(self.config.engine.max_memory_bytes);
        let deadline = started + timeout;

        // The task sees only the secrets it declared, and no sink sees
        // their values.
        let secrets: HashMap<String, String> = request
            .secrets
            .into_iter()
            .filter(|(name, _)| task.declared_secrets.contains(name))
            .collect();
        let redactor = Arc::new(Redactor::new(
            secrets
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        ));
        let events: Arc<dyn EventSink> = if redactor.is_empty() {
            request.events
        } else {
            Arc::new(RedactingSink::new(request.events, Arc::clone(&redactor)))
        };
        let credentials = injected_credentials(task, &secrets, events.as_ref());

        let sandbox = self.sandboxes.acquire()?;
        let budget = Arc::new(LogBudget::new(self.config.max_log_bytes));
        let stdout =
            CapturedStream::new(StdStream::Stdout, Arc::clone(&events), Arc::clone(&budget));
        let stderr =
            CapturedStream::new(StdStream::Stderr, Arc::clone(&events), Arc::clone(&budget));
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .preopened_dir(sandbox.path(), "/", FsPerms::ReadWrite)
            .map_err(|e| Error::Sandbox {
                path: sandbox.path().to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;

        let mut store = self.store(TaskStateParts {
            wasi: wasi.build(),
            rules: Arc::clone(&task.rules),
            credentials,
            redactor: Arc::clone(&redactor),
            memory_limit,
            deadline,
            cancel: request.cancel.clone(),
            sink: events,
            budget,
            declared_secrets: Arc::clone(&task.declared_secrets),
            secrets: Arc::new(secrets),
            sandbox: Some(sandbox),
            upstream_assets: Arc::new(request.upstream_assets),
        });

        let context = types::Context {
            run_id: request.run_id,
            pipeline_run_id: request.pipeline_run_id,
            attempt: request.attempt,
            code_version: request.code_version,
            code_hash: task.code_hash.to_string(),
            input: request.input.to_string(),
            upstream: request
                .upstream
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            previous_attempts: request
                .previous_attempts
                .into_iter()
                .map(|p| types::PreviousAttempt {
                    attempt: p.attempt,
                    error: p.error,
                    error_code: p.error_code,
                    timestamp_ms: p.timestamp_ms,
                })
                .collect(),
        };

        let ended = {
            let call = call_run(&task.pre, &mut store, &context);
            tokio::pin!(call);
            let cancelled = async {
                match &request.cancel {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            // The epoch callback stops a guest that is computing; this stops
            // one that is waiting in a host call (a sleep, a slow server).
            let grace = self.config.engine.epoch_tick * 2;
            tokio::select! {
                biased;
                result = &mut call => result,
                () = tokio::time::sleep_until((deadline + grace).into()) => CallEnd::Interrupted(Interrupt::Timeout),
                () = cancelled => CallEnd::Interrupted(Interrupt::Cancelled),
            }
        };
        stdout.flush_partial();
        stderr.flush_partial();

        let outcome = self
            .classify(task, store.data(), ended, timeout, memory_limit)
            .map_err(|failure| redact_failure(failure, &redactor));
        let state = store.into_data();
        let succeeded = outcome.is_ok();
        Ok(RunReport {
            outcome,
            code_hash: task.code_hash.clone(),
            duration: started.elapsed(),
            peak_memory_bytes: state.limiter.peak,
            assets: if succeeded { state.assets } else { Vec::new() },
            hosts_contacted: state.outbound.contacted,
            denied_requests: state.outbound.denied,
            // A failed attempt's files are deleted here, with its sandbox.
            sandbox: if succeeded { state.sandbox } else { None },
        })
    }

    fn classify(
        &self,
        task: &LoadedTask,
        state: &TaskState,
        ended: CallEnd,
        timeout: Duration,
        memory_limit: u64,
    ) -> std::result::Result<TaskSuccess, Failure> {
        let interrupted = |interrupt| match interrupt {
            Interrupt::Timeout => Failure::host(
                FailureReason::Timeout,
                format!(
                    "the task ran longer than its timeout of {}",
                    format_duration(timeout)
                ),
            ),
            Interrupt::Cancelled => {
                Failure::host(FailureReason::Cancelled, "the attempt was cancelled")
            }
        };
        let denied = |message: String| {
            let mut failure = Failure::host(FailureReason::NetworkDenied, message);
            failure.details = Some(serde_json::json!({ "deniedRequests": state.outbound.denied }));
            failure
        };
        match ended {
            CallEnd::Interrupted(interrupt) => Err(interrupted(interrupt)),
            CallEnd::Instantiate(error) => {
                if state.limiter.hit {
                    Err(Failure::host(
                        FailureReason::MemoryLimit,
                        format!(
                            "the task needs more memory than its limit of {} to start",
                            format_bytes(memory_limit)
                        ),
                    ))
                } else {
                    Err(Failure::host(
                        FailureReason::InvalidComponent,
                        format!("cannot instantiate the task: {error:#}"),
                    ))
                }
            }
            CallEnd::Trapped(error) => {
                if let Some(interrupt) = state.interrupt {
                    return Err(interrupted(interrupt));
                }
                let trap = error.downcast_ref::<Trap>().copied();
                let backtrace = error
                    .downcast_ref::<wasmtime::WasmBacktrace>()
                    .map(|bt| Value::String(bt.to_string()));
                let mut failure = if state.limiter.hit {
                    Failure::host(
                        FailureReason::MemoryLimit,
                        format!(
                            "the task exceeded its memory limit of {}",
                            format_bytes(memory_limit)
                        ),
                    )
                } else if let Some(message) = &state.panic_message {
                    // Rust's panic info reads "panicked at file:line:col:\nmessage".
                    let message = message.replacen(":\n", ": ", 1);
                    let message = match message.strip_prefix("panicked at ") {
                        Some(rest) => format!("the task panicked at {rest}"),
                        None => format!("the task panicked: {message}"),
                    };
                    Failure::host(FailureReason::Panic, message)
                } else if trap == Some(Trap::StackOverflow)
                    || looks_like_shadow_stack_overflow(trap, &error)
                {
                    Failure::host(
                        FailureReason::StackOverflow,
                        "the task overflowed its stack",
                    )
                } else if !state.outbound.denied.is_empty() {
                    denied(format!(
                        "the task trapped after a request to an undeclared host: {error}"
                    ))
                } else {
                    Failure::host(
                        FailureReason::Trap,
                        format!("the task trapped: {}", trap_message(&error, trap)),
                    )
                };
                failure.details = failure
                    .details
                    .or(backtrace.map(|bt| serde_json::json!({ "backtrace": bt })));
                Err(failure)
            }
            CallEnd::Returned(Err(task_error)) => {
                if !state.outbound.denied.is_empty() {
                    return Err(denied(format!(
                        "the task failed after a request to an undeclared host: {}",
                        task_error.message
                    )));
                }
                let details = task_error
                    .details
                    .map(|d| serde_json::from_str(&d).unwrap_or(Value::String(d)));
                Err(Failure {
                    reason: FailureReason::TaskError,
                    code: task_error.code,
                    message: task_error.message,
                    retryable: task_error.retryable,
                    details,
                })
            }
            CallEnd::Returned(Ok(result)) => {
                if !state.outbound.denied.is_empty() {
                    return Err(denied(format!(
                        "the task made requests to hosts it did not declare: {}",
                        state.outbound.denied.join(", ")
                    )));
                }
                if result.output.len() > self.config.max_output_bytes {
                    return Err(Failure::host(
                        FailureReason::OutputTooLarge,
                        format!(
                            "the output is {}, over the limit of {}; write large data as an asset",
                            format_bytes(result.output.len() as u64),
                            format_bytes(self.config.max_output_bytes as u64)
                        ),
                    ));
                }
                let output: Value = serde_json::from_str(&result.output).map_err(|e| {
                    Failure::host(
                        FailureReason::InvalidOutput,
                        format!("the output is not valid JSON: {e}"),
                    )
                })?;
                if let Some(next) = &result.run_next {
                    let allowed = &task.descriptor.allowed_next;
                    if let Some(bad) = next.iter().find(|n| !allowed.contains(n)) {
                        return Err(Failure::host(
                            FailureReason::InvalidOutput,
                            format!(
                                "runNext selects {bad:?}, which is not in allowedNext {allowed:?}"
                            ),
                        ));
                    }
                }
                if let Err(message) = verify_assets(state) {
                    return Err(Failure::host(FailureReason::InvalidOutput, message));
                }
                Ok(TaskSuccess {
                    output,
                    run_next: result.run_next,
                })
            }
        }
    }
}

/// The task's credentials whose secrets the attempt was handed, as headers
/// ready to add. A credential whose secret is missing, or cannot be sent in
/// a header, is left out with a warning in the attempt's log.
fn injected_credentials(
    task: &LoadedTask,
    secrets: &HashMap<String, String>,
    events: &dyn EventSink,
) -> Vec<InjectedCredential> {
    let warn = |message: String| {
        events.event(RunEvent::Log {
            level: LogLevel::Warn,
            message,
        });
    };
    let mut injected = Vec::new();
    for (rule, credential) in &task.credentials {
        let Some(value) = secrets.get(&credential.secret) else {
            warn(format!(
                "the credential for {} is not sent: secret `{}` is not set",
                credential.host, credential.secret
            ));
            continue;
        };
        let name = http::HeaderName::from_bytes(credential.header_name().as_bytes());
        let value = http::HeaderValue::from_str(&credential.header_value(value));
        match (name, value) {
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(true);
                injected.push(InjectedCredential {
                    rule: rule.clone(),
                    name,
                    value,
                });
            }
            _ => warn(format!(
                "the credential for {} is not sent: secret `{}` has characters an HTTP header cannot carry",
                credential.host, credential.secret
            )),
        }
    }
    injected
}

/// A failure with every secret value replaced in its message, code and
/// details.
fn redact_failure(failure: Failure, redactor: &Redactor) -> Failure {
    if redactor.is_empty() {
        return failure;
    }
    Failure {
        message: redactor.redact_string(failure.message),
        code: failure.code.map(|code| redactor.redact_string(code)),
        details: failure.details.map(|mut details| {
            redactor.redact_json(&mut details);
            details
        }),
        ..failure
    }
}

/// How a call into the guest ended.
enum CallEnd {
    /// The component could not be instantiated.
    Instantiate(wasmtime::Error),
    /// The guest trapped (or a host call failed fatally).
    Trapped(wasmtime::Error),
    /// `run` returned.
    Returned(std::result::Result<types::TaskResult, types::TaskError>),
    /// The host stopped the call from outside.
    Interrupted(Interrupt),
}

async fn call_run(
    pre: &TaskWorldPre<TaskState>,
    store: &mut Store<TaskState>,
    context: &types::Context,
) -> CallEnd {
    let world: TaskWorld = match pre.instantiate_async(&mut *store).await {
        Ok(world) => world,
        Err(e) if e.downcast_ref::<Trap>().is_some() => return CallEnd::Trapped(e),
        Err(e) => return CallEnd::Instantiate(e),
    };
    match world
        .pipeweave_task_task()
        .call_run(&mut *store, context)
        .await
    {
        Ok(result) => CallEnd::Returned(result),
        Err(e) => CallEnd::Trapped(e),
    }
}

/// Checks that every registered asset is still a regular file: the guest
/// could have replaced one after registering it.
fn verify_assets(state: &TaskState) -> std::result::Result<(), String> {
    if state.assets.is_empty() {
        return Ok(());
    }
    let sandbox = state.sandbox.as_ref().ok_or("the attempt has no sandbox")?;
    let dir = sandbox
        .open()
        .map_err(|e| format!("cannot open the sandbox: {e}"))?;
    for asset in &state.assets {
        let path = Path::new(ASSETS_DIR).join(&asset.key);
        match dir.symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            _ => {
                return Err(format!(
                    "asset {:?} is no longer a regular file at /{}",
                    asset.key,
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// Rust and C keep most of their stack in linear memory (a "shadow stack"
/// placed first, below the data). Unbounded recursion usually exhausts that
/// before the wasm stack and shows up as an out-of-bounds access, not as
/// [`Trap::StackOverflow`]. This recognises it: an out-of-bounds access
/// whose captured backtrace, below the innermost frame, is one function
/// calling itself.
fn looks_like_shadow_stack_overflow(trap: Option<Trap>, error: &wasmtime::Error) -> bool {
    const MIN_REPEATED_FRAMES: usize = 16;
    if trap != Some(Trap::MemoryOutOfBounds) {
        return false;
    }
    let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return false;
    };
    let frames = backtrace.frames();
    // The innermost frame may be a helper (a memset of the new frame);
    // everything below it must be the recursion.
    let Some((first, rest)) = frames.get(1..).and_then(<[_]>::split_first) else {
        return false;
    };
    frames.len() >= MIN_REPEATED_FRAMES
        && rest.iter().all(|frame| {
            frame.func_index() == first.func_index()
                && frame.module().name() == first.module().name()
        })
}

fn trap_message(error: &wasmtime::Error, trap: Option<Trap>) -> String {
    match trap {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    }
}

fn from_wit_descriptor(d: types::Descriptor) -> TaskDescriptor {
    TaskDescriptor {
        id: d.id,
        description: d.description,
        allowed_next: d.allowed_next,
        timeout: d.timeout_secs,
        retries: d.retries,
        retry_backoff: match d.retry_backoff {
            types::RetryBackoff::Fixed => RetryBackoff::Fixed,
            types::RetryBackoff::Exponential => RetryBackoff::Exponential,
        },
        retry_delay_ms: d.retry_delay_ms,
        max_retry_delay_ms: d.max_retry_delay_ms,
        heartbeat_interval_ms: d.heartbeat_interval_ms,
        concurrency: d.concurrency,
        priority: d.priority,
        idempotency: d.idempotency.map(|i| pipeweave_protocol::Idempotency {
            input_fields: i.input_fields,
            include_code_version: i.include_code_version,
            ttl_secs: i.ttl_secs,
        }),
        outbound_hosts: d.outbound_hosts,
        secrets: d.secrets,
        credentials: d
            .credentials
            .into_iter()
            .map(|c| pipeweave_protocol::Credential {
                host: c.host,
                secret: c.secret,
                header: c.header,
            })
            .collect(),
        memory_limit_bytes: d.memory_limit_bytes,
    }
}
