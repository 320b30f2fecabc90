//! What hosts and plain HTTP workers call while an attempt runs:
//! `POST /api/heartbeat`, `POST /api/progress` and
//! `POST /api/callback/:runId` (or `POST /api/callbacks` for several at
//! once). Each names the attempt and carries its
//! token; a message from any attempt but the run's current running one is
//! answered 409 and changes nothing.

use axum::Json;
use axum::extract::{Path, State};
use pipeweave_protocol::FailureReason;
use pipeweave_protocol::wire::{
    AttemptError, BatchedCallback, BatchedCallbackResult, Callback, CallbackBatch,
    CallbackBatchResponse, CallbackResponse, CallbackStatus, Heartbeat, HeartbeatResponse,
    MAX_CALLBACK_BATCH,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::error::{ApiError, BadRequest, Conflict, NotFound};
use super::json::ApiJson;
use super::{AppState, parse_run_id};
use crate::RunId;
use crate::queue::{self, AttemptRef};
use crate::storage::{self, RunState};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(heartbeat))
        .routes(routes!(progress))
        .routes(routes!(callback))
        .routes(routes!(callbacks))
}

fn parse_token(token: Option<&str>) -> Result<Uuid, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::invalid(
            "attemptToken",
            "is missing; send back the attemptToken of the attempt's dispatch",
        )
    })?;
    Uuid::try_parse(token)
        .map_err(|_| ApiError::invalid("attemptToken", "is not a token this orchestrator issued"))
}

fn parse_attempt(attempt: u32) -> Result<i32, ApiError> {
    i32::try_from(attempt).map_err(|_| ApiError::invalid("attempt", "is out of range"))
}

/// Why a message about `attempt` of `run_id` was not taken: 404 for an
/// unknown run, else 409 saying what the run is doing now.
async fn refusal(state: &AppState, run_id: RunId, attempt: i32) -> ApiError {
    match storage::runs::attempt_state(&state.pool, run_id.0).await {
        Ok(now) => refusal_for(run_id, attempt, now),
        Err(error) => error.into(),
    }
}

/// [`refusal`] for a run whose state was read already (`None`: no run).
fn refusal_for(run_id: RunId, attempt: i32, now: Option<storage::runs::AttemptState>) -> ApiError {
    match now {
        None => ApiError::NotFound {
            what: "task run",
            id: run_id.to_string(),
        },
        Some(now) if now.state == RunState::Running && now.attempt == attempt => {
            ApiError::Conflict(format!(
                "attemptToken does not match attempt {attempt} of run {run_id}"
            ))
        }
        Some(now) if now.state == RunState::Running => ApiError::Conflict(format!(
            "attempt {attempt} of run {run_id} was superseded: attempt {} is running now",
            now.attempt
        )),
        Some(now) => ApiError::Conflict(format!(
            "attempt {attempt} of run {run_id} is over: the run is {} (attempt {})",
            now.state.as_str(),
            now.attempt
        )),
    }
}

/// A callback may name only objects its storage token let it write: under
/// the run's prefix (`runs/{runId}/`), or in a pipeline run its own
/// output, assets and logs under the pipeline run's prefix.
async fn check_paths(
    state: &AppState,
    callback: &Callback,
    run_id: &RunId,
) -> Result<(), ApiError> {
    let result = &callback.result;
    let names_paths =
        result.output_path.is_some() || !result.assets.is_empty() || callback.logs_path.is_some();
    if !names_paths {
        return Ok(());
    }
    let pipeline_run = {
        let mut conn = state.pool.acquire().await?;
        storage::pipelines::of_task_run(&mut conn, run_id.0).await?
    };
    let scope = match pipeline_run {
        None => pipeweave_storage::layout::standalone_scope(&run_id.to_string(), None),
        Some(id) => pipeweave_storage::layout::pipeline_task_scope(
            &crate::PipelineRunId(id).to_string(),
            &run_id.to_string(),
        ),
    };
    let check = |field: String, path: &str| {
        scope
            .check(pipeweave_storage::Access::Write, path)
            .map(drop)
            .map_err(|error| ApiError::invalid(field, error.to_string()))
    };
    if let Some(path) = &result.output_path {
        check("outputPath".to_owned(), path)?;
    }
    for (key, asset) in &result.assets {
        check(format!("assets.{key}.path"), &asset.path)?;
    }
    if let Some(path) = &callback.logs_path {
        check("logsPath".to_owned(), path)?;
    }
    Ok(())
}

async fn record_heartbeat(
    state: &AppState,
    beat: Heartbeat,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let run_id = parse_run_id("runId", &beat.run_id)?;
    let attempt = parse_attempt(beat.attempt)?;
    let token = parse_token(beat.attempt_token.as_deref())?;
    if beat.progress.is_some_and(|p| p > 100) {
        return Err(ApiError::invalid("progress", "must be between 0 and 100"));
    }
    if beat
        .message
        .as_ref()
        .is_some_and(|m| m.chars().count() > 1000)
    {
        return Err(ApiError::invalid(
            "message",
            "must be at most 1000 characters",
        ));
    }
    let current = storage::runs::heartbeat(
        &state.pool,
        storage::runs::Beat {
            run_id: run_id.0,
            attempt,
            attempt_token: token,
            progress: beat.progress.map(i16::from),
            message: beat.message.as_deref(),
            started: beat.started,
        },
        chrono::Utc::now(),
    )
    .await?;
    if !current {
        // A cancelled attempt hears it from its heartbeat (spec-era workers
        // know no other way); anything else that is not current is refused.
        let now = storage::runs::attempt_state(&state.pool, run_id.0).await?;
        if now
            .as_ref()
            .is_some_and(|now| now.state == RunState::Cancelled && now.attempt == attempt)
        {
            return Ok(Json(HeartbeatResponse { cancel: true }));
        }
        return Err(refusal_for(run_id, attempt, now));
    }
    Ok(Json(HeartbeatResponse { cancel: false }))
}

/// `POST /api/heartbeat`: the attempt is alive.
#[utoipa::path(
    post,
    path = "/api/heartbeat",
    tag = "workers",
    request_body = Heartbeat,
    responses(
        (status = 200, description = "Recorded; `cancel: true` means stop the attempt", body = HeartbeatResponse),
        BadRequest,
        NotFound,
        Conflict,
    )
)]
async fn heartbeat(
    State(state): State<AppState>,
    ApiJson(beat): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    record_heartbeat(&state, beat).await
}

/// `POST /api/progress`: a heartbeat that must carry `progress`.
#[utoipa::path(
    post,
    path = "/api/progress",
    tag = "workers",
    request_body = Heartbeat,
    responses(
        (status = 200, description = "Recorded; `cancel: true` means stop the attempt", body = HeartbeatResponse),
        BadRequest,
        NotFound,
        Conflict,
    )
)]
async fn progress(
    State(state): State<AppState>,
    ApiJson(beat): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    if beat.progress.is_none() {
        return Err(ApiError::invalid(
            "progress",
            "is missing; send a percentage from 0 to 100",
        ));
    }
    record_heartbeat(&state, beat).await
}

/// `POST /api/callback/{runId}`: the attempt's result.
#[utoipa::path(
    post,
    path = "/api/callback/{run_id}",
    tag = "workers",
    params(("run_id" = RunId, Path, description = "The run")),
    request_body = Callback,
    responses(
        (status = 200, description = "Recorded: what became of the run", body = CallbackResponse),
        BadRequest,
        NotFound,
        Conflict,
    )
)]
async fn callback(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    ApiJson(callback): ApiJson<Callback>,
) -> Result<Json<CallbackResponse>, ApiError> {
    let run_id = parse_run_id("runId", &run_id)?;
    let status = record_callback(&state, run_id, &callback, chrono::Utc::now()).await?;
    // The attempt's slot at its target is free (and a retry may be due):
    // claim again now, not at the next poll. A Notify keeps one permit, so
    // a burst of callbacks costs at most one extra round.
    state.wake_scheduler.notify_one();
    Ok(Json(CallbackResponse {
        run_id: run_id.to_string(),
        status: status.as_str().to_owned(),
    }))
}

/// `POST /api/callbacks`: several attempts' results in one request (a
/// PipeWeave extension; hosts use it when the dispatch names
/// `callbacksUrl`). Each callback is decided as if sent alone to
/// `POST /api/callback/{runId}`, and its result says what that would have
/// answered; the request as a whole fails only for a malformed body or a
/// server-side error (then nothing of it needs to be assumed recorded:
/// sending it again is safe, as a recorded callback repeated gets 409).
///
/// The successes of runs outside pipelines, the common case, are recorded
/// with one statement for the whole batch.
#[utoipa::path(
    post,
    path = "/api/callbacks",
    tag = "workers",
    request_body = CallbackBatch,
    responses(
        (status = 200, description = "Each callback's result, in order", body = CallbackBatchResponse),
        BadRequest,
    )
)]
async fn callbacks(
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<CallbackBatch>,
) -> Result<Json<CallbackBatchResponse>, ApiError> {
    if batch.callbacks.is_empty() {
        return Err(ApiError::invalid(
            "callbacks",
            "is empty; send at least one",
        ));
    }
    if batch.callbacks.len() > MAX_CALLBACK_BATCH {
        return Err(ApiError::invalid(
            "callbacks",
            format!(
                "has {} items; send at most {MAX_CALLBACK_BATCH} per request",
                batch.callbacks.len()
            ),
        ));
    }
    let now = chrono::Utc::now();
    let mut outcomes: Vec<Option<Result<RunState, ApiError>>> =
        batch.callbacks.iter().map(|_| None).collect();
    // One statement records each run at most once, so a run named twice
    // goes there only the first time; the repeat takes the single path
    // and is refused there, as it would be if sent after the first.
    let mut seen = std::collections::HashSet::new();
    let plain: Vec<(usize, storage::runs::Success)> = batch
        .callbacks
        .iter()
        .enumerate()
        .filter_map(|(i, item)| plain_success(item).map(|success| (i, success)))
        .filter(|(_, success)| seen.insert(success.run_id))
        .collect();
    if !plain.is_empty() {
        let successes: Vec<storage::runs::Success> =
            plain.iter().map(|(_, success)| success.clone()).collect();
        let finished: std::collections::HashSet<Uuid> =
            storage::runs::succeed(&state.completions, &successes, now)
                .await?
                .into_iter()
                .collect();
        for (i, success) in &plain {
            if finished.contains(&success.run_id) {
                state.metrics.attempt_ended("succeeded", "");
                outcomes[*i] = Some(Ok(RunState::Succeeded));
            }
        }
    }
    let mut results = Vec::with_capacity(batch.callbacks.len());
    for (item, outcome) in batch.callbacks.iter().zip(outcomes) {
        let outcome = match outcome {
            Some(outcome) => outcome,
            // Everything else (failures, pipeline tasks, paths to check,
            // attempts no longer current) takes the single callback's path.
            None => match parse_run_id("runId", &item.run_id) {
                Ok(run_id) => record_callback(&state, run_id, &item.callback, now).await,
                Err(error) => Err(error),
            },
        };
        results.push(match outcome {
            Ok(status) => BatchedCallbackResult {
                run_id: item.run_id.clone(),
                http_status: 200,
                status: Some(status.as_str().to_owned()),
                error: None,
                code: None,
                field: None,
            },
            Err(error) => {
                let (http_status, code) = error.status_and_code();
                if http_status.is_server_error() {
                    // Not the callback's fault: the whole batch is to be
                    // sent again.
                    return Err(error);
                }
                BatchedCallbackResult {
                    run_id: item.run_id.clone(),
                    http_status: http_status.as_u16(),
                    status: None,
                    field: error.field().map(str::to_owned),
                    error: Some(error.to_string()),
                    code: Some(code.to_owned()),
                }
            }
        });
    }
    state.wake_scheduler.notify_one();
    Ok(Json(CallbackBatchResponse { results }))
}

/// The callback as a [`storage::runs::Success`] when it is a success that
/// [`storage::runs::succeed`] can record without further checks: it names
/// its attempt and token and no stored objects (those need the scope
/// check) and selects nothing (a pipeline task's selection is recorded
/// under its pipeline run's lock).
fn plain_success(item: &BatchedCallback) -> Option<storage::runs::Success> {
    let callback = &item.callback;
    let result = &callback.result;
    let plain = callback.status == CallbackStatus::Success
        && callback.error.is_none()
        && callback.selected_next.is_none()
        && result.output_path.is_none()
        && result.assets.is_empty()
        && callback.logs_path.is_none();
    if !plain {
        return None;
    }
    Some(storage::runs::Success {
        run_id: parse_run_id("runId", &item.run_id).ok()?.0,
        attempt: parse_attempt(callback.attempt?).ok()?,
        attempt_token: parse_token(callback.attempt_token.as_deref()).ok()?,
        result: serde_json::to_value(result).ok()?,
        logs_path: None,
    })
}

/// Records one callback of `run_id`: what became of the run, or why the
/// callback was refused.
async fn record_callback(
    state: &AppState,
    run_id: RunId,
    callback: &Callback,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<RunState, ApiError> {
    let token = parse_token(callback.attempt_token.as_deref())?;
    let attempt = match callback.attempt {
        Some(attempt) => parse_attempt(attempt)?,
        // Spec-era workers do not repeat the attempt; the token still
        // ties the callback to one.
        None => {
            storage::runs::attempt_state(&state.pool, run_id.0)
                .await?
                .ok_or_else(|| ApiError::NotFound {
                    what: "task run",
                    id: run_id.to_string(),
                })?
                .attempt
        }
    };
    check_paths(state, callback, &run_id).await?;
    let status = match callback.status {
        CallbackStatus::Success => {
            if callback.error.is_some() {
                return Err(ApiError::invalid(
                    "error",
                    "a successful callback carries no error",
                ));
            }
            let result =
                serde_json::to_value(&callback.result).map_err(|source| crate::Error::Corrupt {
                    what: "callback result",
                    source,
                })?;
            let success = storage::runs::Success {
                run_id: run_id.0,
                attempt,
                attempt_token: token,
                result,
                logs_path: callback.logs_path.clone(),
            };
            let finished =
                storage::runs::succeed(&state.completions, std::slice::from_ref(&success), now)
                    .await?;
            let pipeline_run = if finished.is_empty() {
                // A pipeline's task run, or an attempt no longer current.
                let mut conn = state.pool.acquire().await?;
                storage::pipelines::of_task_run(&mut conn, run_id.0).await?
            } else {
                None
            };
            match pipeline_run {
                None if finished.is_empty() => return Err(refusal(state, run_id, attempt).await),
                None => {
                    state.metrics.attempt_ended("succeeded", "");
                    tracing::debug!(%run_id, attempt, "attempt succeeded");
                    RunState::Succeeded
                }
                Some(pipeline_run) => {
                    let reference = AttemptRef {
                        run_id: run_id.0,
                        attempt,
                        attempt_token: token,
                    };
                    succeed_in_pipeline(state, callback, success, reference, pipeline_run, now)
                        .await?
                }
            }
        }
        CallbackStatus::Failure => {
            let mut error = callback.error.clone().ok_or_else(|| {
                ApiError::invalid(
                    "error",
                    "is missing; a failure callback says what went wrong",
                )
            })?;
            // A plain worker's failure is the task's own error.
            error.reason.get_or_insert(FailureReason::TaskError);
            let reference = AttemptRef {
                run_id: run_id.0,
                attempt,
                attempt_token: token,
            };
            fail(state, reference, &error, callback, now).await?
        }
    };
    Ok(status)
}

/// A pipeline task's success: recorded with its selection, which moves the
/// pipeline run on; a selection outside the task's allowedNext fails the
/// task for good instead (`INVALID_NEXT`), since no retry would choose
/// differently.
async fn succeed_in_pipeline(
    state: &AppState,
    callback: &Callback,
    success: storage::runs::Success,
    reference: AttemptRef,
    pipeline_run: uuid::Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<RunState, ApiError> {
    let run_id = RunId(reference.run_id);
    match queue::succeed_in_pipeline(
        &state.pool,
        &success,
        pipeline_run,
        callback.selected_next.as_deref(),
        now,
    )
    .await
    {
        Ok(true) => {
            state.metrics.attempt_ended("succeeded", "");
            tracing::debug!(%run_id, attempt = reference.attempt, "attempt succeeded");
            Ok(RunState::Succeeded)
        }
        Ok(false) => Err(refusal(state, run_id, reference.attempt).await),
        Err(queue::PipelineSuccessError::Disallowed {
            disallowed,
            allowed,
        }) => {
            let error = AttemptError {
                message: format!(
                    "selectedNext names {disallowed:?}, which the task's allowedNext {allowed:?} does not list"
                ),
                code: Some("INVALID_NEXT".to_owned()),
                retryable: false,
                reason: Some(FailureReason::InvalidOutput),
                details: Some(
                    serde_json::json!({ "disallowed": disallowed, "allowedNext": allowed }),
                ),
            };
            fail(state, reference, &error, callback, now).await
        }
        Err(queue::PipelineSuccessError::Storage(error)) => Err(error.into()),
    }
}

/// Ends the attempt as failed with `error` and the callback's log; a
/// refusal if it is no longer current.
async fn fail(
    state: &AppState,
    reference: AttemptRef,
    error: &AttemptError,
    callback: &Callback,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<RunState, ApiError> {
    match queue::fail_attempt(
        &state.pool,
        &state.metrics,
        reference,
        error,
        callback.logs_path.as_deref(),
        now,
    )
    .await?
    {
        Some(next) => Ok(next),
        None => Err(refusal(state, RunId(reference.run_id), reference.attempt).await),
    }
}
