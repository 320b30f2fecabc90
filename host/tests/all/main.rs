//! The host's integration tests: real guests, built from `examples/` with
//! `cargo build --target wasm32-wasip2`, run by the real runner under
//! wasmtime. One test binary; one module per concern.

mod code_hash;
mod failures;
mod limits;
mod network;
mod sandbox;
mod secrets;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeweave_host::{
    EngineConfig, EventSink, Failure, RunEvent, RunReport, RunRequest, Runner, RunnerConfig,
    TaskSuccess,
};
use pipeweave_protocol::FailureReason;
use serde_json::Value;

/// A runner like a host's, sharing the test run's compiled-component cache.
fn runner_with(config: impl FnOnce(&mut RunnerConfig)) -> Runner {
    let mut runner_config = RunnerConfig {
        engine: EngineConfig {
            max_instances: 16,
            ..EngineConfig::default()
        },
        cache_dir: Some(pipeweave_testkit::compile_cache_dir()),
        ..RunnerConfig::default()
    };
    config(&mut runner_config);
    Runner::new(runner_config).expect("runner starts")
}

fn runner() -> Runner {
    runner_with(|_| {})
}

/// Runs one attempt of an example guest.
async fn run_guest(runner: &Runner, guest: &str, request: RunRequest) -> RunReport {
    let task = runner
        .load_file(&pipeweave_testkit::guest(guest))
        .await
        .expect("guest loads");
    runner
        .run(&task, request)
        .await
        .expect("the host sets the attempt up")
}

/// Runs `misbehave` with this input.
async fn misbehave(runner: &Runner, input: Value) -> RunReport {
    run_guest(runner, "misbehave", RunRequest::new(input)).await
}

#[track_caller]
fn succeeded(report: &RunReport) -> &TaskSuccess {
    match &report.outcome {
        Ok(success) => success,
        Err(failure) => panic!("expected success, got {failure:?}"),
    }
}

#[track_caller]
fn failed(report: &RunReport, reason: FailureReason) -> &Failure {
    match &report.outcome {
        Err(failure) if failure.reason == reason => failure,
        other => panic!("expected a {reason} failure, got {other:?}"),
    }
}

/// Collects events for assertions.
#[derive(Default)]
struct Recorder(Mutex<Vec<RunEvent>>);

impl Recorder {
    fn events(&self) -> Vec<RunEvent> {
        self.0.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl EventSink for Recorder {
    fn event(&self, event: RunEvent) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event);
        }
    }
}

fn recorded(request: &mut RunRequest) -> Arc<Recorder> {
    let recorder = Arc::new(Recorder::default());
    request.events = recorder.clone();
    recorder
}

const SHORT: Duration = Duration::from_millis(300);
