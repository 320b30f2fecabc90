//! `hello`: the smallest PipeWeave task. It turns `{"name": "Ada"}` into
//! `{"greeting": "Hello, Ada!", "length": 11}`, logs at info and reports
//! progress at 50 % and 100 %. With `"excited": true` the greeting ends in
//! `!!!`. An empty name fails the run without retries, code `EMPTY_NAME`.
//!
//! Build and run it from the workspace root:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p pipeweave-example-hello
//! cargo run -- run target/wasm32-wasip2/release/hello.wasm --input '{"name":"Ada"}'
//! ```
//!
//! `cargo component build --release -p pipeweave-example-hello` builds it
//! too (see `[package.metadata.component]` in its `Cargo.toml`).

use pipeweave_sdk::{Context, Descriptor, Task, TaskError, TaskResult, export_task};
use serde::{Deserialize, Serialize};

/// The input: who to greet, and how loudly.
#[derive(Debug, Deserialize)]
pub struct Input {
    /// The name to greet; must not be blank.
    pub name: String,
    /// Ends the greeting in `!!!` instead of `!`.
    #[serde(default)]
    pub excited: bool,
}

/// The output: the greeting and its length in characters.
#[derive(Debug, Serialize)]
pub struct Output {
    /// Such as `Hello, Ada!`.
    pub greeting: String,
    /// The number of characters in `greeting`.
    pub length: usize,
}

/// The task.
#[derive(Debug)]
pub struct Hello;

impl Task for Hello {
    type Input = Input;
    type Output = Output;

    fn describe() -> Descriptor {
        Descriptor::new("hello")
            .description("Greets the name in its input")
            .timeout_secs(30)
    }

    fn run(ctx: &Context<Input>) -> Result<TaskResult<Output>, TaskError> {
        let input = ctx.input();
        let name = input.name.trim();
        if name.is_empty() {
            return Err(TaskError::fatal("the input's `name` is empty").with_code("EMPTY_NAME"));
        }
        ctx.info(format!("greeting {name} (attempt {})", ctx.attempt()));
        ctx.progress(50, "composing the greeting");
        let bang = if input.excited { "!!!" } else { "!" };
        let greeting = format!("Hello, {name}{bang}");
        let length = greeting.chars().count();
        ctx.progress(100, "done");
        Ok(Output { greeting, length }.into())
    }
}

export_task!(Hello);
