//! [`Descriptor`]: what a task tells the host before it runs.
//!
//! It is [`pipeweave_protocol::TaskDescriptor`], the same type the host and
//! the orchestrator use, so its defaults and rules are defined once. This
//! module only turns it into the WIT record.
//!
//! ```
//! use pipeweave_sdk::{Descriptor, Idempotency, RetryBackoff};
//!
//! let descriptor = Descriptor::new("extract-text")
//!     .description("Extracts the text of a PDF")
//!     .allowed_next(["index", "summarise"])
//!     .timeout_secs(60)
//!     .retries(5)
//!     .retry_backoff(RetryBackoff::Fixed)
//!     .idempotency(Idempotency::new().input_fields(["/documentId"]))
//!     .outbound_host("api.example.com")
//!     .secret("api-token")
//!     // The host sends `Authorization: Bearer <api-token>` to api.example.com.
//!     .credential("api.example.com", "api-token")
//!     .memory_limit_bytes(256 << 20);
//! assert_eq!(descriptor.timeout, 60);
//! assert_eq!(descriptor.priority, 100);
//! ```

pub use pipeweave_protocol::{Credential, Idempotency, TaskDescriptor as Descriptor};

use crate::bindings::pipeweave::task::types as wit;

/// The WIT record for a descriptor.
pub(crate) fn into_wit(descriptor: Descriptor) -> wit::Descriptor {
    wit::Descriptor {
        id: descriptor.id,
        description: descriptor.description,
        allowed_next: descriptor.allowed_next,
        timeout_secs: descriptor.timeout,
        retries: descriptor.retries,
        retry_backoff: descriptor.retry_backoff.into(),
        retry_delay_ms: descriptor.retry_delay_ms,
        max_retry_delay_ms: descriptor.max_retry_delay_ms,
        heartbeat_interval_ms: descriptor.heartbeat_interval_ms,
        concurrency: descriptor.concurrency,
        priority: descriptor.priority,
        idempotency: descriptor.idempotency.map(|i| wit::Idempotency {
            input_fields: i.input_fields,
            include_code_version: i.include_code_version,
            ttl_secs: i.ttl_secs,
        }),
        outbound_hosts: descriptor.outbound_hosts,
        secrets: descriptor.secrets,
        credentials: descriptor
            .credentials
            .into_iter()
            .map(|c| wit::Credential {
                host: c.host,
                secret: c.secret,
                header: c.header,
            })
            .collect(),
        memory_limit_bytes: descriptor.memory_limit_bytes,
    }
}
