//! A task's descriptor: what it is called, how it is scheduled and what its
//! sandbox must grant. A WebAssembly task returns it from `describe`; a plain
//! HTTP worker sends it when it registers. JSON fields are camelCase and
//! follow the spec's task options (`timeout` in seconds, `retryDelayMs`, …).

use serde::{Deserialize, Serialize};

use crate::outbound::{InvalidOutboundRule, OutboundRules};

/// Severity of a log line, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Fine-grained detail, normally hidden.
    Trace,
    /// Detail useful while debugging.
    Debug,
    /// Normal progress messages.
    Info,
    /// Something unexpected that was recovered from.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// How an asset's bytes are to be read; it decides the content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AssetKind {
    /// Structured data.
    Json,
    /// UTF-8 text: reports, CSV.
    Text,
    /// Anything else.
    Binary,
}

impl AssetKind {
    /// The HTTP content type stored with the asset.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Text => "text/plain",
            Self::Binary => "application/octet-stream",
        }
    }
}

/// How the delay between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RetryBackoff {
    /// The same delay before every retry.
    Fixed,
    /// `min(retryDelayMs * 2^(attempt-1), maxRetryDelayMs)`.
    #[default]
    Exponential,
}

/// How the orchestrator derives an idempotency key when the caller gives
/// none: from the task id, the selected parts of the input and, if asked,
/// the code version. Declarative, so the key is computed without running
/// the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Idempotency {
    /// JSON pointers into the input whose values form the key; empty means
    /// the whole input.
    #[serde(default)]
    pub input_fields: Vec<String>,
    /// Whether a new code version gives a new key.
    #[serde(default = "default_true")]
    pub include_code_version: bool,
    /// How long a finished run's result is returned for a duplicate, in
    /// seconds (the spec's `idempotencyTTL`).
    #[serde(default = "default_idempotency_ttl")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub ttl_secs: u64,
}

fn default_true() -> bool {
    true
}
fn default_idempotency_ttl() -> u64 {
    Idempotency::DEFAULT_TTL_SECS
}
fn default_timeout() -> u32 {
    TaskDescriptor::DEFAULT_TIMEOUT_SECS
}
fn default_retries() -> u32 {
    TaskDescriptor::DEFAULT_RETRIES
}
fn default_retry_delay_ms() -> u64 {
    TaskDescriptor::DEFAULT_RETRY_DELAY_MS
}
fn default_max_retry_delay_ms() -> u64 {
    TaskDescriptor::DEFAULT_MAX_RETRY_DELAY_MS
}
fn default_heartbeat_interval_ms() -> u64 {
    TaskDescriptor::DEFAULT_HEARTBEAT_INTERVAL_MS
}
fn default_priority() -> i32 {
    TaskDescriptor::DEFAULT_PRIORITY
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
}

/// A credential the host adds to the task's outbound requests to one of its
/// declared hosts, so the task never handles the secret's value: the host
/// sets `header` (default `Authorization`, as `Bearer <value>`; any other
/// header gets the raw value) on every request that `host` matches, unless
/// the task set that header itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Credential {
    /// One of the task's `outboundHosts` entries, exactly as declared; the
    /// credential goes to the requests that entry matches.
    pub host: String,
    /// One of the task's declared `secrets`: the value sent.
    pub secret: String,
    /// The header to set; `None` is `Authorization: Bearer <value>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

impl Credential {
    /// The header name the credential sets.
    pub fn header_name(&self) -> &str {
        self.header.as_deref().unwrap_or("authorization")
    }

    /// The header value for the secret's value: `Bearer <value>` for
    /// `Authorization` by default, the raw value for a named header.
    pub fn header_value(&self, secret_value: &str) -> String {
        match self.header {
            None => format!("Bearer {secret_value}"),
            Some(_) => secret_value.to_owned(),
        }
    }
}

/// Everything the host and the orchestrator need to know about a task before
/// running it. Defaults are the spec's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDescriptor {
    /// Unique task id: lowercase letters, digits, `-` and `_`, starting with
    /// a letter, at most 64 characters.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z][a-z0-9_-]{0,63}$"))]
    pub id: String,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Task ids this task may select to run next.
    #[serde(default)]
    pub allowed_next: Vec<String>,
    /// Wall-clock limit of one attempt, in seconds.
    #[serde(default = "default_timeout")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub timeout: u32,
    /// How many times a failed attempt is retried.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// How the delay between retries grows.
    #[serde(default)]
    pub retry_backoff: RetryBackoff,
    /// Base delay between retries, in milliseconds.
    #[serde(default = "default_retry_delay_ms")]
    pub retry_delay_ms: u64,
    /// Upper bound on the delay between retries, in milliseconds.
    #[serde(default = "default_max_retry_delay_ms")]
    pub max_retry_delay_ms: u64,
    /// How often a running attempt reports that it is alive, in milliseconds.
    #[serde(default = "default_heartbeat_interval_ms")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub heartbeat_interval_ms: u64,
    /// Maximum attempts running at once; 0 is unlimited.
    #[serde(default)]
    pub concurrency: u32,
    /// Default queue priority; lower runs first.
    #[serde(default = "default_priority")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub priority: i32,
    /// Idempotent execution; `None` runs every enqueue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
    /// Hosts the task may reach over HTTP (see [`crate::outbound`]).
    #[serde(default)]
    pub outbound_hosts: Vec<String>,
    /// Names of the secrets the task may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Secrets the host sends as request headers to declared hosts (see
    /// [`Credential`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
    /// Upper bound on the task's memory in bytes; `None` takes the host's
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub memory_limit_bytes: Option<u64>,
}

/// A descriptor field that breaks a rule. `field` is the JSON name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// A field has a value outside its rules.
    #[error("task {task:?}: field `{field}` is invalid: {reason}")]
    Invalid {
        /// The task id as declared.
        task: String,
        /// The JSON name of the field.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// An outbound host entry does not parse.
    #[error("task {task:?}: field `outboundHosts` is invalid: {source}")]
    OutboundHost {
        /// The task id as declared.
        task: String,
        /// The parse error.
        source: InvalidOutboundRule,
    },
}

/// Whether `id` is a valid task id (see [`TaskDescriptor::id`]).
pub fn is_valid_task_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    id.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// An HTTP header name: one or more token characters (RFC 9110).
fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Whether `name` may name a secret: 1 to 128 letters, digits, `-`, `_` or
/// `.`. Secret stores (a directory of files, `.secrets.yaml`) use the same
/// rule for the names they hold.
pub fn is_valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl TaskDescriptor {
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

    /// A descriptor for the task `id` with every option at the spec's
    /// default; change what the task needs with the builder methods.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            description: None,
            allowed_next: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT_SECS,
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
            credentials: Vec::new(),
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
        self.timeout = secs;
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

    /// Sets how often a running attempt reports that it is alive, in
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

    /// Adds one host the task may reach over HTTP, such as
    /// `api.example.com`, `127.0.0.1:8080`, `127.0.0.1:*`,
    /// `https://api.example.com` or `*.example.com` (see
    /// [`crate::outbound`]).
    #[must_use]
    pub fn outbound_host(mut self, host: impl Into<String>) -> Self {
        self.outbound_hosts.push(host.into());
        self
    }

    /// Adds several hosts the task may reach over HTTP.
    #[must_use]
    pub fn outbound_hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.outbound_hosts
            .extend(hosts.into_iter().map(Into::into));
        self
    }

    /// Declares one secret the task may read.
    #[must_use]
    pub fn secret(mut self, name: impl Into<String>) -> Self {
        self.secrets.push(name.into());
        self
    }

    /// Declares several secrets.
    #[must_use]
    pub fn secrets<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.secrets.extend(names.into_iter().map(Into::into));
        self
    }

    /// Has the host send the secret `secret` as `Authorization: Bearer
    /// <value>` on requests to `host`, which must be one of the declared
    /// outbound hosts, exactly as declared (`secret` must be declared too).
    /// A request that sets `Authorization` itself keeps its own. A bare
    /// host matches `http` and `https`; declare `https://host` to keep the
    /// credential off plain HTTP.
    #[must_use]
    pub fn credential(mut self, host: impl Into<String>, secret: impl Into<String>) -> Self {
        self.credentials.push(Credential {
            host: host.into(),
            secret: secret.into(),
            header: None,
        });
        self
    }

    /// Has the host send the secret `secret`'s raw value in the header
    /// `header` (such as `X-API-Key`) on requests to `host`, which must be
    /// one of the declared outbound hosts, exactly as declared.
    #[must_use]
    pub fn credential_header(
        mut self,
        host: impl Into<String>,
        secret: impl Into<String>,
        header: impl Into<String>,
    ) -> Self {
        self.credentials.push(Credential {
            host: host.into(),
            secret: secret.into(),
            header: Some(header.into()),
        });
        self
    }

    /// Sets the upper bound on the task's memory, in bytes.
    #[must_use]
    pub fn memory_limit_bytes(mut self, bytes: u64) -> Self {
        self.memory_limit_bytes = Some(bytes);
        self
    }

    /// The parsed outbound rules. Fails like [`Self::validate`] does.
    pub fn outbound_rules(&self) -> Result<OutboundRules, DescriptorError> {
        OutboundRules::parse(&self.outbound_hosts).map_err(|source| DescriptorError::OutboundHost {
            task: self.id.clone(),
            source,
        })
    }

    /// Checks every rule a descriptor must keep; the first broken one is
    /// the error.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        let invalid = |field, reason: String| DescriptorError::Invalid {
            task: self.id.clone(),
            field,
            reason,
        };
        if !is_valid_task_id(&self.id) {
            return Err(invalid(
                "id",
                "use 1 to 64 lowercase letters, digits, '-' or '_', starting with a letter".into(),
            ));
        }
        if let Some(next) = self.allowed_next.iter().find(|n| !is_valid_task_id(n)) {
            return Err(invalid(
                "allowedNext",
                format!("{next:?} is not a valid task id"),
            ));
        }
        if self.timeout == 0 {
            return Err(invalid("timeout", "must be at least 1 second".into()));
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(invalid(
                "heartbeatIntervalMs",
                "must be at least 1 ms".into(),
            ));
        }
        if self.priority < 0 {
            return Err(invalid(
                "priority",
                format!(
                    "{} is negative; use 0 or more (lower runs first)",
                    self.priority
                ),
            ));
        }
        if self.max_retry_delay_ms < self.retry_delay_ms {
            return Err(invalid(
                "maxRetryDelayMs",
                format!(
                    "{} is below retryDelayMs {}",
                    self.max_retry_delay_ms, self.retry_delay_ms
                ),
            ));
        }
        if let Some(idempotency) = &self.idempotency {
            if let Some(bad) = idempotency
                .input_fields
                .iter()
                .find(|f| !f.starts_with('/'))
            {
                return Err(invalid(
                    "idempotency.inputFields",
                    format!("{bad:?} is not a JSON pointer (it must start with '/')"),
                ));
            }
            if idempotency.ttl_secs == 0 {
                return Err(invalid(
                    "idempotency.ttlSecs",
                    "must be at least 1 second".into(),
                ));
            }
        }
        if let Some(bad) = self.secrets.iter().find(|s| !is_valid_secret_name(s)) {
            return Err(invalid(
                "secrets",
                format!("{bad:?} is not a valid secret name (letters, digits, '-', '_', '.')"),
            ));
        }
        if self.memory_limit_bytes == Some(0) {
            return Err(invalid("memoryLimitBytes", "must be more than 0".into()));
        }
        self.outbound_rules()?;
        self.validate_credentials()
            .map_err(|reason| invalid("credentials", reason))
    }

    fn validate_credentials(&self) -> Result<(), String> {
        let mut seen: Vec<(&str, String)> = Vec::new();
        for credential in &self.credentials {
            let Credential { host, secret, .. } = credential;
            if !self.outbound_hosts.contains(host) {
                return Err(format!(
                    "host {host:?} is not one of outboundHosts {:?}; use an entry exactly as declared",
                    self.outbound_hosts
                ));
            }
            if !self.secrets.contains(secret) {
                return Err(format!(
                    "secret {secret:?} (for host {host:?}) is not one of the declared secrets {:?}",
                    self.secrets
                ));
            }
            let header = credential.header_name().to_ascii_lowercase();
            if !is_valid_header_name(&header) {
                return Err(format!(
                    "header {header:?} (for host {host:?}) is not a valid HTTP header name"
                ));
            }
            if matches!(
                header.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection" | "te" | "upgrade"
            ) {
                return Err(format!(
                    "header {header:?} (for host {host:?}) cannot carry a credential"
                ));
            }
            if seen.iter().any(|(h, name)| *h == host && *name == header) {
                return Err(format!(
                    "host {host:?} has two credentials for the header {header:?}"
                ));
            }
            seen.push((host, header));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_the_spec_names_and_defaults() {
        let d: TaskDescriptor =
            serde_json::from_str(r#"{"id":"download","allowedNext":["extract"]}"#)
                .expect("minimal descriptor parses");
        assert_eq!(d.timeout, 300);
        assert_eq!(d.retries, 3);
        assert_eq!(d.retry_backoff, RetryBackoff::Exponential);
        assert_eq!(d.heartbeat_interval_ms, 60_000);
        assert_eq!(d.priority, 100);
        assert_eq!(d, {
            let mut expected = TaskDescriptor::new("download");
            expected.allowed_next = vec!["extract".into()];
            expected
        });
        let json = serde_json::to_value(&d).expect("serializes");
        assert_eq!(json["retryDelayMs"], 1000);
        assert_eq!(json["maxRetryDelayMs"], 86_400_000);
    }

    #[test]
    fn validation_names_the_field_at_fault() {
        let field_of = |d: &TaskDescriptor| match d.validate() {
            Err(DescriptorError::Invalid { field, .. }) => field,
            Err(DescriptorError::OutboundHost { .. }) => "outboundHosts",
            Ok(()) => "none",
        };
        let ok = TaskDescriptor::new("extract-text");
        assert_eq!(field_of(&ok), "none");
        assert_eq!(field_of(&TaskDescriptor::new("Extract")), "id");
        assert_eq!(
            field_of(&TaskDescriptor {
                timeout: 0,
                ..ok.clone()
            }),
            "timeout"
        );
        assert_eq!(
            field_of(&TaskDescriptor {
                allowed_next: vec!["a b".into()],
                ..ok.clone()
            }),
            "allowedNext"
        );
        assert_eq!(
            field_of(&TaskDescriptor {
                retry_delay_ms: 10,
                max_retry_delay_ms: 5,
                ..ok.clone()
            }),
            "maxRetryDelayMs"
        );
        assert_eq!(
            field_of(&TaskDescriptor {
                outbound_hosts: vec!["x.com/path".into()],
                ..ok.clone()
            }),
            "outboundHosts"
        );
        assert_eq!(
            field_of(&TaskDescriptor {
                secrets: vec![String::new()],
                ..ok
            }),
            "secrets"
        );
    }

    #[test]
    fn credentials_name_a_declared_host_and_secret() {
        let base = TaskDescriptor::new("download")
            .outbound_hosts(["api.example.com", "*.files.example.com"])
            .secrets(["api-token", "api-key"]);
        let ok = base
            .clone()
            .credential("api.example.com", "api-token")
            .credential_header("*.files.example.com", "api-key", "X-API-Key");
        assert_eq!(ok.validate(), Ok(()));
        let reason = |d: TaskDescriptor| match d.validate() {
            Err(DescriptorError::Invalid {
                field: "credentials",
                reason,
                ..
            }) => reason,
            other => panic!("expected a credentials error, got {other:?}"),
        };
        assert!(
            reason(base.clone().credential("other.example.com", "api-token"))
                .contains("not one of outboundHosts")
        );
        assert!(
            reason(base.clone().credential("api.example.com", "missing"))
                .contains("not one of the declared secrets")
        );
        assert!(
            reason(
                base.clone()
                    .credential_header("api.example.com", "api-key", "X API Key")
            )
            .contains("not a valid HTTP header name")
        );
        assert!(
            reason(
                base.clone()
                    .credential_header("api.example.com", "api-key", "Host")
            )
            .contains("cannot carry a credential")
        );
        assert!(
            reason(
                base.credential("api.example.com", "api-token")
                    .credential_header("api.example.com", "api-key", "Authorization")
            )
            .contains("two credentials")
        );
    }

    #[test]
    fn credentials_are_camel_case_json_and_optional() {
        let d = TaskDescriptor::new("download")
            .outbound_host("api.example.com")
            .secret("api-key")
            .credential_header("api.example.com", "api-key", "X-API-Key");
        let json = serde_json::to_value(&d).expect("serializes");
        assert_eq!(
            json["credentials"],
            serde_json::json!([{"host": "api.example.com", "secret": "api-key", "header": "X-API-Key"}])
        );
        let plain = serde_json::to_value(TaskDescriptor::new("plain")).expect("serializes");
        assert!(plain.get("credentials").is_none(), "{plain}");
        let old: TaskDescriptor =
            serde_json::from_str(r#"{"id":"old","secrets":["a"]}"#).expect("parses");
        assert!(old.credentials.is_empty());
        let bearer = Credential {
            host: "h".into(),
            secret: "s".into(),
            header: None,
        };
        assert_eq!(bearer.header_name(), "authorization");
        assert_eq!(bearer.header_value("v"), "Bearer v");
    }
}
