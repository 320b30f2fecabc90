//! Errors of the host itself: a component that cannot be loaded, an engine
//! that cannot be built, a cache that cannot be written. A task that fails
//! while running is not an error of the host: it is a [`crate::RunReport`]
//! with a [`crate::Failure`].

use std::path::PathBuf;

use pipeweave_protocol::DescriptorError;

/// What went wrong in the host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// wasmtime rejected the engine configuration.
    #[error("cannot build the wasmtime engine: {0}")]
    Engine(String),
    /// The bytes are not a WebAssembly component that wasmtime can compile.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// The component does not export the `pipeweave:task/task` interface or
    /// imports something the host does not provide.
    #[error("the component is not a PipeWeave task: {0}")]
    NotATask(String),
    /// `describe` trapped, timed out or returned something unusable.
    #[error("the task's describe() failed: {0}")]
    Describe(String),
    /// `describe` returned a descriptor that breaks a rule.
    #[error("the task's descriptor is invalid: {0}")]
    Descriptor(#[from] DescriptorError),
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A sandbox directory could not be created.
    #[error("cannot create a sandbox directory under {path}: {source}")]
    Sandbox {
        /// The base directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
