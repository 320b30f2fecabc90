//! The HTTP wire protocol between the orchestrator and whoever runs tasks:
//! PipeWeave hosts and plain HTTP workers in any language. JSON fields are
//! camelCase and follow the spec's shapes (`runId`, `taskId`, `codeHash`,
//! `outputPath`, `selectedNext`, …); where the spec is silent, the fields
//! added here are optional, so a client written against the spec keeps
//! working.
//!
//! | message | direction | route |
//! | --- | --- | --- |
//! | [`RegisterRequest`] → [`RegisterResponse`] | worker → orchestrator | `POST /api/register` |
//! | [`Dispatch`] | orchestrator → worker | `POST {baseUrl}/tasks/{taskId}` |
//! | [`DispatchBatch`] → [`DispatchBatchResponse`] | orchestrator → host | `POST {hostUrl}/dispatches` |
//! | [`Heartbeat`] → [`HeartbeatResponse`] | worker → orchestrator | `POST /api/heartbeat`, `POST /api/progress` |
//! | [`Callback`] → [`CallbackResponse`] | worker → orchestrator | `POST /api/callback/{runId}` |
//! | [`HostRegistration`] → [`HostRegistrationResponse`] | host → orchestrator | `POST /api/hosts` |
//! | [`ModuleUploaded`] | CLI → orchestrator | `PUT /api/modules/{codeHash}` (raw bytes) |
//! | [`CancelNotice`] | orchestrator → host | `POST {hostUrl}/runs/{runId}/cancel` |
//!
//! Every dispatch carries a per-attempt `attemptToken`; heartbeats and the
//! callback must send it back. A message whose token is not that of the
//! run's current attempt is answered `409 Conflict` and changes nothing,
//! so a late message from a superseded attempt cannot overwrite a newer
//! one. `docs/protocol.md` describes the whole exchange for implementers.
//!
//! Data does not travel in these messages beyond small inline values:
//! inputs, outputs and assets are referenced by their object-storage paths.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::attempt::PreviousAttempt;
use crate::descriptor::{AssetKind, TaskDescriptor};
use crate::failure::FailureReason;

/// Inputs and outputs up to this many bytes of JSON travel inline in
/// dispatches, callbacks and the `runs` row; larger ones are stored in
/// object storage and travel by path (`inputPath`, `outputPath`). Workers
/// may store smaller outputs by path too; an orchestrator never requires
/// inline values.
pub const INLINE_LIMIT_BYTES: usize = 64 * 1024;

fn default_service_version() -> String {
    "0.1.0".to_owned()
}

/// `POST /api/register`: a service announces its tasks and their code
/// hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// Unique id of the service.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub service_id: String,
    /// The service's version; a change of version cancels queued runs of
    /// task types the new version no longer has.
    #[serde(default = "default_service_version")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub version: String,
    /// Where a plain HTTP worker receives dispatches
    /// (`POST {baseUrl}/tasks/{taskId}`). Absent for WebAssembly modules,
    /// which run on PipeWeave hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^https?://"))]
    pub base_url: Option<String>,
    /// How many attempts a plain HTTP worker takes at once; the
    /// orchestrator's `MAX_CONCURRENCY` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2147483647))]
    pub capacity: Option<u32>,
    /// The service's tasks.
    pub tasks: Vec<RegisteredTask>,
}

/// One task in a registration: its descriptor and the hash of its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisteredTask {
    /// Id, options and sandbox grants, flattened into this object as in the
    /// spec (`{ "id": "download", "codeHash": "…", "heartbeatIntervalMs": … }`).
    #[serde(flatten)]
    pub descriptor: TaskDescriptor,
    /// Hash of the task's code: the SHA-256 of a WebAssembly module, or
    /// whatever stable hash a plain HTTP worker computes for its handler.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub code_hash: String,
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// The service.
    pub service_id: String,
    /// The version now registered.
    pub version: String,
    /// Tasks whose code hash changed, each with its new code version.
    pub code_changes: Vec<CodeChange>,
    /// Queued runs cancelled because their task type left the service.
    #[serde(default)]
    pub orphans_cancelled: u64,
}

/// A task whose code hash changed at registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CodeChange {
    /// The task.
    pub task_id: String,
    /// The hash before.
    pub old_hash: String,
    /// The hash now.
    pub new_hash: String,
    /// The code version before.
    pub old_version: u32,
    /// The code version now (`old_version + 1`).
    pub new_version: u32,
}

/// Where a piece of data is, or the data itself when it is small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssetRef {
    /// Object-storage path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// How to read it.
    #[serde(rename = "type")]
    pub kind: AssetKind,
}

/// Where a finished attempt's results are: its output (by path, or inline
/// when small) and its assets. A callback reports one; a dispatch carries
/// one per upstream task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultRef {
    /// Object-storage path of its output JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
    /// Size of its output in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_size: Option<u64>,
    /// The output itself, when it is small enough to travel inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Its assets by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assets: BTreeMap<String, AssetRef>,
}

/// `POST {baseUrl}/tasks/{taskId}`: run one attempt. The worker answers
/// `202 Accepted` at once, runs the task, sends heartbeats, and reports
/// with a [`Callback`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dispatch {
    /// The task run; the same for every attempt.
    pub run_id: String,
    /// The task to run.
    pub task_id: String,
    /// The pipeline run, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run_id: Option<String>,
    /// Attempt number, from 1. Heartbeats and the callback repeat it, so a
    /// late message from an earlier attempt changes nothing.
    pub attempt: u32,
    /// The code version the orchestrator expects.
    pub code_version: u32,
    /// The code hash the orchestrator expects; a host fetches the module
    /// by it.
    pub code_hash: String,
    /// Proof that a heartbeat or callback comes from this attempt: send it
    /// back as `attemptToken`.
    pub attempt_token: String,
    /// How often to send heartbeats; the attempt is lost after twice that
    /// without one.
    pub heartbeat_interval_ms: u64,
    /// Wall-clock limit of the attempt.
    pub timeout_ms: u64,
    /// Sealed, short-lived credentials and scope for object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_token: Option<String>,
    /// The secrets the task declares that the orchestrator keeps
    /// (`PUT /api/secrets/{name}`), sealed for this run and attempt with a
    /// key derived from `PIPEWEAVE_SECRET_KEY` (`pwss1.…`, see
    /// `pipeweave_storage::secret_box`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secrets: Option<String>,
    /// The input, when small enough to travel inline (the spec's
    /// `initialInput`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_input: Option<Value>,
    /// Object-storage path of the input otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_path: Option<String>,
    /// Upstream results by task id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream_refs: BTreeMap<String, ResultRef>,
    /// Pipelines: the upstream tasks of this one that died or were
    /// cancelled on this pipeline run (a `partial-merge` join runs without
    /// their outputs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_upstream: Vec<String>,
    /// Earlier failed attempts, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_attempts: Vec<PreviousAttempt>,
    /// Where to send the callback.
    pub callback_url: String,
    /// Where callbacks of several attempts may go in one request
    /// ([`CallbackBatch`]); absent from orchestrators without it, and a
    /// worker may always use `callbackUrl` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callbacks_url: Option<String>,
    /// Where to send heartbeats.
    pub heartbeat_url: String,
}

/// `POST {hostUrl}/dispatches`: several attempts for a PipeWeave host in one
/// request, each exactly what `POST {hostUrl}/tasks/{taskId}` would take.
/// The host accepts them all (`202`, [`DispatchBatchResponse`]) or, for a
/// body it cannot take, none (a 4xx), and then runs each as if dispatched
/// alone. Plain HTTP workers get one request per attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchBatch {
    /// The attempts.
    pub dispatches: Vec<Dispatch>,
}

/// A host's answer to a [`DispatchBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchBatchResponse {
    /// How many attempts it took: all of them.
    pub accepted: usize,
}

/// One request body of [`batch_bodies`]: the items it carries, encoded.
pub type BatchBody<'a, T> = (&'a [T], Vec<u8>);

/// Encodes `items`, each as `as_json` gives it, into request bodies
/// `{"<key>":[item,…]}` of at most `limit` bytes each (an item larger than
/// that goes alone), each with the items it carries, in order.
/// [`DispatchBatch`]es and [`CallbackBatch`]es are sent this way, so no
/// request is refused for its size because many messages were ready at once.
pub fn batch_bodies<'a, T, S: Serialize>(
    key: &str,
    items: &'a [T],
    as_json: impl Fn(&'a T) -> S,
    limit: usize,
) -> Result<Vec<BatchBody<'a, T>>, serde_json::Error> {
    let mut open = serde_json::to_vec(&serde_json::json!({ key: [] }))?;
    // `{"key":[` without its closing `]}`.
    open.truncate(open.len() - 2);
    let mut bodies = Vec::new();
    let (mut start, mut body) = (0, open.clone());
    for (i, item) in items.iter().enumerate() {
        let encoded = serde_json::to_vec(&as_json(item))?;
        if i > start && body.len() + encoded.len() + 3 > limit {
            body.extend_from_slice(b"]}");
            bodies.push((&items[start..i], std::mem::replace(&mut body, open.clone())));
            start = i;
        }
        if i > start {
            body.push(b',');
        }
        body.extend_from_slice(&encoded);
    }
    if start < items.len() {
        body.extend_from_slice(b"]}");
        bodies.push((&items[start..], body));
    }
    Ok(bodies)
}

/// `POST /api/heartbeat`: the attempt is alive; optionally, how far along.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    /// The task run.
    #[cfg_attr(feature = "openapi", schema(pattern = "^trun_[0-9a-fA-F]{32}$"))]
    pub run_id: String,
    /// The attempt sending it.
    #[cfg_attr(feature = "openapi", schema(maximum = 2147483647))]
    pub attempt: u32,
    /// The attempt's token from its dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = Uuid))]
    pub attempt_token: Option<String>,
    /// Progress, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub progress: Option<u8>,
    /// What the task is doing now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
    pub message: Option<String>,
    /// The attempt waited on its host for a free slot (see
    /// [`HostRegistration::prefetch`]) and starts running now: the
    /// orchestrator counts the attempt's timeout from this heartbeat
    /// instead of from the claim. A host sends it once, and only after a
    /// wait of at least [`START_REPORT_AFTER_MS`]; from a plain HTTP
    /// worker it is ignored (the attempt's timeout counts from its claim).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub started: bool,
}

/// How long an attempt must have waited on its host for a slot before the
/// host reports its real start ([`Heartbeat::started`]). Shorter waits are
/// covered by the grace the orchestrator gives an attempt past its
/// deadline, which must stay longer than this, so most attempts of a busy
/// host cost no extra request.
pub const START_REPORT_AFTER_MS: u64 = 1_000;

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// The attempt was cancelled (or is no longer current): stop it.
    #[serde(default)]
    pub cancel: bool,
}

/// Tells a host that a running attempt was cancelled, so it interrupts the
/// guest now instead of at its next heartbeat. The token proves that the
/// notice comes from the orchestrator that dispatched the attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelNotice {
    /// The attempt that was cancelled.
    pub attempt: u32,
    /// Its token, as in its [`Dispatch`].
    pub attempt_token: String,
}

/// How an attempt ended, in a [`Callback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CallbackStatus {
    /// The task returned a result.
    Success,
    /// The task failed.
    Failure,
}

/// Why an attempt failed: in a failure [`Callback`], and as the
/// orchestrator records it on the attempt (its `code` is what later
/// attempts see as `previousAttempts[].errorCode`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptError {
    /// What went wrong.
    pub message: String,
    /// The error code the next attempt sees (`TIMEOUT`, `RATE_LIMITED`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Whether trying again may succeed.
    #[serde(default = "default_retryable")]
    pub retryable: bool,
    /// The named reason, when a PipeWeave host ran the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// Extra detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

fn default_retryable() -> bool {
    true
}

impl AttemptError {
    /// A failure the orchestrator or a host decided rather than the task (a
    /// timeout, a lost heartbeat, a refused dispatch): its code is the
    /// reason in upper case, and whether it is retryable follows the
    /// reason.
    pub fn decided(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: Some(reason.error_code()),
            retryable: reason.host_retryable(),
            reason: Some(reason),
            details: None,
        }
    }
}

/// `POST /api/callback/{runId}`: the attempt's result, metadata only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Callback {
    /// Success or failure.
    pub status: CallbackStatus,
    /// The attempt reporting. Spec-era workers omit it; the orchestrator
    /// then takes the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 2147483647))]
    pub attempt: Option<u32>,
    /// The attempt's token from its dispatch. The orchestrator refuses a
    /// callback without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = Uuid))]
    pub attempt_token: Option<String>,
    /// The output and assets (`outputPath`, `outputSize`, `output`,
    /// `assets`), flattened into this object as in the spec.
    #[serde(flatten)]
    pub result: ResultRef,
    /// Object-storage path of the attempt's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_path: Option<String>,
    /// Which allowed next tasks run: absent runs all, empty ends the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_next: Option<Vec<String>>,
    /// Why the attempt failed, when `status` is `failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AttemptError>,
}

/// The answer to a callback: what became of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackResponse {
    /// The task run.
    pub run_id: String,
    /// Its state now: `succeeded`, `awaiting_retry` (another attempt is
    /// scheduled) or `dead` (no attempts left, or the error was fatal).
    pub status: String,
}

/// Most callbacks in one `POST /api/callbacks`.
pub const MAX_CALLBACK_BATCH: usize = 1000;

/// `POST /api/callbacks`: several attempts' callbacks in one request, an
/// extension of the spec that PipeWeave hosts use when the dispatch names a
/// `callbacksUrl`. Each item is what `POST /api/callback/{runId}` takes,
/// with its `runId`; each is decided on its own, as if sent alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackBatch {
    /// The callbacks, at most [`MAX_CALLBACK_BATCH`].
    pub callbacks: Vec<BatchedCallback>,
}

/// One callback of a [`CallbackBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchedCallback {
    /// The task run, as in the single callback's path.
    pub run_id: String,
    /// The callback itself, flattened into this object.
    #[serde(flatten)]
    pub callback: Callback,
}

/// The answer to a [`CallbackBatch`]: one result per callback, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackBatchResponse {
    /// What became of each callback.
    pub results: Vec<BatchedCallbackResult>,
}

/// What became of one callback of a batch: the status and body the single
/// `POST /api/callback/{runId}` would have answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchedCallbackResult {
    /// The task run.
    pub run_id: String,
    /// 200 when recorded; else the 4xx the callback alone would have got
    /// (400 a bad field, 404 no such run, 409 not the current attempt).
    pub http_status: u16,
    /// When recorded, the run's state now (as in [`CallbackResponse`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// When refused, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When refused, the error code (`invalid_field`, `not_found`,
    /// `conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// When refused for a field, its JSON path within the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `POST /api/hosts`: a PipeWeave host announces itself, and repeats it as
/// a liveness ping. The orchestrator dispatches WebAssembly tasks only to
/// hosts it heard from recently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostRegistration {
    /// Unique id of the host; stable across restarts if you want its
    /// history to read well.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub host_id: String,
    /// Where the host receives dispatches (`POST {url}/dispatches`, or one
    /// at a time at `POST {url}/tasks/{taskId}`).
    #[cfg_attr(feature = "openapi", schema(pattern = "^https?://"))]
    pub url: String,
    /// How many attempts it runs at once.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2147483647))]
    pub capacity: u32,
    /// How many more dispatches it accepts and holds until one of its
    /// `capacity` slots frees (0, the default: none). The orchestrator
    /// sends up to `capacity + prefetch` attempts; the held ones count as
    /// running, heartbeat from their dispatch on, and start the moment a
    /// slot frees instead of a whole claim–dispatch round trip later. An
    /// attempt held longer than [`START_REPORT_AFTER_MS`] reports its real
    /// start ([`Heartbeat::started`]) so that its timeout counts from then.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 2147483647))]
    pub prefetch: u32,
}

/// The answer to a host registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HostRegistrationResponse {
    /// How often to repeat the registration; a host silent for three
    /// intervals gets no more dispatches.
    pub ping_interval_ms: u64,
}

/// The answer to a module upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModuleUploaded {
    /// The SHA-256 the orchestrator computed, equal to the one in the path.
    pub code_hash: String,
    /// Size in bytes.
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_spec_callback_payload_parses() -> Result<(), serde_json::Error> {
        let callback: Callback = serde_json::from_str(
            r#"{
              "status": "success",
              "outputPath": "runs/prun_xxx/outputs/trun_yyy.json",
              "outputSize": 1234,
              "assets": {
                "pdf-file": { "path": "runs/.../assets/pdf-file", "size": 50000, "type": "binary" }
              },
              "logsPath": "runs/.../logs/trun_yyy.jsonl",
              "selectedNext": ["process", "notify"]
            }"#,
        )?;
        assert_eq!(callback.status, CallbackStatus::Success);
        assert_eq!(callback.result.output_size, Some(1234));
        assert_eq!(callback.result.assets["pdf-file"].kind, AssetKind::Binary);
        assert_eq!(
            callback.selected_next.as_deref(),
            Some(&["process".to_owned(), "notify".to_owned()][..])
        );
        assert_eq!(callback.attempt, None);
        Ok(())
    }

    #[test]
    fn the_spec_registration_parses_with_descriptor_fields_flattened()
    -> Result<(), serde_json::Error> {
        let request: RegisterRequest = serde_json::from_str(
            r#"{
              "serviceId": "pdf-service",
              "version": "1.1.0",
              "baseUrl": "http://worker:8080",
              "tasks": [
                { "id": "download", "codeHash": "a3f8b2c1d4e5f6a7", "heartbeatIntervalMs": 30000,
                  "allowedNext": ["extract-text"], "retries": 5 }
              ]
            }"#,
        )?;
        let task = &request.tasks[0];
        assert_eq!(task.descriptor.id, "download");
        assert_eq!(task.code_hash, "a3f8b2c1d4e5f6a7");
        assert_eq!(task.descriptor.heartbeat_interval_ms, 30_000);
        assert_eq!(task.descriptor.retries, 5);
        assert_eq!(
            task.descriptor.timeout, 300,
            "unset options take the spec's defaults"
        );

        let json = serde_json::to_value(&request)?;
        assert_eq!(json["tasks"][0]["codeHash"], "a3f8b2c1d4e5f6a7");
        assert_eq!(json["tasks"][0]["id"], "download");
        Ok(())
    }

    #[test]
    fn batch_bodies_carry_every_item_once_in_order_under_the_limit() -> Result<(), serde_json::Error>
    {
        let sizes: Vec<usize> = (0..10).map(|i| if i == 7 { 5000 } else { 100 }).collect();
        let as_json = |size: &usize| json!({ "pad": "x".repeat(*size) });
        let bodies = batch_bodies("items", &sizes, as_json, 1000)?;
        let mut seen = Vec::new();
        for (chunk, body) in &bodies {
            let decoded: Value = serde_json::from_slice(body)?;
            let items = decoded["items"].as_array().cloned().unwrap_or_default();
            assert_eq!(items.len(), chunk.len());
            assert!(
                body.len() <= 1000 || chunk.len() == 1,
                "{} bytes for {} items",
                body.len(),
                chunk.len()
            );
            for (item, size) in items.iter().zip(chunk.iter()) {
                assert_eq!(item, &as_json(size));
            }
            seen.extend(chunk.iter().copied());
        }
        assert_eq!(seen, sizes, "every item once, in order");
        assert!(
            bodies
                .iter()
                .any(|(chunk, body)| chunk == &[5000] && body.len() > 5000),
            "the large item goes alone"
        );
        assert_eq!(batch_bodies("items", &sizes, as_json, usize::MAX)?.len(), 1);
        assert!(batch_bodies("items", &[] as &[usize], as_json, 1000)?.is_empty());
        Ok(())
    }

    #[test]
    fn a_dispatch_round_trips_with_camel_case_fields() -> Result<(), serde_json::Error> {
        let dispatch = Dispatch {
            run_id: "trun_1".into(),
            task_id: "download".into(),
            pipeline_run_id: Some("prun_1".into()),
            attempt: 2,
            code_version: 3,
            code_hash: "ab".repeat(32),
            attempt_token: "0123".into(),
            heartbeat_interval_ms: 30_000,
            timeout_ms: 300_000,
            storage_token: None,
            sealed_secrets: None,
            initial_input: Some(serde_json::json!({"url": "https://example.com/a.pdf"})),
            input_path: None,
            upstream_refs: BTreeMap::new(),
            failed_upstream: Vec::new(),
            previous_attempts: vec![PreviousAttempt {
                attempt: 1,
                error: "timed out".into(),
                error_code: Some("TIMEOUT".into()),
                timestamp_ms: 1,
            }],
            callback_url: "http://orchestrator/api/callback/trun_1".into(),
            heartbeat_url: "http://orchestrator/api/heartbeat".into(),
            callbacks_url: None,
        };
        let json = serde_json::to_value(&dispatch)?;
        assert_eq!(json["runId"], "trun_1");
        assert_eq!(json["initialInput"]["url"], "https://example.com/a.pdf");
        assert_eq!(json["previousAttempts"][0]["errorCode"], "TIMEOUT");
        assert!(
            json.get("storageToken").is_none(),
            "absent options are omitted"
        );
        let back: Dispatch = serde_json::from_value(json)?;
        assert_eq!(back, dispatch);
        Ok(())
    }

    #[test]
    fn a_failure_callback_defaults_to_retryable_like_the_spec() -> Result<(), serde_json::Error> {
        let callback: Callback = serde_json::from_str(
            r#"{"status": "failure", "attempt": 1, "error": {"message": "boom", "code": "API_ERROR"}}"#,
        )?;
        let error = callback
            .error
            .as_ref()
            .map(|e| (e.retryable, e.code.as_deref()));
        assert_eq!(error, Some((true, Some("API_ERROR"))));
        Ok(())
    }
}
