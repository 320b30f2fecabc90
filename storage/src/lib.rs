//! PipeWeave's data plane: where inputs, outputs, assets and modules live,
//! and how hosts and workers reach them without the orchestrator in the
//! way.
//!
//! - [`backend`]: storage backends as the spec configures them (local
//!   directory, S3, S3-compatible servers such as MinIO, GCS), opened with
//!   the `object_store` crate;
//! - [`token`]: sealed storage tokens (AES-256-GCM under a key derived
//!   from `PIPEWEAVE_SECRET_KEY`) carrying a backend, an expiry and a
//!   scope;
//! - [`scope`]: the path prefixes a token may read and write;
//! - [`secret_box`]: task secrets sealed at rest in the orchestrator's
//!   database and sealed again for each dispatch;
//! - [`layout`]: where a run's input, outputs, assets and logs live;
//! - [`transfer`]: streaming files to a store with bounded memory.
//!
//! The orchestrator and the host both depend on this crate; neither depends
//! on the other.

pub mod backend;
pub mod layout;
pub mod scope;
pub mod secret_box;
pub mod token;
pub mod transfer;

pub use backend::{BackendConfig, Backends, ConfigError, Provider, PublicBackend, Stores};
pub use object_store;
pub use scope::{Access, Scope, ScopeError};
pub use secret_box::{SecretBox, SecretBoxError};
pub use token::{Grant, InvalidSecretKey, Sealer, TokenError, parse_secret_key};
