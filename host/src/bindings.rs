//! Rust bindings for the `pipeweave:task` WIT package, generated once here.
//!
//! `wasi:io` and `wasi:http` map onto wasmtime-wasi's and
//! wasmtime-wasi-http's own bindings, so their types are not generated a
//! second time; only the `pipeweave:task` interfaces are new. The `task`
//! export is called asynchronously (so a guest can be interrupted and can
//! wait on outbound HTTP without blocking a thread); the `runtime` imports
//! are plain synchronous host functions.

#![allow(missing_docs, missing_debug_implementations, unreachable_pub)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "pipeweave:task/task-world",
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
    },
});

pub use pipeweave::task::runtime;
pub use pipeweave::task::types;
