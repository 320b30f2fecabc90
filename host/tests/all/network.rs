//! Outbound HTTP: allowed to declared hosts, denied everywhere else, checked
//! on every hop of a redirect. The peer is a real HTTP server on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use pipeweave_host::RunRequest;
use pipeweave_protocol::FailureReason;
use serde_json::json;

use crate::{failed, misbehave, run_guest, runner, succeeded};

/// A server that counts the requests that reached `/hello`.
struct Peer {
    addr: SocketAddr,
    hello_hits: Arc<AtomicUsize>,
}

impl Peer {
    async fn start() -> Self {
        let hello_hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route(
                "/hello",
                get(|State(hits): State<Arc<AtomicUsize>>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    "hi from the peer"
                }),
            )
            .route(
                "/to-localhost",
                get(move || async move {
                    (
                        StatusCode::FOUND,
                        [(
                            header::LOCATION,
                            format!("http://localhost:{}/hello", addr.port()),
                        )],
                    )
                        .into_response()
                }),
            )
            .route(
                "/to-hello",
                get(|| async {
                    (StatusCode::FOUND, [(header::LOCATION, "/hello")]).into_response()
                }),
            )
            .with_state(Arc::clone(&hello_hits));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, hello_hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hello_hits.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn outbound_allowed_reaches_a_declared_host() {
    let peer = Peer::start().await;
    let runner = runner();
    let report = run_guest(
        &runner,
        "fetch",
        RunRequest::new(json!({"url": peer.url("/hello")})),
    )
    .await;
    let output = &succeeded(&report).output;
    assert_eq!(output["status"], 200);
    assert_eq!(output["body"], "hi from the peer");
    assert_eq!(peer.hits(), 1);
    assert_eq!(
        report.hosts_contacted,
        vec![format!("http://{}", peer.addr)]
    );
    assert!(report.denied_requests.is_empty());
}

#[tokio::test]
async fn outbound_denied_to_a_host_that_was_not_declared() {
    let peer = Peer::start().await;
    let runner = runner();
    let url = format!("http://localhost:{}/hello", peer.addr.port());
    let report = misbehave(&runner, json!({"mode": "fetch", "url": url})).await;
    let failure = failed(&report, FailureReason::NetworkDenied);
    assert!(!failure.retryable);
    assert_eq!(report.denied_requests, vec![url]);
    assert_eq!(peer.hits(), 0, "the request must not leave the host");
}

#[tokio::test]
async fn a_redirect_to_an_undeclared_host_is_refused() {
    let peer = Peer::start().await;
    let runner = runner();
    let report = misbehave(
        &runner,
        json!({"mode": "fetch", "url": peer.url("/to-localhost")}),
    )
    .await;
    failed(&report, FailureReason::NetworkDenied);
    assert_eq!(peer.hits(), 0, "the redirect target must not be reached");
    assert_eq!(
        report.denied_requests.len(),
        1,
        "{:?}",
        report.denied_requests
    );
    assert!(report.denied_requests[0].starts_with("http://localhost:"));
}

#[tokio::test]
async fn a_redirect_within_a_declared_host_is_followed() {
    let peer = Peer::start().await;
    let runner = runner();
    let report = misbehave(
        &runner,
        json!({"mode": "fetch", "url": peer.url("/to-hello")}),
    )
    .await;
    assert_eq!(succeeded(&report).output["body"], "hi from the peer");
    assert_eq!(peer.hits(), 1);
}

#[tokio::test]
async fn other_spellings_of_a_declared_ip_are_refused() {
    let peer = Peer::start().await;
    let runner = runner();
    let port = peer.addr.port();
    for url in [
        format!("http://2130706433:{port}/hello"),
        format!("http://127.1:{port}/hello"),
        format!("http://[::ffff:127.0.0.1]:{port}/hello"),
        format!("http://0x7f.0.0.1:{port}/hello"),
    ] {
        let report = misbehave(&runner, json!({"mode": "fetch", "url": url})).await;
        failed(&report, FailureReason::NetworkDenied);
    }
    assert_eq!(peer.hits(), 0);
}
