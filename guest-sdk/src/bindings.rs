//! The one place where `wit-bindgen` runs: bindings for `wit/task.wit`.
//!
//! The WASI interfaces that the world pulls in are not generated again: they
//! map to the `wasip2` crate's types, so an `ErrorCode` from
//! `wasi:http/outgoing-handler` here is the same type as `wasip2`'s.

wit_bindgen::generate!({
    path: "../wit",
    world: "pipeweave:task/task-world",
    with: {
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
    },
    // The export macro is used from task crates through `export_task!`.
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "$crate::__private",
});
