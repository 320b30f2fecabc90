//! `secrets`: a task that uses secrets without handling them. Its
//! descriptor declares the secrets `api-token` and `api-key` and two
//! credentials, so the host, not the task, puts them on its requests:
//!
//! - `Authorization: Bearer <api-token>` on requests to `127.0.0.1:*`;
//! - `X-API-Key: <api-key>` on requests to `localhost:*`.
//!
//! A header the task sets itself is sent as it is. Heartbeats come every
//! 500 ms. Modes (`input.mode`):
//!
//! - `fetch`: GETs each of `urls`, with the extra `headers` if given, and
//!   returns `{"responses": [{"status", "body"}]}`.
//! - `leak`: reads `api-token` and does everything a task should not do
//!   with it: logs it, prints it to stdout and stderr, reports it as
//!   progress, and fails with it in its error's message and details. The
//!   host redacts every one of those to `[redacted:api-token]`.
//! - `slow`: logs `started`, sleeps `ms` milliseconds (default 2000), logs
//!   `finished` and returns `{"sleptMs": ms}`; its log can be read while it
//!   sleeps.
//!
//! Build and run it from the workspace root, with a `.secrets.yaml` holding
//! `api-token` and `api-key` and something listening on 127.0.0.1:8000
//! (such as `python3 -m http.server 8000`):
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p pipeweave-example-secrets
//! cargo run -- run target/wasm32-wasip2/release/secrets.wasm --secrets-file .secrets.yaml \
//!     --input '{"mode":"fetch","urls":["http://127.0.0.1:8000/"]}'
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use pipeweave_sdk::{Context, Descriptor, Request, Task, TaskError, TaskResult, export_task};
use serde::Deserialize;
use serde_json::{Value, json};

/// The input.
#[derive(Debug, Deserialize)]
pub struct Input {
    /// `fetch`, `leak` or `slow`.
    pub mode: String,
    /// `fetch`: the URLs to GET.
    #[serde(default)]
    pub urls: Vec<String>,
    /// `fetch`: headers to set on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `slow`: how long to sleep, in milliseconds.
    pub ms: Option<u64>,
}

/// The task.
#[derive(Debug)]
pub struct Secrets;

impl Task for Secrets {
    type Input = Input;
    type Output = Value;

    fn describe() -> Descriptor {
        Descriptor::new("secrets")
            .description("Calls APIs with credentials the host adds")
            .timeout_secs(30)
            .retries(0)
            .heartbeat_interval_ms(500)
            .outbound_hosts(["127.0.0.1:*", "localhost:*"])
            .secrets(["api-token", "api-key"])
            .credential("127.0.0.1:*", "api-token")
            .credential_header("localhost:*", "api-key", "X-API-Key")
    }

    fn run(ctx: &Context<Input>) -> Result<TaskResult<Value>, TaskError> {
        let input = ctx.input();
        match input.mode.as_str() {
            "fetch" => {
                let mut responses = Vec::new();
                for url in &input.urls {
                    let mut request = Request::get(url);
                    for (name, value) in &input.headers {
                        request = request.header(name, value);
                    }
                    let response = ctx.http().request(request)?;
                    ctx.info(format!("{url} answered {}", response.status));
                    responses.push(json!({ "status": response.status, "body": response.text() }));
                }
                Ok(json!({ "responses": responses }).into())
            }
            "leak" => {
                let token = ctx.secret("api-token")?;
                ctx.info(format!("the token is {token}"));
                println!("stdout has the token {token}");
                eprintln!("stderr has the token {token}");
                ctx.progress(50, &format!("using {token}"));
                Err(TaskError::fatal(format!("the API refused token {token}"))
                    .with_code("LEAKED")
                    .with_details(json!({ "token": token })))
            }
            "slow" => {
                let ms = input.ms.unwrap_or(2_000);
                ctx.info("started");
                std::thread::sleep(Duration::from_millis(ms));
                ctx.info("finished");
                Ok(json!({ "sleptMs": ms }).into())
            }
            other => {
                Err(TaskError::fatal(format!("unknown mode `{other}`")).with_code("UNKNOWN_MODE"))
            }
        }
    }
}

export_task!(Secrets);
