//! Types that every part of PipeWeave agrees on, with no runtime attached.
//!
//! The orchestrator, the wasmtime host, plain HTTP workers and the CLI meet
//! only here: this crate has no tokio, axum, sqlx or wasmtime, so each side
//! can depend on it without pulling in the others.
//!
//! # Layout
//!
//! - [`attempt`]: [`PreviousAttempt`], what a retry is told about earlier
//!   failures.
//! - `code_hash` (feature `code-hash`, on by default): `CodeHash`, the
//!   identity of a task's code (the SHA-256 of a component's bytes).
//! - [`descriptor`]: [`TaskDescriptor`], a task's id, scheduling options and
//!   sandbox grants (outbound hosts, secrets, [`Credential`]s), with the
//!   spec's defaults and validation.
//! - [`outbound`]: [`OutboundRule`], the parsed form of a declared outbound
//!   host and the one function that decides whether a request may go out.
//! - [`failure`]: [`FailureReason`], why an attempt failed, and the error
//!   codes that later attempts see.
//! - [`wire`]: the HTTP messages between the orchestrator and hosts or
//!   plain HTTP workers (registration, dispatch, heartbeat, callback).

pub mod attempt;
#[cfg(feature = "code-hash")]
pub mod code_hash;
pub mod descriptor;
pub mod failure;
pub mod outbound;
pub mod wire;

pub use attempt::PreviousAttempt;
#[cfg(feature = "code-hash")]
pub use code_hash::{CodeHash, InvalidCodeHash};
pub use descriptor::{
    AssetKind, Credential, DescriptorError, Idempotency, LogLevel, RetryBackoff, TaskDescriptor,
};
pub use failure::FailureReason;
pub use outbound::{InvalidOutboundRule, OutboundRule, OutboundRules};
