//! What every command that talks to a running orchestrator shares: where it
//! is (`--url`/`PIPEWEAVE_URL`), its API key (`--api-key`/
//! `PIPEWEAVE_API_KEY`), the output format (`--json`), and [`ApiClient`],
//! which calls the HTTP API and turns each way a call can fail into an
//! error that says what to do, with the exit code that goes with it:
//!
//! | failure | exit code |
//! | --- | --- |
//! | the orchestrator cannot be reached | [`exit::UNREACHABLE`] |
//! | 404: the run, pipeline, service… does not exist | [`exit::NOT_FOUND`] |
//! | 409: not in a state for that (already ended, already retried) | [`exit::CONFLICT`] |
//! | 400, 401, 413: the request or the API key is wrong | [`exit::USAGE`] |
//! | 5xx, or an answer that is not the API's JSON | [`exit::INTERNAL`] |

use std::time::Duration;

use anyhow::anyhow;
use reqwest::StatusCode;
use serde_json::Value;

use crate::cli::{CommandError, exit};

/// The flags of every client command.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClientArgs {
    /// The orchestrator's base URL.
    #[arg(
        long,
        alias = "orchestrator",
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

/// How long one API call may take before it counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Calls one orchestrator's HTTP API.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl ApiClient {
    /// A client for the orchestrator the flags name.
    pub(crate) fn new(args: &ClientArgs) -> Result<Self, CommandError> {
        let base = args.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CommandError::usage(anyhow!(
                "--url {:?} is not an http:// or https:// URL; pass the orchestrator's address, such as http://127.0.0.1:3000",
                args.url
            )));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| CommandError::internal(anyhow!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            api_key: args.api_key.clone().filter(|key| !key.is_empty()),
        })
    }

    /// The orchestrator's base URL, without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, answered with JSON.
    pub(crate) async fn get(&self, path: &str) -> Result<Value, CommandError> {
        let request = self.http.get(self.url(path));
        self.send(request, path).await
    }

    /// `POST path` with an optional JSON body, answered with JSON.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CommandError> {
        let mut request = self.http.post(self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request, path).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        mut request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<Value, CommandError> {
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| {
                CommandError::internal(anyhow!(
                    "{} answered {path} with something that is not JSON ({e}); is --url the address of a PipeWeave orchestrator?",
                    self.base
                ))
            });
        }
        Err(self.refused(status, path, &text))
    }

    /// The error for a call that got no answer.
    fn unreachable(&self, error: reqwest::Error) -> CommandError {
        let what = if error.is_timeout() {
            format!(
                "the orchestrator at {} did not answer in time: is it overloaded, or is --url the right address?",
                self.base
            )
        } else {
            format!(
                "cannot reach the orchestrator at {}: is it running? start one with `pipeweave dev`, or pass --url",
                self.base
            )
        };
        CommandError {
            code: exit::UNREACHABLE,
            error: anyhow::Error::new(error).context(what),
        }
    }

    /// The error for an answer that is not a success: the API's message
    /// and field, and what to do about it.
    fn refused(&self, status: StatusCode, path: &str, text: &str) -> CommandError {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let message = body["error"].as_str().map(str::to_owned);
        let field = body["field"].as_str();
        let with_field = |message: String| match field {
            Some(field) if !message.starts_with(field) => format!("{message} (field {field})"),
            _ => message,
        };
        let (code, text) = match status {
            StatusCode::NOT_FOUND => (
                exit::NOT_FOUND,
                match message {
                    Some(message) => message,
                    None => format!(
                        "the orchestrator at {} has no {path}: is --url the address of a PipeWeave orchestrator of this version?",
                        self.base
                    ),
                },
            ),
            StatusCode::CONFLICT => (
                exit::CONFLICT,
                message.unwrap_or_else(|| "the request conflicts with the current state".into()),
            ),
            StatusCode::UNAUTHORIZED => (
                exit::USAGE,
                if self.api_key.is_some() {
                    "the orchestrator refused the API key: check --api-key or PIPEWEAVE_API_KEY"
                        .to_owned()
                } else {
                    "the orchestrator requires an API key: pass --api-key or set PIPEWEAVE_API_KEY"
                        .to_owned()
                },
            ),
            status if status.is_client_error() => (
                exit::USAGE,
                with_field(message.unwrap_or_else(|| format!("{status}"))),
            ),
            status => {
                let request_id = body["requestId"]
                    .as_str()
                    .map(|id| format!(" (request id {id}: the orchestrator's log has the cause)"))
                    .unwrap_or_default();
                (
                    exit::INTERNAL,
                    format!(
                        "the orchestrator failed ({status}): {}{request_id}",
                        message.unwrap_or_else(|| "no details".into())
                    ),
                )
            }
        };
        CommandError {
            code,
            error: anyhow!(text),
        }
    }
}

/// Prints a JSON value on stdout, pretty, for `--json`.
pub(crate) fn print_json(value: &Value) -> Result<(), CommandError> {
    let text = serde_json::to_string_pretty(value).map_err(CommandError::internal)?;
    println!("{text}");
    Ok(())
}

/// Whether `id` names a pipeline run (`prun_…`) rather than a task run.
pub(crate) fn is_pipeline_run(id: &str) -> bool {
    id.starts_with("prun_")
}

/// Checks that `id` is a run id the API takes (`trun_` or `prun_` and 32
/// hex digits), so a typo is a usage error rather than a 400.
pub(crate) fn check_run_id(id: &str) -> Result<(), CommandError> {
    let hex = id
        .strip_prefix("trun_")
        .or_else(|| id.strip_prefix("prun_"));
    match hex {
        Some(hex) if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) => Ok(()),
        _ => Err(CommandError::usage(anyhow!(
            "{id:?} is not a run id: task runs are `trun_` and pipeline runs `prun_`, each followed by 32 hex digits (see `pipeweave status`)"
        ))),
    }
}

/// Percent-encodes one path segment (a service, pipeline or task id).
pub(crate) fn segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_need_a_prefix_and_32_hex_digits() {
        assert!(check_run_id("trun_019ac2a1f3e27c55a1b2c3d4e5f60718").is_ok());
        assert!(check_run_id("prun_019ac2a1f3e27c55a1b2c3d4e5f60718").is_ok());
        assert!(check_run_id("run_019ac2a1f3e27c55a1b2c3d4e5f60718").is_err());
        assert!(check_run_id("trun_019ac2").is_err());
        assert!(check_run_id("trun_019ac2a1f3e27c55a1b2c3d4e5f6071z").is_err());
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("pdf-processor.v2"), "pdf-processor.v2");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
