//! `fetch`: GETs `{"url": "http://127.0.0.1:PORT/..."}` with the SDK's HTTP
//! client and returns `{"status": 200, "body": "...", "bytes": N}`. It
//! declares the outbound host `127.0.0.1:*` (any port on 127.0.0.1), so the
//! host denies every other host, and a denied request fails the run without
//! retries, code `NETWORK_DENIED`.
//!
//! Build and run it from the workspace root, with something listening on
//! 127.0.0.1:8000 (such as `python3 -m http.server 8000`):
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p pipeweave-example-fetch
//! cargo run -- run target/wasm32-wasip2/release/fetch.wasm --input '{"url":"http://127.0.0.1:8000/"}'
//! ```

use pipeweave_sdk::{Context, Descriptor, Task, TaskError, TaskResult, export_task};
use serde::{Deserialize, Serialize};

/// The input: what to fetch.
#[derive(Debug, Deserialize)]
pub struct Input {
    /// An `http://127.0.0.1:PORT/...` URL.
    pub url: String,
}

/// The output: the response.
#[derive(Debug, Serialize)]
pub struct Output {
    /// The HTTP status code.
    pub status: u16,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
    /// The body's length in bytes.
    pub bytes: usize,
}

/// The task.
#[derive(Debug)]
pub struct Fetch;

impl Task for Fetch {
    type Input = Input;
    type Output = Output;

    fn describe() -> Descriptor {
        Descriptor::new("fetch")
            .description("Fetches a URL on 127.0.0.1")
            .timeout_secs(30)
            .outbound_host("127.0.0.1:*")
    }

    fn run(ctx: &Context<Input>) -> Result<TaskResult<Output>, TaskError> {
        let url = &ctx.input().url;
        ctx.info(format!("GET {url}"));
        let response = ctx.http().get(url)?;
        ctx.info(format!(
            "{url} answered {} with {} bytes",
            response.status,
            response.body.len()
        ));
        Ok(Output {
            status: response.status,
            body: response.text(),
            bytes: response.body.len(),
        }
        .into())
    }
}

export_task!(Fetch);
