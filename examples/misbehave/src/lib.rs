//! `misbehave`: one task for the host's tests, which does what `input.mode`
//! asks, well or badly. Its descriptor: id `misbehave`, timeout 5 s,
//! heartbeats every 500 ms (so a lost host is noticed within a second), memory
//! limit 64 MiB, `allowed_next` `["a", "b"]`, outbound host `127.0.0.1:*`,
//! secret `api-token`, other options at their defaults.
//!
//! Modes (other input fields as noted; an unknown mode fails without
//! retries, code `UNKNOWN_MODE`):
//!
//! - `ok`: returns `{"ok": true}`.
//! - `spin`: busy-loops forever (for timeouts and epoch interruption).
//! - `sleep`: sleeps `ms` milliseconds (default 60 000) with
//!   `std::thread::sleep`, then returns `{"sleptMs": ms}`.
//! - `alloc`: allocates `mib` MiB (default 128) in a `Vec` and writes every
//!   page, then returns `{"allocatedMib": mib, "pagesTouched": N}`; past the
//!   memory limit the allocation fails and the guest traps.
//! - `panic`: panics with `message` (default `misbehave panicked`).
//! - `stack_overflow`: recurses without bound, in a way the optimiser cannot
//!   turn into a loop, until the engine's wasm call stack is exhausted
//!   (wasmtime: "call stack exhausted", `Trap::StackOverflow`).
//! - `shadow_stack_overflow`: recurses with a 1 KiB buffer in every frame, so
//!   the shadow stack in linear memory runs out first; that shows as an
//!   out-of-bounds memory access trap.
//! - `trap`: executes `unreachable`.
//! - `huge_output`: returns `{"data": "xxx…"}` with a string of `mib` MiB
//!   (default 16).
//! - `fail`: returns a task error with `code` (default `REQUESTED_FAILURE`),
//!   `message` (default `requested failure`), retryable if `retryable`
//!   (default false).
//! - `write_marker`: stores `marker` (default `marker`) as the text asset
//!   `marker` and writes it to the plain file `/private.txt`; returns
//!   `{"written": true}`.
//! - `list_sandbox`: returns `{"entries": [...], "privateExists": bool}`, the
//!   recursive listing of `/` (folders end in `/`) and whether
//!   `/private.txt` exists.
//! - `escape`: tries to read `/etc/passwd`, `../../etc/passwd` and
//!   `/proc/self/environ` and lists `std::env::vars()`; returns
//!   `{"succeeded": [paths read], "attempts": [{"path", "ok", "detail"}],
//!   "env": ["NAME=value", ...]}`.
//! - `fetch`: GETs `url` with the SDK client; returns
//!   `{"status", "body"}`, or the SDK's task error (`NETWORK_DENIED`,
//!   `HTTP_ERROR`).
//! - `stdout`: prints `lines` lines (default 10) to stdout and to stderr;
//!   returns `{"lines": lines}`.
//! - `secret`: returns `{"value": ctx.secret(name)}` for `name` (default
//!   `api-token`), or the SDK's task error (`SECRET_NOT_DECLARED`,
//!   `SECRET_NOT_SET`).
//! - `next`: returns `{"next": next}` with `run_next` set to `next` (a list
//!   of task ids; absent runs all allowed next tasks).
//!
//! Build and run it from the workspace root:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p pipeweave-example-misbehave
//! cargo run -- run target/wasm32-wasip2/release/misbehave.wasm --input '{"mode":"panic","message":"boom"}'
//! ```

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use pipeweave_sdk::{Context, Descriptor, Task, TaskError, TaskResult, export_task};
use serde::Deserialize;
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;

/// The input: the mode and its parameters, all optional but `mode`.
#[derive(Debug, Deserialize)]
pub struct Input {
    /// What to do; see the crate documentation.
    pub mode: String,
    /// `sleep`: milliseconds.
    pub ms: Option<u64>,
    /// `alloc`, `huge_output`: mebibytes.
    pub mib: Option<usize>,
    /// `panic`, `fail`: the message.
    pub message: Option<String>,
    /// `fail`: the error code.
    pub code: Option<String>,
    /// `fail`: whether the error is retryable.
    pub retryable: Option<bool>,
    /// `write_marker`: the text to write.
    pub marker: Option<String>,
    /// `fetch`: the URL.
    pub url: Option<String>,
    /// `stdout`: how many lines.
    pub lines: Option<u32>,
    /// `secret`: the secret's name.
    pub name: Option<String>,
    /// `next`: the next-task selection.
    pub next: Option<Vec<String>>,
}

/// The task.
#[derive(Debug)]
pub struct Misbehave;

impl Task for Misbehave {
    type Input = Input;
    type Output = Value;

    fn describe() -> Descriptor {
        Descriptor::new("misbehave")
            .description("Misbehaves on request, for the host's tests")
            .timeout_secs(5)
            .heartbeat_interval_ms(500)
            .memory_limit_bytes(64 * MIB as u64)
            .allowed_next(["a", "b"])
            .outbound_host("127.0.0.1:*")
            .secret("api-token")
    }

    fn run(ctx: &Context<Input>) -> Result<TaskResult<Value>, TaskError> {
        let input = ctx.input();
        ctx.debug(format!("mode {}", input.mode));
        let output = match input.mode.as_str() {
            "ok" => json!({ "ok": true }),
            "spin" => spin(),
            "sleep" => {
                let ms = input.ms.unwrap_or(60_000);
                std::thread::sleep(Duration::from_millis(ms));
                json!({ "sleptMs": ms })
            }
            "alloc" => alloc(input.mib.unwrap_or(128)),
            "panic" => panic!(
                "{}",
                input.message.as_deref().unwrap_or("misbehave panicked")
            ),
            "stack_overflow" => json!({ "depth": recurse(black_box(0)) }),
            "shadow_stack_overflow" => json!({ "depth": recurse_with_frames(black_box(0)) }),
            "trap" => trap(),
            "huge_output" => json!({ "data": "x".repeat(input.mib.unwrap_or(16) * MIB) }),
            "fail" => return Err(fail(input)),
            "write_marker" => {
                let marker = input.marker.as_deref().unwrap_or("marker");
                ctx.add_text_asset("marker", marker)?;
                std::fs::write("/private.txt", marker)?;
                json!({ "written": true })
            }
            "list_sandbox" => {
                let mut entries = Vec::new();
                list(Path::new("/"), &mut entries);
                json!({
                    "entries": entries,
                    "privateExists": Path::new("/private.txt").exists(),
                })
            }
            "escape" => escape(),
            "fetch" => {
                let url = input.url.as_deref().unwrap_or("http://127.0.0.1/");
                let response = ctx.http().get(url)?;
                json!({ "status": response.status, "body": response.text() })
            }
            "stdout" => {
                let lines = input.lines.unwrap_or(10);
                for i in 0..lines {
                    println!("stdout line {i}");
                    eprintln!("stderr line {i}");
                }
                json!({ "lines": lines })
            }
            "secret" => {
                let name = input.name.as_deref().unwrap_or("api-token");
                json!({ "value": ctx.secret(name)? })
            }
            "next" => {
                let output = json!({ "next": input.next });
                return Ok(match &input.next {
                    Some(next) => TaskResult::new(output).run_next(next.iter().cloned()),
                    None => TaskResult::new(output),
                });
            }
            other => {
                return Err(
                    TaskError::fatal(format!("unknown mode `{other}`")).with_code("UNKNOWN_MODE")
                );
            }
        };
        Ok(output.into())
    }
}

/// Busy-loops forever.
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates `mib` MiB and writes one byte in every 4 KiB page.
fn alloc(mib: usize) -> Value {
    let len = mib * MIB;
    let mut buffer = vec![0u8; len];
    let mut pages = 0u64;
    for i in (0..len).step_by(4096) {
        buffer[i] = 1;
        pages += 1;
    }
    black_box(&buffer);
    json!({ "allocatedMib": mib, "pagesTouched": pages })
}

/// Recurses until the wasm call stack is exhausted. Nothing is kept in
/// linear memory, so the engine's call-stack limit, not the shadow stack in
/// linear memory, is what runs out; the addition after the call keeps it from
/// becoming a loop.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(black_box(depth + 1)).wrapping_add(black_box(depth))
}

/// Recurses with a 1 KiB buffer in every frame, until the shadow stack in
/// linear memory runs out (a wasm out-of-bounds memory access).
#[inline(never)]
fn recurse_with_frames(depth: u64) -> u64 {
    let mut frame = [0u8; 1024];
    frame[(depth % 1024) as usize] = 1;
    black_box(&mut frame);
    if depth == u64::MAX {
        return 0;
    }
    let below = recurse_with_frames(black_box(depth + 1));
    below + u64::from(black_box(&frame)[(depth % 1024) as usize])
}

/// Traps with `unreachable`.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

fn fail(input: &Input) -> TaskError {
    let message = input.message.as_deref().unwrap_or("requested failure");
    let error = if input.retryable.unwrap_or(false) {
        TaskError::retryable(message)
    } else {
        TaskError::fatal(message)
    };
    error.with_code(input.code.as_deref().unwrap_or("REQUESTED_FAILURE"))
}

/// Appends every path under `dir`, folders with a trailing `/`, sorted.
fn list(dir: &Path, entries: &mut Vec<String>) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut children: Vec<_> = read.filter_map(Result::ok).map(|e| e.path()).collect();
    children.sort();
    for path in children {
        if path.is_dir() {
            entries.push(format!("{}/", path.display()));
            list(&path, entries);
        } else {
            entries.push(path.display().to_string());
        }
    }
}

/// Tries to read outside the sandbox and to see the host's environment.
fn escape() -> Value {
    let mut succeeded = Vec::new();
    let mut attempts = Vec::new();
    for path in ["/etc/passwd", "../../etc/passwd", "/proc/self/environ"] {
        match std::fs::read(path) {
            Ok(bytes) => {
                succeeded.push(path);
                attempts.push(json!({
                    "path": path,
                    "ok": true,
                    "detail": format!("read {} bytes", bytes.len()),
                }));
            }
            Err(e) => attempts.push(json!({ "path": path, "ok": false, "detail": e.to_string() })),
        }
    }
    let env: Vec<String> = std::env::vars()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    json!({ "succeeded": succeeded, "attempts": attempts, "env": env })
}

export_task!(Misbehave);
