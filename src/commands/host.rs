//! `pipeweave host`: runs WebAssembly tasks for an orchestrator. It
//! registers itself, receives dispatches over HTTP, fetches each module
//! once by code hash, and runs attempts in the same sandbox as
//! `pipeweave run`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use pipeweave_host::server::ServerConfig;
use pipeweave_host::{Runner, RunnerConfig, SecretStore};

use crate::cli::{CommandError, exit};

const HELP: &str = "\
Examples:
  PIPEWEAVE_SECRET_KEY=… pipeweave host --orchestrator http://orchestrator:3000
                                     take work on 127.0.0.1:4000, one attempt per CPU at a time
  pipeweave host --listen 0.0.0.0:4000 --public-url http://host-1:4000 --capacity 8
                                     reachable from other machines
  pipeweave host --secrets-dir /run/secrets
                                     tasks get the secrets they declare from a mounted directory
  pipeweave host --capacity 2 --prefetch 64
                                     short tasks: two run at a time, 64 more wait on the host
                                     so a slot never idles for a dispatch round trip

The host registers itself with the orchestrator, fetches each module by its
code hash the first time it needs it (then runs it from its compiled
cache), runs every attempt in a fresh sandbox, sends heartbeats while the
guest runs and calls back with the result. PIPEWEAVE_SECRET_KEY must be
the orchestrator's.";

/// Flags of `pipeweave host`.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub(crate) struct HostArgs {
    /// The orchestrator to take work from.
    #[arg(
        long,
        env = "PIPEWEAVE_ORCHESTRATOR_URL",
        default_value = "http://127.0.0.1:3000"
    )]
    orchestrator: String,
    /// Address to receive dispatches on (port 0 picks a free one).
    #[arg(long, env = "PIPEWEAVE_HOST_LISTEN", default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// How the orchestrator reaches this host. Default: http://<listen
    /// address>.
    #[arg(long, env = "PIPEWEAVE_HOST_PUBLIC_URL")]
    public_url: Option<String>,
    /// Attempts to run at once. Default: the number of CPUs.
    #[arg(long, env = "PIPEWEAVE_HOST_CAPACITY")]
    capacity: Option<usize>,
    /// Dispatches to accept beyond --capacity and hold until a slot frees.
    /// Held attempts count as running on the orchestrator and start without
    /// waiting for the next claim and dispatch, which keeps the slots busy
    /// when tasks are short. Leave it at 0 when tasks are long and other
    /// hosts could take the work sooner.
    #[arg(long, env = "PIPEWEAVE_HOST_PREFETCH", default_value_t = 0)]
    prefetch: usize,
    /// This host's id. Default: host-<port>.
    #[arg(long, env = "PIPEWEAVE_HOST_ID")]
    host_id: Option<String>,
    /// Where compiled components are cached.
    #[arg(long, env = "PIPEWEAVE_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The orchestrator's API key, if it requires one for writes.
    #[arg(long, env = "PIPEWEAVE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The deployment's shared secret, 64 hex digits: the orchestrator's
    /// PIPEWEAVE_SECRET_KEY. It opens the storage token of each dispatch.
    #[arg(long, env = "PIPEWEAVE_SECRET_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// A directory of secrets for tasks, one file per secret: the file
    /// name is the secret's name, its contents (minus one trailing newline)
    /// the value, as a Kubernetes or Docker secret mount has them. Each
    /// attempt gets only the secrets its task declared.
    #[arg(long, env = "PIPEWEAVE_SECRETS_DIR", value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// A YAML file of secrets for tasks, `name: value` per line (such as
    /// `.secrets.yaml`); with --secrets-dir too, the file wins on a name
    /// both hold.
    #[arg(long, env = "PIPEWEAVE_SECRETS_FILE", value_name = "FILE")]
    secrets_file: Option<PathBuf>,
}

/// The secrets of `--secrets-dir` and `--secrets-file`, if given.
fn load_secrets(dir: Option<&Path>, file: Option<&Path>) -> anyhow::Result<SecretStore> {
    let mut secrets = SecretStore::empty();
    if let Some(dir) = dir {
        secrets = SecretStore::from_dir(dir).context("--secrets-dir")?;
    }
    if let Some(file) = file {
        secrets = secrets.merged(&SecretStore::from_yaml_file(file).context("--secrets-file")?);
    }
    Ok(secrets)
}

/// Serves until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: HostArgs) -> Result<u8, CommandError> {
    let orchestrator_url = args.orchestrator.trim_end_matches('/').to_owned();
    if !(orchestrator_url.starts_with("http://") || orchestrator_url.starts_with("https://")) {
        return Err(CommandError::usage(anyhow::anyhow!(
            "--orchestrator {orchestrator_url:?} is not an http:// or https:// URL"
        )));
    }
    let secret_key = args
        .secret_key
        .as_deref()
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "PIPEWEAVE_SECRET_KEY is not set: set it (or --secret-key) to the orchestrator's PIPEWEAVE_SECRET_KEY, \
                 which opens the storage tokens of dispatches"
            )
        })
        .and_then(|key| {
            pipeweave_storage::parse_secret_key(key)
                .map_err(|error| anyhow::anyhow!("PIPEWEAVE_SECRET_KEY is invalid: {error}"))
        })
        .map_err(CommandError::usage)?;
    let secrets = load_secrets(args.secrets_dir.as_deref(), args.secrets_file.as_deref())
        .map_err(CommandError::usage)?;
    let capacity = args
        .capacity
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    if capacity == 0 {
        return Err(CommandError::usage(anyhow::anyhow!(
            "--capacity must be at least 1"
        )));
    }
    if capacity.saturating_add(args.prefetch) > i32::MAX as usize {
        return Err(CommandError::usage(anyhow::anyhow!(
            "--capacity plus --prefetch must be at most {}",
            i32::MAX
        )));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))
        .map_err(CommandError::usage)?;
    let address = listener.local_addr().map_err(CommandError::internal)?;
    let public_url = match args.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None if address.ip().is_unspecified() => format!("http://127.0.0.1:{}", address.port()),
        None => format!("http://{address}"),
    };
    let runner = Runner::new(RunnerConfig {
        cache_dir: args.cache_dir.or_else(super::run::default_cache_dir),
        ..RunnerConfig::default()
    })
    .map_err(CommandError::internal)?;
    let config = ServerConfig {
        orchestrator_url,
        public_url,
        host_id: args
            .host_id
            .unwrap_or_else(|| format!("host-{}", address.port())),
        capacity,
        prefetch: args.prefetch,
        api_key: args.api_key.filter(|key| !key.is_empty()),
        secret_key,
        secrets,
    };
    tracing::info!(%address, capacity, prefetch = config.prefetch, host_id = %config.host_id, secrets = config.secrets.len(), "host started");
    println!("listening on http://{address}");
    pipeweave_host::server::serve(listener, Arc::new(runner), config, super::stop_signal())
        .await
        .map_err(CommandError::internal)?;
    Ok(exit::SUCCESS)
}
