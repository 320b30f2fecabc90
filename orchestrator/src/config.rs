//! Configuration: the environment variables of the orchestrator README,
//! each mirrored by a flag, checked once at start-up into a [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How the orchestrator schedules work.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A background scheduler claims and dispatches runs as they arrive.
    Standalone,
    /// No background work: an external scheduler calls `POST /api/tick`.
    Serverless,
}

/// How much the orchestrator logs, as the orchestrator README defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Start-up, shutdown, errors and mode changes only.
    Minimal,
    /// Also registrations, database connections and scheduler summaries.
    Normal,
    /// Everything, including each HTTP request and each dispatch.
    Detailed,
}

impl LogLevel {
    /// The `tracing` filter directive this level stands for.
    pub fn filter(self) -> &'static str {
        match self {
            Self::Minimal => "warn,pipeweave=warn,pipeweave_orchestrator=warn",
            Self::Normal => "warn,pipeweave=info,pipeweave_orchestrator=info",
            Self::Detailed => "info,pipeweave=debug,pipeweave_orchestrator=debug,tower_http=debug",
        }
    }
}

/// Examples for `pipeweave orchestrator --help`.
const ORCHESTRATOR_HELP: &str = "\
Examples:
  DATABASE_URL=postgres://pw@db/pipeweave PIPEWEAVE_SECRET_KEY=$(openssl rand -hex 32) pipeweave orchestrator
                                      serve on :3000 with local storage in ./pipeweave-storage
  pipeweave orchestrator --port 8080 --mode serverless
                                      no background loops: work moves on POST /api/tick
  LOG_LEVEL=detailed pipeweave orchestrator
                                      log every request and state change

Every flag falls back to the environment variable named after it. The
database is migrated at start-up. For everything on one machine with no
configuration, use `pipeweave dev` instead.";

/// Flags of `pipeweave orchestrator`; each falls back to its environment
/// variable.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = ORCHESTRATOR_HELP)]
pub struct Args {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Port of the HTTP API.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "PIPEWEAVE_LISTEN_HOST", default_value = "0.0.0.0")]
    pub listen_host: IpAddr,
    /// The URL hosts and workers use to reach this orchestrator (for
    /// callbacks and heartbeats). Default: http://127.0.0.1:<port>.
    #[arg(long, env = "PIPEWEAVE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Shared secret, 64 hex digits (`openssl rand -hex 32`); seals the
    /// storage credentials handed to hosts and workers.
    #[arg(long, env = "PIPEWEAVE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// `standalone` runs a background scheduler; `serverless` waits for
    /// `POST /api/tick`.
    #[arg(long, env = "MODE", value_enum, default_value = "standalone")]
    pub mode: Mode,
    /// Attempts dispatched at once to a plain HTTP worker that declares no
    /// capacity of its own.
    #[arg(long, env = "MAX_CONCURRENCY", default_value_t = 10)]
    pub max_concurrency: u32,
    /// How often the scheduler looks for due runs when no notification
    /// wakes it (delayed runs, retries, a lost LISTEN connection).
    #[arg(long, env = "POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// Largest request body, in bytes, for JSON requests.
    #[arg(long, env = "PIPEWEAVE_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Largest WebAssembly module upload, in bytes.
    #[arg(long, env = "PIPEWEAVE_MAX_MODULE_BYTES", default_value_t = 64 << 20)]
    pub max_module_bytes: usize,
    /// Log verbosity.
    #[arg(long, env = "LOG_LEVEL", value_enum, default_value = "normal")]
    pub log_level: LogLevel,
    /// When set, every write (any method but GET and HEAD) must send
    /// `Authorization: Bearer <key>`, except the heartbeats, progress and
    /// callbacks of attempts, which their attempt token authenticates.
    #[arg(long, env = "PIPEWEAVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// How long an idempotency key holds, in seconds, for tasks whose
    /// descriptor does not say (`idempotency.ttlSecs`).
    #[arg(long, env = "IDEMPOTENCY_TTL_SECONDS", default_value_t = 86_400)]
    pub idempotency_ttl_seconds: u32,
    /// Days a dead run stays in the dead-letter queue before it is purged.
    #[arg(long, env = "DLQ_RETENTION_DAYS", default_value_t = 30)]
    pub dlq_retention_days: u32,
    /// The storage backends, as the spec's JSON array (`[{"id":
    /// "primary-s3", "provider": "aws-s3", "bucket": …, "credentials": …}]`).
    /// When unset, one local backend in `PIPEWEAVE_STORAGE_DIR`.
    #[arg(long, env = "STORAGE_BACKENDS", hide_env_values = true)]
    pub storage_backends: Option<String>,
    /// Which of `STORAGE_BACKENDS` runs use when none is named (else the
    /// one marked `isDefault`, or the only one).
    #[arg(long, env = "DEFAULT_STORAGE_BACKEND_ID")]
    pub default_storage_backend_id: Option<String>,
    /// Where the default local backend keeps its files when
    /// `STORAGE_BACKENDS` is unset.
    #[arg(
        long,
        env = "PIPEWEAVE_STORAGE_DIR",
        default_value = "pipeweave-storage"
    )]
    pub storage_dir: String,
}

/// A configuration value that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required value is absent.
    #[error("{variable} is not set: {hint}")]
    Missing {
        /// The environment variable (the flag is named in the hint).
        variable: &'static str,
        /// What to set it to.
        hint: &'static str,
    },
    /// A value does not parse or is out of range.
    #[error("{variable} is invalid: {reason}")]
    Invalid {
        /// The environment variable.
        variable: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// PostgreSQL connection URL.
    pub database_url: String,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// How hosts and workers reach the API; no trailing slash.
    pub public_url: String,
    /// The 32-byte shared secret.
    pub secret_key: [u8; 32],
    /// Scheduling mode.
    pub mode: Mode,
    /// Default capacity of plain HTTP workers.
    pub max_concurrency: u32,
    /// Scheduler poll interval.
    pub poll_interval: Duration,
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Largest module upload.
    pub max_module_bytes: usize,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// How long a dead run stays in the dead-letter queue.
    pub dlq_retention: Duration,
    /// How long an idempotency key holds unless the task says.
    pub idempotency_ttl: Duration,
    /// The key writes must present, if any.
    pub api_key: Option<String>,
    /// Where inputs, outputs, assets and modules are stored.
    pub storage: pipeweave_storage::Backends,
}

impl Config {
    /// Adopts the address the listener actually got (`PORT=0` picks a free
    /// port); a default public URL follows it.
    pub fn bound_to(&mut self, address: SocketAddr) {
        if self.public_url == default_public_url(self.listen.port()) {
            self.public_url = default_public_url(address.port());
        }
        self.listen = address;
    }
}

fn default_public_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

impl Args {
    /// Checks every value; the first problem is the error.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let database_url = self.database_url.filter(|url| !url.is_empty()).ok_or(
            ConfigError::Missing {
                variable: "DATABASE_URL",
                hint: "set it (or --database-url) to a PostgreSQL URL such as postgres://user@localhost/pipeweave",
            },
        )?;
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid {
                variable: "DATABASE_URL",
                reason: "expected a URL starting with postgres:// or postgresql://".into(),
            });
        }
        let secret_key = parse_secret_key(self.secret_key.as_deref())?;
        if self.max_concurrency == 0 {
            return Err(ConfigError::Invalid {
                variable: "MAX_CONCURRENCY",
                reason: "must be at least 1".into(),
            });
        }
        let api_key = self.api_key.filter(|key| !key.is_empty());
        if api_key
            .as_ref()
            .is_some_and(|key| key.len() < 16 || key.chars().any(char::is_whitespace))
        {
            return Err(ConfigError::Invalid {
                variable: "PIPEWEAVE_API_KEY",
                reason:
                    "must be at least 16 characters without spaces (openssl rand -hex 24 makes one)"
                        .into(),
            });
        }
        if self.idempotency_ttl_seconds == 0 {
            return Err(ConfigError::Invalid {
                variable: "IDEMPOTENCY_TTL_SECONDS",
                reason: "must be at least 1".into(),
            });
        }
        if self.dlq_retention_days == 0 {
            return Err(ConfigError::Invalid {
                variable: "DLQ_RETENTION_DAYS",
                reason: "must be at least 1".into(),
            });
        }
        if self.poll_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                variable: "POLL_INTERVAL_MS",
                reason: "must be at least 1".into(),
            });
        }
        let storage = match self.storage_backends.as_deref().map(str::trim) {
            Some(json) if !json.is_empty() => pipeweave_storage::Backends::from_json(
                json,
                self.default_storage_backend_id.as_deref(),
            )
            .map_err(|error| ConfigError::Invalid {
                variable: "STORAGE_BACKENDS",
                reason: error.to_string(),
            })?,
            _ => {
                if self.default_storage_backend_id.is_some() {
                    return Err(ConfigError::Invalid {
                        variable: "DEFAULT_STORAGE_BACKEND_ID",
                        reason: "is set but STORAGE_BACKENDS is not".into(),
                    });
                }
                pipeweave_storage::Backends::local_default(self.storage_dir)
            }
        };
        let listen = SocketAddr::new(self.listen_host, self.port);
        let public_url = match self.public_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                url.trim_end_matches('/').to_owned()
            }
            Some(url) => {
                return Err(ConfigError::Invalid {
                    variable: "PIPEWEAVE_PUBLIC_URL",
                    reason: format!("{url:?} is not an http:// or https:// URL"),
                });
            }
            None => default_public_url(self.port),
        };
        Ok(Config {
            database_url,
            listen,
            public_url,
            secret_key,
            mode: self.mode,
            max_concurrency: self.max_concurrency,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_body_bytes: self.max_body_bytes,
            max_module_bytes: self.max_module_bytes,
            log_level: self.log_level,
            dlq_retention: Duration::from_secs(u64::from(self.dlq_retention_days) * 86_400),
            idempotency_ttl: Duration::from_secs(u64::from(self.idempotency_ttl_seconds)),
            api_key,
            storage,
        })
    }
}

fn parse_secret_key(text: Option<&str>) -> Result<[u8; 32], ConfigError> {
    let text = text.filter(|t| !t.is_empty()).ok_or(ConfigError::Missing {
        variable: "PIPEWEAVE_SECRET_KEY",
        hint: "set it (or --secret-key) to 64 hex digits, e.g. the output of `openssl rand -hex 32`; hosts and workers need the same value",
    })?;
    pipeweave_storage::parse_secret_key(text).map_err(|error| ConfigError::Invalid {
        variable: "PIPEWEAVE_SECRET_KEY",
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(flags: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["orchestrator"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv)
            .map_err(|e| ConfigError::Invalid {
                variable: "argv",
                reason: e.to_string(),
            })?
            .args
            .into_config()
    }

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn flags_give_a_config_with_the_readme_defaults() {
        let config = parse(&[
            "--database-url",
            "postgres://localhost/pw",
            "--secret-key",
            KEY,
        ]);
        let config = config.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listen.port(), 3000);
        assert_eq!(config.mode, Mode::Standalone);
        assert_eq!(config.max_concurrency, 10);
        assert_eq!(config.poll_interval, Duration::from_millis(1000));
        assert_eq!(config.secret_key[31], 0x1f);
        assert_eq!(config.public_url, "http://127.0.0.1:3000");
    }

    #[test]
    fn a_missing_or_malformed_value_names_its_variable() {
        // The test process may have these set; flags override them.
        let bad_url = parse(&["--database-url", "mysql://x", "--secret-key", KEY]);
        assert!(matches!(
            bad_url,
            Err(ConfigError::Invalid {
                variable: "DATABASE_URL",
                ..
            })
        ));
        let short_key = parse(&["--database-url", "postgres://x", "--secret-key", "abcd"]);
        let message = short_key.map(drop).unwrap_err().to_string();
        assert!(
            message.contains("PIPEWEAVE_SECRET_KEY") && message.contains("openssl rand -hex 32"),
            "{message}"
        );
        let zero = parse(&[
            "--database-url",
            "postgres://x",
            "--secret-key",
            KEY,
            "--max-concurrency",
            "0",
        ]);
        assert!(matches!(
            zero,
            Err(ConfigError::Invalid {
                variable: "MAX_CONCURRENCY",
                ..
            })
        ));
    }
}
