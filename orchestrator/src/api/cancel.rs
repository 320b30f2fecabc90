//! `POST /api/task-runs/{id}/cancel`: ends a run that has not ended.
//!
//! A queued or retry-waiting run is cancelled at once. A running one is
//! cancelled in the database at once too: its attempt is recorded as
//! cancelled and its token cleared, so its heartbeats learn of it
//! (`{"cancel": true}`) and its callback changes nothing (409). A PipeWeave
//! host is also told directly ([`CancelNotice`]), and interrupts the guest
//! through the same epoch mechanism as a timeout, so even a guest spinning
//! in a loop stops within moments.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use chrono::Utc;
use pipeweave_protocol::wire::CancelNotice;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, BadRequest, Conflict, NotFound};
use super::json::OptionalApiJson;
use super::{AppState, optional_text, parse_run_id};
use crate::RunId;
use crate::storage::{self, RunState};

/// How long a host has to take a cancel notice.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(cancel))
}

/// The optional body of a cancel.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CancelRequest {
    /// Who is cancelling (a person, a tool), at most 200 characters;
    /// `"api"` if not given.
    pub(super) cancelled_by: Option<String>,
    /// Why, at most 500 characters.
    pub(super) reason: Option<String>,
}

/// A run just cancelled.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Cancelled {
    /// The run.
    run_id: RunId,
    /// Always `cancelled`.
    status: RunState,
    /// What it was doing: `queued`, `awaiting_retry` or `running`.
    previous_status: RunState,
    /// Who cancelled it.
    cancelled_by: String,
    /// Why, if they said.
    reason: Option<String>,
}

/// `POST /api/task-runs/{id}/cancel`.
#[utoipa::path(
    post,
    path = "/api/task-runs/{id}/cancel",
    tag = "queue",
    params(("id" = RunId, Path, description = "The run")),
    request_body(content = Option<CancelRequest>, description = "Optional"),
    responses(
        (status = 200, description = "The run is cancelled; a running attempt is being interrupted", body = Cancelled),
        BadRequest,
        NotFound,
        Conflict,
    )
)]
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalApiJson(request): OptionalApiJson<CancelRequest>,
) -> Result<Json<Cancelled>, ApiError> {
    let run_id = parse_run_id("id", &id)?;
    let cancelled_by = optional_text("cancelledBy", request.cancelled_by, 200)?
        .unwrap_or_else(|| "api".to_owned());
    let reason = optional_text("reason", request.reason, 500)?;
    let outcome = crate::queue::cancel_run(
        &state.pool,
        run_id.0,
        &cancelled_by,
        reason.as_deref(),
        Utc::now(),
    )
    .await?
    .ok_or(ApiError::NotFound {
        what: "task run",
        id: run_id.to_string(),
    })?;
    if !outcome.cancelled {
        return Err(ApiError::Conflict(format!(
            "run {run_id} has already ended: it is {}",
            outcome.previous.as_str()
        )));
    }
    tracing::info!(%run_id, previous = outcome.previous.as_str(), %cancelled_by, "run cancelled");
    if outcome.previous == RunState::Running {
        state.metrics.attempt_ended("cancelled", "cancelled");
        // Its slot at the target is free: claim again now.
        state.wake_scheduler.notify_one();
        if let (Some(target), Some(token)) = (outcome.target, outcome.attempt_token) {
            let notice = CancelNotice {
                attempt: u32::try_from(outcome.attempt).unwrap_or(0),
                attempt_token: token.to_string(),
            };
            tokio::spawn(tell_host(state.clone(), target, run_id, notice));
        }
    }
    Ok(Json(Cancelled {
        run_id,
        status: RunState::Cancelled,
        previous_status: outcome.previous,
        cancelled_by,
        reason,
    }))
}

/// Tells the host running the attempt, if its target is a host; a plain
/// HTTP worker learns it from its next heartbeat instead.
pub(super) async fn tell_host(
    state: AppState,
    target: String,
    run_id: RunId,
    notice: CancelNotice,
) {
    let url = match storage::hosts::url(&state.pool, &target).await {
        Ok(Some(url)) => url,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%run_id, %target, %error, "cannot look up the host to tell it of a cancel");
            return;
        }
    };
    let url = format!("{}/runs/{run_id}/cancel", url.trim_end_matches('/'));
    match state
        .http
        .post(&url)
        .timeout(NOTICE_TIMEOUT)
        .json(&notice)
        .send()
        .await
    {
        Ok(response) if response.status().is_success() => {
            tracing::debug!(%run_id, %target, "host told of the cancel");
        }
        // 404: the attempt already ended there.
        Ok(response) => {
            tracing::debug!(%run_id, %target, status = %response.status(), "host did not take the cancel notice");
        }
        Err(error) => {
            tracing::warn!(%run_id, %target, "cannot tell the host of a cancel (its next heartbeat will): {error}");
        }
    }
}
