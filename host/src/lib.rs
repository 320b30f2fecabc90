//! The PipeWeave host: runs task components under wasmtime, each attempt in
//! its own sandbox.
//!
//! A task is a WebAssembly component that implements the `pipeweave:task`
//! world (see `wit/task.wit`). The [`Runner`] loads it once (compiling it,
//! or taking the compiled artifact from its cache) and then runs attempts:
//! each gets a fresh store with a memory limit, a wall-clock deadline
//! enforced by epoch interruption, an empty temporary directory as its only
//! filesystem, an empty environment, outbound HTTP limited to the hosts the
//! task declared (carrying the credentials it declared, added by the host),
//! and only the secrets it declared, whose values are redacted from what it
//! reports. Whatever the guest does — return, fail, trap, panic,
//! spin, exhaust memory, reach for an undeclared host — ends up in a
//! [`RunReport`] for that attempt, and the runner carries on.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use pipeweave_host::{RunRequest, Runner, RunnerConfig};
//!
//! let runner = Runner::new(RunnerConfig::default())?;
//! let task = runner.load_file("hello.wasm".as_ref()).await?;
//! let report = runner.run(&task, RunRequest::new(serde_json::json!({"name": "Ada"}))).await?;
//! match report.outcome {
//!     Ok(success) => println!("{}", success.output),
//!     Err(failure) => eprintln!("{}: {}", failure.reason, failure.message),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`runner`]: [`Runner`], [`LoadedTask`], [`RunRequest`], [`RunReport`]:
//!   loading and running, and the classification of failures.
//! - [`engine`]: the wasmtime engine and what each knob is for.
//! - [`events`]: what a running attempt reports (logs, output, progress).
//! - [`cancel`]: cancelling a running attempt.
//! - [`human`]: sizes and durations written for people.
//! - [`secrets`]: [`SecretStore`] (a secrets directory or `.secrets.yaml`),
//!   which secrets an attempt gets, and the [`Redactor`] that keeps their
//!   values out of its logs and errors.
//! - [`server`]: the dispatch server of `pipeweave host`: attempts from the
//!   orchestrator over HTTP, heartbeats and callbacks.
//! - `bindings`: the generated `pipeweave:task` bindings.
//! - `state`: the store's contents and the host functions guests call.
//! - `sandbox`: the per-attempt directory pool.
//! - `cache`: compiled components in memory and on disk.

mod bindings;
mod cache;
pub mod cancel;
pub mod engine;
mod error;
pub mod events;
pub mod human;
pub mod runner;
mod sandbox;
pub mod secrets;
pub mod server;
mod state;

pub use cancel::CancelToken;
pub use engine::EngineConfig;
pub use error::{Error, Result};
pub use events::{DiscardEvents, EventSink, RunEvent, StdStream};
pub use runner::{Failure, LoadedTask, RunReport, RunRequest, Runner, RunnerConfig, TaskSuccess};
pub use secrets::{Redactor, SecretStore, SecretsError};
pub use state::AssetRecord;
