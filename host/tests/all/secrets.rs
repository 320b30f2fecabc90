//! Secrets: credentials the host adds to a task's requests (and only to the
//! host each one names), and secret values redacted from everything an
//! attempt reports. The peer is a real HTTP server on 127.0.0.1 that echoes
//! the headers it received.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use pipeweave_host::{RunEvent, RunRequest};
use pipeweave_protocol::FailureReason;
use serde_json::{Value, json};

use crate::{failed, recorded, run_guest, runner, succeeded};

const TOKEN: &str = "tok-7f3a9c2e51";
const KEY: &str = "key-0b8d4e6a27";

/// A server whose `/echo` answers with the credential headers it got.
async fn echo_peer() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route(
            "/echo",
            get(|headers: HeaderMap| async move {
                let get = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                axum::Json(json!({
                    "authorization": get("authorization"),
                    "xApiKey": get("x-api-key"),
                }))
            }),
        )
        .route(
            "/to-localhost",
            get(move || async move {
                (
                    StatusCode::FOUND,
                    [(
                        header::LOCATION,
                        format!("http://localhost:{}/echo", addr.port()),
                    )],
                )
                    .into_response()
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn secrets() -> HashMap<String, String> {
    HashMap::from([
        ("api-token".to_owned(), TOKEN.to_owned()),
        ("api-key".to_owned(), KEY.to_owned()),
    ])
}

/// What the peer saw on each request, in order.
fn echoed(output: &Value) -> Vec<Value> {
    output["responses"]
        .as_array()
        .map(|responses| {
            responses
                .iter()
                .map(|r| {
                    serde_json::from_str(r["body"].as_str().unwrap_or("null"))
                        .unwrap_or(Value::Null)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn each_credential_goes_only_to_the_host_it_names() {
    let addr = echo_peer().await;
    let runner = runner();
    let mut request = RunRequest::new(json!({
        "mode": "fetch",
        "urls": [
            format!("http://127.0.0.1:{}/echo", addr.port()),
            format!("http://localhost:{}/echo", addr.port()),
        ],
    }));
    request.secrets = secrets();
    let report = run_guest(&runner, "secrets", request).await;
    let seen = echoed(&succeeded(&report).output);
    assert_eq!(
        seen,
        vec![
            json!({"authorization": format!("Bearer {TOKEN}"), "xApiKey": null}),
            json!({"authorization": null, "xApiKey": KEY}),
        ]
    );
}

#[tokio::test]
async fn a_header_the_task_sets_itself_is_not_replaced() {
    let addr = echo_peer().await;
    let runner = runner();
    let mut request = RunRequest::new(json!({
        "mode": "fetch",
        "urls": [format!("http://127.0.0.1:{}/echo", addr.port())],
        "headers": {"Authorization": "Bearer the-task-s-own"},
    }));
    request.secrets = secrets();
    let report = run_guest(&runner, "secrets", request).await;
    let seen = echoed(&succeeded(&report).output);
    assert_eq!(seen[0]["authorization"], "Bearer the-task-s-own");
}

#[tokio::test]
async fn a_credential_does_not_follow_a_redirect_to_another_host() {
    let addr = echo_peer().await;
    let runner = runner();
    let mut request = RunRequest::new(json!({
        "mode": "fetch",
        "urls": [format!("http://127.0.0.1:{}/to-localhost", addr.port())],
    }));
    request.secrets = secrets();
    let report = run_guest(&runner, "secrets", request).await;
    let seen = echoed(&succeeded(&report).output);
    assert_eq!(
        seen,
        vec![json!({"authorization": null, "xApiKey": KEY})],
        "the redirect target gets its own credential, not the first host's"
    );
}

#[tokio::test]
async fn a_task_without_credentials_sends_none() {
    let addr = echo_peer().await;
    let runner = runner();
    let mut request = RunRequest::new(json!({
        "url": format!("http://127.0.0.1:{}/echo", addr.port()),
    }));
    request.secrets = secrets();
    let report = run_guest(&runner, "fetch", request).await;
    let body: Value = serde_json::from_str(
        succeeded(&report).output["body"]
            .as_str()
            .unwrap_or_default(),
    )
    .expect("the peer answers JSON");
    assert_eq!(body, json!({"authorization": null, "xApiKey": null}));
}

#[tokio::test]
async fn a_credential_whose_secret_is_not_set_is_left_out_with_a_warning() {
    let addr = echo_peer().await;
    let runner = runner();
    let mut request = RunRequest::new(json!({
        "mode": "fetch",
        "urls": [format!("http://127.0.0.1:{}/echo", addr.port())],
    }));
    request.secrets = HashMap::from([("api-key".to_owned(), KEY.to_owned())]);
    let recorder = recorded(&mut request);
    let report = run_guest(&runner, "secrets", request).await;
    let seen = echoed(&succeeded(&report).output);
    assert_eq!(seen[0]["authorization"], Value::Null);
    assert!(
        recorder.events().iter().any(|event| matches!(
            event,
            RunEvent::Log { message, .. }
                if message.contains("credential for 127.0.0.1:* is not sent: secret `api-token` is not set")
        )),
        "{:?}",
        recorder.events()
    );
}

#[tokio::test]
async fn a_secret_value_never_reaches_the_events_or_the_failure() {
    let runner = runner();
    let mut request = RunRequest::new(json!({"mode": "leak"}));
    request.secrets = secrets();
    // Not declared by the task: dropped, and so not needed for redaction.
    request
        .secrets
        .insert("other".into(), "undeclared-value".into());
    let recorder = recorded(&mut request);
    let report = run_guest(&runner, "secrets", request).await;
    let failure = failed(&report, FailureReason::TaskError);
    assert_eq!(
        failure.message,
        "the API refused token [redacted:api-token]"
    );
    assert_eq!(
        failure.details,
        Some(json!({"token": "[redacted:api-token]"}))
    );
    let events = recorder.events();
    let text = format!("{events:?}");
    assert!(!text.contains(TOKEN), "{text}");
    for expected in [
        "the token is [redacted:api-token]",
        "stdout has the token [redacted:api-token]",
        "stderr has the token [redacted:api-token]",
        "using [redacted:api-token]",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
}

#[tokio::test]
async fn a_short_secret_value_is_not_redacted() {
    let runner = runner();
    let mut request = RunRequest::new(json!({"mode": "leak"}));
    request.secrets = HashMap::from([("api-token".to_owned(), "abc".to_owned())]);
    let report = run_guest(&runner, "secrets", request).await;
    let failure = failed(&report, FailureReason::TaskError);
    assert_eq!(failure.message, "the API refused token abc");
}
