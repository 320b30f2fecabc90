//! A misbehaving guest fails its own attempt with a named reason, and the
//! runner goes on.

use pipeweave_host::{RunEvent, RunRequest, StdStream};
use pipeweave_protocol::{FailureReason, LogLevel};
use serde_json::json;

use crate::{failed, misbehave, recorded, run_guest, runner, runner_with, succeeded};

#[tokio::test]
async fn a_panic_becomes_a_fatal_failure_carrying_the_panic_message() {
    let runner = runner();
    let report = misbehave(
        &runner,
        json!({"mode": "panic", "message": "the ledger does not balance"}),
    )
    .await;
    let failure = failed(&report, FailureReason::Panic);
    assert!(!failure.retryable);
    assert_eq!(failure.code.as_deref(), Some("PANIC"));
    assert!(
        failure.message.contains("the ledger does not balance"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_trap_is_reported_as_a_trap_with_its_cause() {
    let runner = runner();
    let report = misbehave(&runner, json!({"mode": "trap"})).await;
    let failure = failed(&report, FailureReason::Trap);
    assert!(
        failure.message.contains("unreachable"),
        "{}",
        failure.message
    );
    assert!(!failure.retryable);
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_overflow() {
    let runner = runner();
    // Small frames: wasmtime's own call stack runs out.
    let report = misbehave(&runner, json!({"mode": "stack_overflow"})).await;
    failed(&report, FailureReason::StackOverflow);
    // Large frames: the shadow stack in linear memory runs out first and
    // the guest faults below its memory.
    let report = misbehave(&runner, json!({"mode": "shadow_stack_overflow"})).await;
    failed(&report, FailureReason::StackOverflow);
}

#[tokio::test]
async fn an_output_over_the_limit_fails_with_output_too_large() {
    let runner = runner_with(|config| config.max_output_bytes = 1 << 20);
    let report = misbehave(&runner, json!({"mode": "huge_output", "mib": 2})).await;
    let failure = failed(&report, FailureReason::OutputTooLarge);
    assert!(
        failure.message.contains("asset"),
        "the message suggests assets: {}",
        failure.message
    );
}

#[tokio::test]
async fn a_task_error_keeps_its_code_message_and_retryability() {
    let runner = runner();
    let retryable = misbehave(
        &runner,
        json!({"mode": "fail", "code": "RATE_LIMITED", "message": "slow down", "retryable": true}),
    )
    .await;
    let failure = failed(&retryable, FailureReason::TaskError);
    assert_eq!(failure.code.as_deref(), Some("RATE_LIMITED"));
    assert_eq!(failure.message, "slow down");
    assert!(failure.retryable);

    let fatal = misbehave(&runner, json!({"mode": "fail", "retryable": false})).await;
    assert!(!failed(&fatal, FailureReason::TaskError).retryable);
}

#[tokio::test]
async fn invalid_input_is_a_fatal_task_error_naming_the_problem() {
    let runner = runner();
    let report = misbehave(&runner, json!({"no-mode": true})).await;
    let failure = failed(&report, FailureReason::TaskError);
    assert_eq!(failure.code.as_deref(), Some("INVALID_INPUT"));
    assert!(failure.message.contains("mode"), "{}", failure.message);
    assert!(!failure.retryable);
}

#[tokio::test]
async fn run_next_must_stay_within_allowed_next() {
    let runner = runner();
    let chosen = misbehave(&runner, json!({"mode": "next", "next": ["b"]})).await;
    assert_eq!(succeeded(&chosen).run_next, Some(vec!["b".to_owned()]));

    let all = misbehave(&runner, json!({"mode": "next"})).await;
    assert_eq!(succeeded(&all).run_next, None);

    let outside = misbehave(&runner, json!({"mode": "next", "next": ["c"]})).await;
    let failure = failed(&outside, FailureReason::InvalidOutput);
    assert!(failure.message.contains("\"c\""), "{}", failure.message);
}

#[tokio::test]
async fn every_kind_of_misbehaviour_leaves_the_runner_able_to_run_the_next_task() {
    let runner = runner();
    for input in [
        json!({"mode": "panic"}),
        json!({"mode": "trap"}),
        json!({"mode": "stack_overflow"}),
        json!({"mode": "shadow_stack_overflow"}),
        json!({"mode": "alloc", "mib": 512}),
    ] {
        let bad = misbehave(&runner, input.clone()).await;
        assert!(bad.outcome.is_err(), "{input} should fail");
        let good = misbehave(&runner, json!({"mode": "ok"})).await;
        assert_eq!(
            succeeded(&good).output,
            json!({"ok": true}),
            "after {input}"
        );
    }
}

#[tokio::test]
async fn stdout_stderr_logs_and_progress_reach_the_event_sink() {
    let runner = runner();
    let mut request = RunRequest::new(json!({"mode": "stdout", "lines": 2}));
    let recorder = recorded(&mut request);
    let report = run_guest(&runner, "misbehave", request).await;
    succeeded(&report);
    let events = recorder.events();
    let stdout: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                RunEvent::Output {
                    stream: StdStream::Stdout,
                    ..
                }
            )
        })
        .collect();
    let stderr = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                RunEvent::Output {
                    stream: StdStream::Stderr,
                    ..
                }
            )
        })
        .count();
    assert_eq!(stdout.len(), 2, "{events:?}");
    assert_eq!(stderr, 2, "{events:?}");

    let mut request = RunRequest::new(json!({"name": "Ada"}));
    let recorder = recorded(&mut request);
    let report = run_guest(&runner, "hello", request).await;
    assert_eq!(succeeded(&report).output["greeting"], "Hello, Ada!");
    let events = recorder.events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            RunEvent::Log {
                level: LogLevel::Info,
                ..
            }
        )),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Progress { percent: 100, .. })),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_flood_of_output_is_cut_at_the_log_budget() {
    let runner = runner_with(|config| config.max_log_bytes = 4096);
    let mut request = RunRequest::new(json!({"mode": "stdout", "lines": 10_000}));
    let recorder = recorded(&mut request);
    let report = run_guest(&runner, "misbehave", request).await;
    succeeded(&report);
    let events = recorder.events();
    let truncated = events
        .iter()
        .filter(|e| matches!(e, RunEvent::LogTruncated { .. }))
        .count();
    assert_eq!(truncated, 1);
    assert!(events.len() < 1000, "{} events", events.len());
}

#[tokio::test]
async fn a_task_reads_only_the_secrets_it_declared_and_was_given() {
    let runner = runner();
    let mut request = RunRequest::new(json!({"mode": "secret", "name": "api-token"}));
    request.secrets.insert("api-token".into(), "s3cr3t".into());
    request.secrets.insert("other".into(), "hidden".into());
    let report = run_guest(&runner, "misbehave", request).await;
    assert_eq!(succeeded(&report).output, json!({"value": "s3cr3t"}));

    let mut request = RunRequest::new(json!({"mode": "secret", "name": "other"}));
    request.secrets.insert("other".into(), "hidden".into());
    let report = run_guest(&runner, "misbehave", request).await;
    let failure = failed(&report, FailureReason::TaskError);
    assert_eq!(failure.code.as_deref(), Some("SECRET_NOT_DECLARED"));

    let report = misbehave(&runner, json!({"mode": "secret", "name": "api-token"})).await;
    assert_eq!(
        failed(&report, FailureReason::TaskError).code.as_deref(),
        Some("SECRET_NOT_SET")
    );
}
