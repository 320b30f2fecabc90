//! [`Descriptor`]: what a task tells the host before it runs.

use crate::bindings::pipeweave::task::types as wit;
use crate::types::RetryBackoff;

/// Everything the host and the orchestrator need to know about a task before
/// running it: its identity, its scheduling options and what its sandbox must
/// grant.
///
/// Start from [`Descriptor::new`], which fills in the defaults, and change
/// what the task needs with the builder methods. The fields are public so a
/// test can read them; build a value only through `new`.
///
/// ```
/// use pipeweave_sdk::{Descriptor, Idempotency, RetryBackoff};
///
/// let descriptor = Descriptor::new("extract-text")
///     .description("Extracts the text of a PDF")
///     .allowed_next(["index", "summarise"])
///     .timeout_secs(60)
///     .retries(5)
///     .retry_backoff(RetryBackoff::Fixed)
///     .idempotency(Idempotency::new().input_fields(["/documentId"]))
///     .outbound_host("api.example.com")
///     .secret("api-token")
///     .memory_limit_bytes(256 << 20);
/// assert_eq!(descriptor.timeout_secs, 60);
/// assert_eq!(descriptor.priority, 100);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Descriptor {
    /// Unique id of the task, such as `extract-text`: lowercase letters,
    /// digits, `-` and `_`, starting with a letter, at most 64 characters.
    pub id: String,
    /// Human-readable description; none by default.
    pub description: Option<String>,
    /// Task ids this task may select to run next; empty by default.
    pub allowed_next: Vec<String>,
    /// Wall-clock limit of one attempt, in seconds; 300 by default.
    pub timeout_secs: u32,
    /// How many times a failed attempt is retried; 3 by default.
    pub retries: u32,
    /// How the delay between retries grows; exponential by default.
    pub retry_backoff: RetryBackoff,
    /// Base delay between retries, in milliseconds; 1000 by default.
    pub retry_delay_ms: u64,
    /// Upper bound on the delay between retries, in milliseconds; one day
    /// (86 400 000) by default.
    pub max_retry_delay_ms: u64,
    /// How often the host reports that the attempt is alive, in
    /// milliseconds; 60 000 by default.
    pub heartbeat_interval_ms: u64,
    /// Maximum attempts of this task running at once; 0, the default, is
    /// unlimited.
    pub concurrency: u32,
    /// Default queue priority, lower runs first; 100 by default.
    pub priority: i32,
    /// How idempotency keys are derived; none by default, so every enqueue
    /// runs.
    pub idempotency: Option<Idempotency>,
    /// Hosts the task may reach over HTTP: `host`, `host:port`, `host:*`,
    /// `scheme://host[:port]` or `*.domain`; none by default.
    pub outbound_hosts: Vec<String>,
    /// Names of the secrets the task may read; none by default.
    pub secrets: Vec<String>,
    /// Upper bound on the task's linear memory, in bytes; `None`, the
    /// default, takes the host's default.
    pub memory_limit_bytes: Option<u64>,
}

impl Descriptor {
    /// Default wall-clock limit of one attempt, in seconds.
    pub const DEFAULT_TIMEOUT_SECS: u32 = 300;
    /// Default number of retries.
    pub const DEFAULT_RETRIES: u32 = 3;
    /// Default base delay between retries, in milliseconds.
    pub const DEFAULT_RETRY_DELAY_MS: u64 = 1_000;
    /// Default upper bound on the delay between retries, in milliseconds.
    pub const DEFAULT_MAX_RETRY_DELAY_MS: u64 = 86_400_000;
    /// Default heartbeat interval, in milliseconds.
    pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 60_000;
    /// Default queue priority.
    pub const DEFAULT_PRIORITY: i32 = 100;

    /// A descriptor for the task `id` with every option at its default.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            description: None,
            allowed_next: Vec::new(),
            timeout_secs: Self::DEFAULT_TIMEOUT_SECS,
            retries: Self::DEFAULT_RETRIES,
            retry_backoff: RetryBackoff::default(),
            retry_delay_ms: Self::DEFAULT_RETRY_DELAY_MS,
            max_retry_delay_ms: Self::DEFAULT_MAX_RETRY_DELAY_MS,
            heartbeat_interval_ms: Self::DEFAULT_HEARTBEAT_INTERVAL_MS,
            concurrency: 0,
            priority: Self::DEFAULT_PRIORITY,
            idempotency: None,
            outbound_hosts: Vec::new(),
            secrets: Vec::new(),
            memory_limit_bytes: None,
        }
    }

    /// Sets the human-readable description.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Sets the task ids this task may select to run next, replacing any
    /// set before.
    #[must_use]
    pub fn allowed_next<S: Into<String>>(mut self, ids: impl IntoIterator<Item = S>) -> Self {
        self.allowed_next = ids.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the wall-clock limit of one attempt, in seconds.
    #[must_use]
    pub fn timeout_secs(mut self, secs: u32) -> Self {
        self.timeout_secs = secs;
        self
    }

    /// Sets how many times a failed attempt is retried.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets how the delay between retries grows.
    #[must_use]
    pub fn retry_backoff(mut self, backoff: RetryBackoff) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Sets the base delay between retries, in milliseconds.
    #[must_use]
    pub fn retry_delay_ms(mut self, ms: u64) -> Self {
        self.retry_delay_ms = ms;
        self
    }

    /// Sets the upper bound on the delay between retries, in milliseconds.
    #[must_use]
    pub fn max_retry_delay_ms(mut self, ms: u64) -> Self {
        self.max_retry_delay_ms = ms;
        self
    }

    /// Sets how often the host reports that an attempt is alive, in
    /// milliseconds.
    #[must_use]
    pub fn heartbeat_interval_ms(mut self, ms: u64) -> Self {
        self.heartbeat_interval_ms = ms;
        self
    }

    /// Sets the maximum number of attempts running at once; 0 is unlimited.
    #[must_use]
    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets the default queue priority; lower runs first.
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Makes runs of this task idempotent, with keys derived as
    /// `idempotency` says.
    #[must_use]
    pub fn idempotency(mut self, idempotency: Idempotency) -> Self {
        self.idempotency = Some(idempotency);
        self
    }

    /// Adds one host the task may reach over HTTP, such as `api.example.com`,
    /// `127.0.0.1:8080`, `127.0.0.1:*`, `https://api.example.com` or
    /// `*.example.com`.
    #[must_use]
    pub fn outbound_host(mut self, host: impl Into<String>) -> Self {
        self.outbound_hosts.push(host.into());
        self
    }

    /// Adds several hosts the task may reach over HTTP; see
    /// [`outbound_host`](Self::outbound_host).
    #[must_use]
    pub fn outbound_hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.outbound_hosts
            .extend(hosts.into_iter().map(Into::into));
        self
    }

    /// Declares one secret the task may read with
    /// [`Context::secret`](crate::Context::secret).
    #[must_use]
    pub fn secret(mut self, name: impl Into<String>) -> Self {
        self.secrets.push(name.into());
        self
    }

    /// Declares several secrets; see [`secret`](Self::secret).
    #[must_use]
    pub fn secrets<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.secrets.extend(names.into_iter().map(Into::into));
        self
    }

    /// Sets the upper bound on the task's linear memory, in bytes.
    #[must_use]
    pub fn memory_limit_bytes(mut self, bytes: u64) -> Self {
        self.memory_limit_bytes = Some(bytes);
        self
    }

    pub(crate) fn into_wit(self) -> wit::Descriptor {
        wit::Descriptor {
            id: self.id,
            description: self.description,
            allowed_next: self.allowed_next,
            timeout_secs: self.timeout_secs,
            retries: self.retries,
            retry_backoff: self.retry_backoff.into(),
            retry_delay_ms: self.retry_delay_ms,
            max_retry_delay_ms: self.max_retry_delay_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            concurrency: self.concurrency,
            priority: self.priority,
            idempotency: self.idempotency.map(Idempotency::into_wit),
            outbound_hosts: self.outbound_hosts,
            secrets: self.secrets,
            memory_limit_bytes: self.memory_limit_bytes,
        }
    }
}

/// How the orchestrator derives an idempotency key for a run when the caller
/// gives none: from the task id, the selected parts of the input and, if
/// asked, the code version.
///
/// ```
/// use pipeweave_sdk::Idempotency;
///
/// let idempotency = Idempotency::new()
///     .input_fields(["/userId", "/date"])
///     .include_code_version(false)
///     .ttl_secs(3600);
/// assert_eq!(idempotency.input_fields.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Idempotency {
    /// JSON pointers (RFC 6901, such as `/userId`) into the input whose
    /// values form the key; empty, the default, means the whole input.
    pub input_fields: Vec<String>,
    /// Whether a new code version gives a new key; true by default.
    pub include_code_version: bool,
    /// How long a finished run's result is returned for a duplicate, in
    /// seconds; one day (86 400) by default.
    pub ttl_secs: u64,
}

impl Default for Idempotency {
    fn default() -> Self {
        Self::new()
    }
}

impl Idempotency {
    /// Default time a result is returned for duplicates, in seconds.
    pub const DEFAULT_TTL_SECS: u64 = 86_400;

    /// Keys from the whole input and the code version, kept for a day.
    pub fn new() -> Self {
        Self {
            input_fields: Vec::new(),
            include_code_version: true,
            ttl_secs: Self::DEFAULT_TTL_SECS,
        }
    }

    /// Sets the JSON pointers into the input whose values form the key.
    #[must_use]
    pub fn input_fields<S: Into<String>>(mut self, pointers: impl IntoIterator<Item = S>) -> Self {
        self.input_fields = pointers.into_iter().map(Into::into).collect();
        self
    }

    /// Sets whether a new code version gives a new key.
    #[must_use]
    pub fn include_code_version(mut self, include: bool) -> Self {
        self.include_code_version = include;
        self
    }

    /// Sets how long a finished run's result is returned for a duplicate,
    /// in seconds.
    #[must_use]
    pub fn ttl_secs(mut self, secs: u64) -> Self {
        self.ttl_secs = secs;
        self
    }

    fn into_wit(self) -> wit::Idempotency {
        wit::Idempotency {
            input_fields: self.input_fields,
            include_code_version: self.include_code_version,
            ttl_secs: self.ttl_secs,
        }
    }
}
