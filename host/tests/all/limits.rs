//! Time and memory limits, each as an obeyed/violated pair.

use std::time::Duration;

use pipeweave_host::RunRequest;
use pipeweave_protocol::FailureReason;
use serde_json::json;

use crate::{SHORT, failed, misbehave, run_guest, runner, succeeded};

#[tokio::test]
async fn timeout_obeyed_lets_a_task_that_finishes_in_time_succeed() {
    let runner = runner();
    let mut request = RunRequest::new(json!({"mode": "sleep", "ms": 20}));
    request.timeout = Some(Duration::from_secs(5));
    let report = run_guest(&runner, "misbehave", request).await;
    assert_eq!(succeeded(&report).output, json!({"sleptMs": 20}));
}

#[tokio::test]
async fn timeout_violated_stops_a_guest_spinning_in_a_loop() {
    let runner = runner();
    let mut request = RunRequest::new(json!({"mode": "spin"}));
    request.timeout = Some(SHORT);
    let report = run_guest(&runner, "misbehave", request).await;
    let failure = failed(&report, FailureReason::Timeout);
    assert!(failure.retryable, "a timeout may succeed on retry");
    assert_eq!(failure.code.as_deref(), Some("TIMEOUT"));
    assert!(
        report.duration >= SHORT,
        "stopped before its deadline: {:?}",
        report.duration
    );
    assert!(
        report.duration < Duration::from_secs(5),
        "not stopped near its deadline: {:?}",
        report.duration
    );
}

#[tokio::test]
async fn timeout_violated_stops_a_guest_waiting_in_a_host_call() {
    let runner = runner();
    let mut request = RunRequest::new(json!({"mode": "sleep", "ms": 60_000}));
    request.timeout = Some(SHORT);
    let report = run_guest(&runner, "misbehave", request).await;
    failed(&report, FailureReason::Timeout);
    assert!(
        report.duration < Duration::from_secs(5),
        "not stopped near its deadline: {:?}",
        report.duration
    );
}

#[tokio::test]
async fn declared_timeout_applies_when_the_request_sets_none() {
    let runner = runner();
    let task = runner
        .load_file(&pipeweave_testkit::guest("misbehave"))
        .await
        .expect("loads");
    assert_eq!(task.descriptor().timeout, 5);
}

#[tokio::test]
async fn memory_limit_obeyed_lets_a_task_use_memory_below_it() {
    let runner = runner();
    let report = misbehave(&runner, json!({"mode": "alloc", "mib": 16})).await;
    assert_eq!(succeeded(&report).output["allocatedMib"], 16);
    assert!(
        report.peak_memory_bytes >= 16 << 20,
        "peak {}",
        report.peak_memory_bytes
    );
    assert!(
        report.peak_memory_bytes <= 64 << 20,
        "peak {}",
        report.peak_memory_bytes
    );
}

#[tokio::test]
async fn memory_limit_violated_fails_only_that_run() {
    let runner = runner();
    let report = misbehave(&runner, json!({"mode": "alloc", "mib": 128})).await;
    let failure = failed(&report, FailureReason::MemoryLimit);
    assert!(!failure.retryable);
    assert!(failure.message.contains("64.0 MiB"), "{}", failure.message);
    assert!(report.peak_memory_bytes <= 64 << 20);

    let next = misbehave(&runner, json!({"mode": "ok"})).await;
    assert_eq!(succeeded(&next).output, json!({"ok": true}));
}

#[tokio::test]
async fn a_request_can_lower_the_memory_limit() {
    let runner = runner();
    let mut request = RunRequest::new(json!({"mode": "alloc", "mib": 16}));
    request.memory_limit_bytes = Some(8 << 20);
    let report = run_guest(&runner, "misbehave", request).await;
    failed(&report, FailureReason::MemoryLimit);
}

#[tokio::test]
async fn cancelling_stops_a_spinning_guest() {
    let runner = runner();
    let cancel = pipeweave_host::CancelToken::new();
    let mut request = RunRequest::new(json!({"mode": "spin"}));
    request.cancel = Some(cancel.clone());
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    let report = run_guest(&runner, "misbehave", request).await;
    canceller.await.expect("canceller ran");
    let failure = failed(&report, FailureReason::Cancelled);
    assert!(!failure.retryable);
}
