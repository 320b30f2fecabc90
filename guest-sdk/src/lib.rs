//! The PipeWeave guest SDK: write a PipeWeave task in plain Rust and build it
//! into a WebAssembly component, without touching `wit-bindgen` or the WIT
//! contract (`wit/task.wit`).
//!
//! A task is a type that implements [`Task`]: [`Task::describe`] returns its
//! [`Descriptor`] (id, timeout, retries, the hosts and secrets its sandbox
//! may use, …) and [`Task::run`] turns a typed input into a typed output
//! through a [`Context`], which also gives logs, progress, assets, secrets
//! and outbound HTTP. [`export_task!`] makes the type the component's
//! implementation of the `task` interface. Build with
//! `cargo build --release --target wasm32-wasip2`.
//!
//! # Layout
//!
//! - [`Task`]: the trait a task implements; [`export_task!`] exports it.
//! - [`Descriptor`], [`Credential`], [`Idempotency`], [`RetryBackoff`]:
//!   what the task declares before it runs, with the contract's defaults.
//! - [`Context`], [`PreviousAttempt`]: the input, run metadata, upstream
//!   outputs, logs ([`LogLevel`]), progress, assets ([`AssetKind`]) and
//!   secrets of one attempt.
//! - [`TaskResult`], [`TaskError`]: what an attempt returns.
//! - [`HttpClient`], [`Request`], [`Response`], [`HttpError`]: outbound HTTP
//!   over `wasi:http`, limited by the host to the declared hosts.
//! - [`serde`] and [`serde_json`] are re-exported for convenience, and
//!   [`pipeweave_protocol`], where [`Descriptor`] and the enums come from.
//!
//! Inside the sandbox, `std::fs` sees only the attempt's empty temporary
//! directory, preopened as `/`; assets live under [`ASSETS_DIR`]. The
//! environment is empty. A panic fails the attempt; the SDK reports its
//! message and location to the host first.
//!
//! # Example
//!
//! A whole task, `src/lib.rs` of a crate with `crate-type = ["cdylib"]`:
//!
//! ```
//! use pipeweave_sdk::{export_task, Context, Descriptor, Task, TaskError, TaskResult};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Input {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Output {
//!     greeting: String,
//! }
//!
//! struct Greet;
//!
//! impl Task for Greet {
//!     type Input = Input;
//!     type Output = Output;
//!
//!     fn describe() -> Descriptor {
//!         Descriptor::new("greet")
//!             .description("Greets someone")
//!             .timeout_secs(10)
//!             .allowed_next(["send-email"])
//!     }
//!
//!     fn run(ctx: &Context<Input>) -> Result<TaskResult<Output>, TaskError> {
//!         let name = ctx.input().name.trim();
//!         if name.is_empty() {
//!             return Err(TaskError::fatal("name is empty").with_code("EMPTY_NAME"));
//!         }
//!         ctx.info(format!("greeting {name}"));
//!         ctx.add_text_asset("greeting.txt", &format!("Hello, {name}!"))?;
//!         Ok(TaskResult::new(Output { greeting: format!("Hello, {name}!") })
//!             .run_next(["send-email"]))
//!     }
//! }
//!
//! export_task!(Greet);
//! # fn main() {}
//! ```

#![deny(missing_docs)]

mod adapter;
#[allow(
    unsafe_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations,
    clippy::all
)]
mod bindings;
mod context;
mod descriptor;
mod error;
mod http;
mod task;
mod types;

pub use context::{ASSETS_DIR, Context, PreviousAttempt};
pub use descriptor::{Credential, Descriptor, Idempotency};
pub use error::{TaskError, TaskResult};
pub use http::{HttpClient, HttpError, Request, Response};
pub use pipeweave_protocol;
pub use task::Task;
pub use types::{AssetKind, LogLevel, RetryBackoff};

pub use serde;
pub use serde_json;

/// Exports a [`Task`] as the component's implementation of the
/// `pipeweave:task/task` interface: `export_task!(MyTask);`, once, in the
/// task crate's `lib.rs` (see the [crate example](crate#example)). It
/// works in crates that `#![forbid(unsafe_code)]`.
#[macro_export]
macro_rules! export_task {
    ($task:ty) => {
        const _: () = {
            struct __PipeWeaveTaskExport;

            impl $crate::__private::Guest for __PipeWeaveTaskExport {
                fn describe() -> $crate::__private::WitDescriptor {
                    $crate::__private::describe::<$task>()
                }

                fn run(
                    ctx: $crate::__private::WitContext,
                ) -> ::core::result::Result<
                    $crate::__private::WitTaskResult,
                    $crate::__private::WitTaskError,
                > {
                    $crate::__private::run::<$task>(ctx)
                }
            }

    $crate::__private::export!(__PipeWeaveTaskExport with_types_in $crate::__private);
        };
    };
}

/// Support for [`export_task!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::export;
    pub use crate::bindings::exports;
    pub use crate::bindings::exports::pipeweave::task::task::Guest;
    pub use crate::bindings::pipeweave::task::types::{
        Context as WitContext, Descriptor as WitDescriptor, TaskError as WitTaskError,
        TaskResult as WitTaskResult,
    };

    /// `task.describe` for `T`.
    pub fn describe<T: crate::Task>() -> WitDescriptor {
        crate::adapter::describe::<T>()
    }

    /// `task.run` for `T`.
    pub fn run<T: crate::Task>(ctx: WitContext) -> Result<WitTaskResult, WitTaskError> {
        crate::adapter::run::<T>(ctx)
    }
}
