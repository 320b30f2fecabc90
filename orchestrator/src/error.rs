//! The orchestrator's library error. API handlers turn it into an HTTP
//! answer in `api::error`; binaries print it with its causes.

/// What went wrong inside the orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query failed or the database could not be reached.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// The migrations could not be applied.
    #[error("cannot apply the database migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON value does not have the shape this version expects.
    #[error("stored {what} is not valid")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// The listening socket failed.
    #[error("cannot serve HTTP")]
    Serve(#[source] std::io::Error),
    /// The metrics could not be written out.
    #[error("cannot encode the metrics")]
    Metrics,
    /// A storage backend could not be opened.
    #[error("storage")]
    Storage(#[from] pipeweave_storage::ConfigError),
    /// An object-storage read or write failed.
    #[error("object storage")]
    ObjectStore(#[from] pipeweave_storage::object_store::Error),
    /// A task secret could not be sealed or opened.
    #[error("task secrets")]
    Secrets(#[from] pipeweave_storage::SecretBoxError),
}

/// The orchestrator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
