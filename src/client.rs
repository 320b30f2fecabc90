//! What every command that talks to a running orchestrator shares: where it
//! is (`--url`/`PIPEWEAVE_URL`), its API key (`--api-key`/
//! `PIPEWEAVE_API_KEY`) and the output format (`--json`).

// Used by the commands being built this session; remove with the placeholders.
#![allow(dead_code)]

/// The flags of every client command.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// The orchestrator's base URL.
    #[arg(
        long,
        env = "PIPEWEAVE_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub(crate) url: String,
    /// The orchestrator's API key, if it requires one.
    #[arg(long, env = "PIPEWEAVE_API_KEY", hide_env_values = true, global = true)]
    pub(crate) api_key: Option<String>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}
