//! One dispatch round: claim due runs for each target (up to its free
//! capacity, counted by the claim), and hand the claimed attempts over: to
//! a PipeWeave host all in one `POST {host}/dispatches` (split only to keep
//! each body under [`DISPATCH_BATCH_BYTES`]), to a plain HTTP worker one
//! `POST {worker}/tasks/{taskId}` each. A target that refuses, does not
//! answer within [`DISPATCH_TIMEOUT`] or cannot be reached fails those
//! attempts as retryable (`dispatch_failed`); the runs go back to the queue
//! by their retry policy, so nothing is lost.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use pipeweave_protocol::wire::AttemptError;
use pipeweave_protocol::wire::{self, Dispatch, ResultRef};
use pipeweave_protocol::{FailureReason, PreviousAttempt};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::Scheduler;
use crate::queue::{self, AttemptRef};
use crate::storage;
use crate::{PipelineRunId, RunId};

/// How long a target has to accept a dispatch.
pub const DISPATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a plain HTTP worker that refused a connection gets no
/// dispatches, unless it registers again first; so a restarting worker does
/// not burn every retry of the runs sent its way.
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(5);

/// Most runs claimed for one target in one statement.
const CLAIM_BATCH: i64 = 200;

/// Most bytes of dispatches in one request to a host: half its body limit
/// (axum's default, 2 MB), so a round's batch of large inline inputs goes
/// in several requests.
pub const DISPATCH_BATCH_BYTES: usize = 1024 * 1024;

/// A dispatch round: what it claimed, and the dispatches still in flight.
/// Dropping it leaves them to finish on their own (each records its own
/// failure); [`Round::finish`] waits for them.
#[derive(Debug, Default)]
pub struct Round {
    /// Attempts claimed (and being sent).
    pub claimed: usize,
    /// Some claim filled its batch: there is probably more to do now.
    pub full: bool,
    /// Each send in flight, with how many attempts it carries.
    sends: Vec<(usize, JoinHandle<RoundReport>)>,
}

/// What a finished round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Attempts a target accepted.
    pub dispatched: usize,
    /// Attempts whose dispatch failed (each failed as `dispatch_failed`).
    pub failed: usize,
}

impl Round {
    /// Waits for every dispatch of the round.
    pub async fn finish(self) -> RoundReport {
        let mut report = RoundReport::default();
        for (attempts, send) in self.sends {
            let sent = send.await.unwrap_or(RoundReport {
                dispatched: 0,
                failed: attempts,
            });
            report.dispatched += sent.dispatched;
            report.failed += sent.failed;
        }
        report
    }
}

/// Where claimed attempts go.
#[derive(Debug, Clone)]
struct Target {
    /// Host id or service id; recorded on the run.
    id: String,
    /// Base URL; dispatches go to `{url}/tasks/{taskId}`.
    url: String,
    /// A PipeWeave host (taken out of rotation when unreachable).
    is_host: bool,
    /// Tasks it runs.
    task_ids: Vec<String>,
    /// Most attempts it runs at once; the claim counts those running.
    capacity: i64,
}

/// The targets as last read, so that a wake-up's first query is the claim.
/// They are read again after [`TARGETS_MAX_AGE`], or sooner when this
/// orchestrator records a registration, a host ping or an unreachable
/// target ([`crate::api::AppState::targets_changed`]); a registration on
/// another replica is seen within that age.
#[derive(Debug, Default)]
pub(super) struct TargetCache {
    read: Option<CachedTargets>,
    /// Bumped every round, so rounds start at different targets and a
    /// short queue spreads over them.
    rounds: usize,
}

#[derive(Debug)]
struct CachedTargets {
    at: Instant,
    change: u64,
    targets: Arc<Vec<Target>>,
}

/// How long the target list is used before it is read again.
pub(super) const TARGETS_MAX_AGE: Duration = Duration::from_secs(1);

/// The targets to claim for this round, from the cache when it is fresh,
/// in a rotating order.
async fn targets(scheduler: &Scheduler) -> crate::Result<(Arc<Vec<Target>>, usize)> {
    let change = scheduler.state.targets_changed.load(Ordering::Acquire);
    let cached = {
        let mut cache = scheduler.targets.lock().unwrap_or_else(|e| e.into_inner());
        cache.rounds = cache.rounds.wrapping_add(1);
        let fresh = cache
            .read
            .as_ref()
            .filter(|read| read.change == change && read.at.elapsed() < TARGETS_MAX_AGE)
            .map(|read| read.targets.clone());
        fresh.map(|targets| (targets, cache.rounds))
    };
    if let Some(cached) = cached {
        return Ok(cached);
    }
    let targets = Arc::new(read_targets(&scheduler.state).await?);
    let mut cache = scheduler.targets.lock().unwrap_or_else(|e| e.into_inner());
    cache.read = Some(CachedTargets {
        at: Instant::now(),
        change,
        targets: targets.clone(),
    });
    Ok((targets, cache.rounds))
}

/// The tasks some live host or reachable worker runs now.
pub(crate) async fn runnable_tasks(
    state: &crate::api::AppState,
) -> crate::Result<std::collections::HashSet<String>> {
    Ok(read_targets(state)
        .await?
        .into_iter()
        .flat_map(|target| target.task_ids)
        .collect())
}

async fn read_targets(state: &crate::api::AppState) -> crate::Result<Vec<Target>> {
    let pool = &state.pool;
    let config = &state.config;
    let mut targets = Vec::new();
    for service in storage::services::http_targets(pool, Utc::now()).await? {
        let capacity = service
            .capacity
            .map_or(i64::from(config.max_concurrency), i64::from);
        targets.push(Target {
            id: service.id,
            url: service.base_url.trim_end_matches('/').to_owned(),
            is_host: false,
            task_ids: service.task_ids,
            capacity,
        });
    }
    let live_since =
        Utc::now() - chrono::Duration::milliseconds(3 * crate::api::HOST_PING_INTERVAL_MS as i64);
    let hosts = storage::hosts::live(pool, live_since).await?;
    if !hosts.is_empty() {
        let wasm_tasks = storage::tasks::wasm_task_ids(pool).await?;
        for host in hosts {
            // Running slots and held dispatches alike.
            let capacity = host.accepts();
            targets.push(Target {
                id: host.id,
                url: host.url,
                is_host: true,
                task_ids: wasm_tasks.clone(),
                capacity,
            });
        }
    }
    targets.retain(|t| !t.task_ids.is_empty());
    Ok(targets)
}

/// Claims for every target and starts sending each attempt; the sends run
/// on their own tasks, so a slow target does not hold up the others or the
/// next round.
pub async fn dispatch_round(scheduler: &Scheduler) -> crate::Result<Round> {
    let mut round = Round::default();
    let pool = &scheduler.state.pool;
    let (targets, rotation) = targets(scheduler).await?;
    let start = rotation % targets.len().max(1);
    for target in targets[start..].iter().chain(&targets[..start]) {
        let claimed = storage::runs::claim(
            &scheduler.state.claims,
            &target.task_ids,
            CLAIM_BATCH,
            Utc::now(),
            &target.id,
            target.capacity,
        )
        .await?;
        if claimed.is_empty() {
            continue;
        }
        round.claimed += claimed.len();
        scheduler.state.metrics.claimed(claimed.len());
        round.full |= claimed.len() as i64 == CLAIM_BATCH;
        let previous = previous_attempts(pool, &claimed).await?;
        let mut upstream = upstream_refs(pool, &claimed).await?;
        let secrets = task_secrets(scheduler, &claimed).await?;
        let mut outgoing = Vec::with_capacity(claimed.len());
        for run in claimed {
            let (refs, failed) = upstream.remove(&run.id).unwrap_or_default();
            let mut dispatch = dispatch_message(
                scheduler,
                &run,
                previous.get(&run.id).cloned().unwrap_or_default(),
                refs,
            );
            dispatch.failed_upstream = failed;
            if let Some(values) = secrets.get(&run.task_id) {
                dispatch.sealed_secrets = scheduler
                    .state
                    .secret_box
                    .seal_dispatch(values, &dispatch.run_id, dispatch.attempt)
                    .inspect_err(|error| tracing::error!(run_id = %dispatch.run_id, %error, "the attempt goes without its secrets"))
                    .ok();
            }
            let reference = AttemptRef {
                run_id: run.id,
                attempt: run.attempt,
                attempt_token: run.attempt_token,
            };
            outgoing.push(Outgoing {
                dispatch,
                reference,
            });
        }
        let state = scheduler.state.clone();
        if target.is_host {
            round.sends.push((
                outgoing.len(),
                tokio::spawn(send_to_host(state, target.clone(), outgoing)),
            ));
        } else {
            for one in outgoing {
                round.sends.push((
                    1,
                    tokio::spawn(send_to_worker(state.clone(), target.clone(), one)),
                ));
            }
        }
    }
    if round.claimed > 0 {
        tracing::debug!(claimed = round.claimed, "dispatch round");
    }
    Ok(round)
}

/// A claimed attempt and its dispatch.
#[derive(Debug)]
struct Outgoing {
    dispatch: Dispatch,
    reference: AttemptRef,
}

/// Sends `outgoing` to a PipeWeave host in as few `POST /dispatches` as
/// fit under [`DISPATCH_BATCH_BYTES`]; the attempts of a request that
/// fails are failed as `dispatch_failed`.
async fn send_to_host(
    state: crate::api::AppState,
    target: Target,
    outgoing: Vec<Outgoing>,
) -> RoundReport {
    let url = format!("{}/dispatches", target.url);
    let bodies = match wire::batch_bodies(
        "dispatches",
        &outgoing,
        |one| &one.dispatch,
        DISPATCH_BATCH_BYTES,
    ) {
        Ok(bodies) => bodies,
        Err(error) => {
            let failure = SendFailure {
                message: format!("cannot encode the dispatch: {error}"),
                unreachable: false,
            };
            return record_failures(&state, &target, &outgoing, failure).await;
        }
    };
    let mut report = RoundReport::default();
    for (chunk, body) in bodies {
        let started = Instant::now();
        let sent = send(&state.http, &url, body).await;
        state
            .metrics
            .dispatched(started.elapsed().as_secs_f64(), chunk.len(), sent.is_ok());
        match sent {
            Ok(()) => report.dispatched += chunk.len(),
            Err(failure) => {
                let failed = record_failures(&state, &target, chunk, failure).await;
                report.failed += failed.failed;
            }
        }
    }
    report
}

/// Sends one attempt to a plain HTTP worker with `POST /tasks/{taskId}`;
/// fails it as `dispatch_failed` if that fails.
async fn send_to_worker(state: crate::api::AppState, target: Target, one: Outgoing) -> RoundReport {
    let url = format!("{}/tasks/{}", target.url, one.dispatch.task_id);
    let started = Instant::now();
    let sent = match serde_json::to_vec(&one.dispatch) {
        Ok(body) => send(&state.http, &url, body).await,
        Err(error) => Err(SendFailure {
            message: format!("cannot encode the dispatch: {error}"),
            unreachable: false,
        }),
    };
    state
        .metrics
        .dispatched(started.elapsed().as_secs_f64(), 1, sent.is_ok());
    match sent {
        Ok(()) => RoundReport {
            dispatched: 1,
            failed: 0,
        },
        Err(failure) => record_failures(&state, &target, std::slice::from_ref(&one), failure).await,
    }
}

/// Fails each attempt of a dispatch that failed as `dispatch_failed`, and
/// takes an unreachable target out of rotation.
async fn record_failures(
    state: &crate::api::AppState,
    target: &Target,
    attempts: &[Outgoing],
    failure: SendFailure,
) -> RoundReport {
    tracing::warn!(target = %target.id, attempts = attempts.len(), "dispatch failed: {}", failure.message);
    if failure.unreachable
        && let Err(error) = mark_unreachable(state, target).await
    {
        tracing::warn!(target = %target.id, error = %crate::error_chain(&error), "cannot take an unreachable target out of rotation");
    }
    let error = AttemptError::decided(FailureReason::DispatchFailed, failure.message);
    for one in attempts {
        let reference = one.reference;
        if let Err(error) = queue::fail_attempt(
            &state.pool,
            &state.metrics,
            reference,
            &error,
            None,
            Utc::now(),
        )
        .await
        {
            // The heartbeat watch fails the attempt later instead.
            tracing::warn!(run_id = %RunId(reference.run_id), error = %crate::error_chain(&error), "cannot record a failed dispatch");
        }
    }
    RoundReport {
        dispatched: 0,
        failed: attempts.len(),
    }
}

/// Takes a target that refused connections out of rotation: a host until
/// it pings again, a worker for [`UNREACHABLE_BACKOFF`].
async fn mark_unreachable(state: &crate::api::AppState, target: &Target) -> crate::Result<()> {
    let pool = &state.pool;
    if target.is_host {
        storage::hosts::mark_unreachable(pool, &target.id).await?;
    } else {
        let until =
            Utc::now() + chrono::Duration::from_std(UNREACHABLE_BACKOFF).unwrap_or_default();
        storage::services::mark_unreachable(pool, &target.id, until).await?;
    }
    state.note_targets_changed();
    Ok(())
}

async fn previous_attempts(
    pool: &sqlx::PgPool,
    claimed: &[storage::runs::Claimed],
) -> crate::Result<HashMap<Uuid, Vec<PreviousAttempt>>> {
    let retried: Vec<Uuid> = claimed
        .iter()
        .filter(|r| r.attempt > 1)
        .map(|r| r.id)
        .collect();
    let mut by_run: HashMap<Uuid, Vec<PreviousAttempt>> = HashMap::new();
    if retried.is_empty() {
        return Ok(by_run);
    }
    for attempt in storage::attempts::of_runs(pool, &retried).await? {
        let Some(error) = attempt.error else { continue };
        by_run
            .entry(attempt.run_id)
            .or_default()
            .push(PreviousAttempt {
                attempt: u32::try_from(attempt.attempt).unwrap_or(0),
                error: error["message"].as_str().unwrap_or_default().to_owned(),
                error_code: error["code"].as_str().map(str::to_owned),
                timestamp_ms: u64::try_from(attempt.finished_at.timestamp_millis()).unwrap_or(0),
            });
    }
    Ok(by_run)
}

/// The results and failures a claimed task run of a pipeline hands on: of
/// the task runs that selected it (its direct upstream on this pipeline
/// run), by task, and its upstream tasks that died or were cancelled.
type Upstream = (BTreeMap<String, ResultRef>, Vec<String>);

/// For each claimed task run of a pipeline, its [`Upstream`].
async fn upstream_refs(
    pool: &sqlx::PgPool,
    claimed: &[storage::runs::Claimed],
) -> crate::Result<HashMap<Uuid, Upstream>> {
    let mut pipeline_runs: Vec<Uuid> = claimed.iter().filter_map(|r| r.pipeline_run_id).collect();
    let mut by_run = HashMap::new();
    if pipeline_runs.is_empty() {
        return Ok(by_run);
    }
    pipeline_runs.sort();
    pipeline_runs.dedup();
    let succeeded = storage::pipelines::succeeded(pool, &pipeline_runs).await?;
    let in_pipelines: Vec<Uuid> = claimed
        .iter()
        .filter(|r| r.pipeline_run_id.is_some())
        .map(|r| r.id)
        .collect();
    let mut failed: HashMap<Uuid, Vec<String>> =
        storage::pipelines::failed_upstream(pool, &in_pipelines)
            .await?
            .into_iter()
            .collect();
    for run in claimed {
        let Some(pipeline_run) = run.pipeline_run_id else {
            continue;
        };
        let refs: BTreeMap<String, ResultRef> = succeeded
            .iter()
            .filter(|up| {
                up.pipeline_run_id == pipeline_run && up.selected_next.contains(&run.task_id)
            })
            .filter_map(|up| {
                serde_json::from_value(up.result.clone())
                    .ok()
                    .map(|result| (up.task_id.clone(), result))
            })
            .collect();
        by_run.insert(run.id, (refs, failed.remove(&run.id).unwrap_or_default()));
    }
    Ok(by_run)
}

/// How long a storage token outlives its attempt's timeout: time to
/// upload results after the last moment of the run.
const TOKEN_GRACE_SECS: i64 = 300;

/// The attempt's storage token: the backend holding the run's data (the
/// default one unless its input is stored elsewhere), its run's scope, and
/// an expiry past the attempt's timeout. `None` (logged) if that backend
/// is no longer configured or sealing fails.
fn storage_token(
    scheduler: &Scheduler,
    run: &storage::runs::Claimed,
    run_id: &str,
) -> Option<String> {
    let stores = &scheduler.state.stores;
    let backend = match &run.backend_id {
        None => stores.default_store().0,
        Some(id) => match stores.get(id) {
            Some((backend, _)) => backend,
            None => {
                tracing::error!(%run_id, backend = %id, "no storage token for this attempt: its data is on a backend that is no longer configured (STORAGE_BACKENDS)");
                return None;
            }
        },
    };
    let grant = pipeweave_storage::Grant {
        backend: backend.clone(),
        scope: match run.pipeline_run_id {
            None => pipeweave_storage::layout::standalone_scope(run_id, run.input_path.as_deref()),
            Some(pipeline_run) => pipeweave_storage::layout::pipeline_task_scope(
                &PipelineRunId(pipeline_run).to_string(),
                run_id,
            ),
        },
        run_id: run_id.to_owned(),
        attempt: u32::try_from(run.attempt).unwrap_or(0),
        expires_at: chrono::Utc::now().timestamp()
            + run.timeout_ms.saturating_add(999) / 1000
            + TOKEN_GRACE_SECS,
    };
    scheduler
        .state
        .sealer
        .seal(&grant)
        .inspect_err(|error| tracing::error!(%run_id, %error, "no storage token for this attempt"))
        .ok()
}

/// The secrets each claimed task declares that the orchestrator keeps,
/// opened, by task id; no query when none of the claimed tasks declares
/// any. A value that does not open (sealed under another
/// `PIPEWEAVE_SECRET_KEY`) is left out, and logged.
async fn task_secrets(
    scheduler: &Scheduler,
    claimed: &[storage::runs::Claimed],
) -> crate::Result<HashMap<String, BTreeMap<String, String>>> {
    let mut task_ids: Vec<String> = claimed
        .iter()
        .filter(|run| run.declares_secrets)
        .map(|run| run.task_id.clone())
        .collect();
    task_ids.sort_unstable();
    task_ids.dedup();
    let mut secrets: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    if task_ids.is_empty() {
        return Ok(secrets);
    }
    for declared in storage::secrets::declared_by(&scheduler.state.pool, &task_ids).await? {
        match scheduler
            .state
            .secret_box
            .open_value(&declared.name, &declared.sealed)
        {
            Ok(value) => {
                secrets
                    .entry(declared.task_id)
                    .or_default()
                    .insert(declared.name, value);
            }
            Err(error) => {
                tracing::error!(secret = %declared.name, task_id = %declared.task_id, %error, "a stored secret cannot be opened; set it again")
            }
        }
    }
    Ok(secrets)
}

fn dispatch_message(
    scheduler: &Scheduler,
    run: &storage::runs::Claimed,
    previous: Vec<PreviousAttempt>,
    upstream_refs: BTreeMap<String, ResultRef>,
) -> Dispatch {
    let public_url = &scheduler.state.config.public_url;
    let run_id = RunId(run.id).to_string();
    Dispatch {
        storage_token: storage_token(scheduler, run, &run_id),
        sealed_secrets: None,
        callback_url: format!("{public_url}/api/callback/{run_id}"),
        heartbeat_url: format!("{public_url}/api/heartbeat"),
        callbacks_url: Some(format!("{public_url}/api/callbacks")),
        run_id,
        task_id: run.task_id.clone(),
        pipeline_run_id: run.pipeline_run_id.map(|id| PipelineRunId(id).to_string()),
        attempt: u32::try_from(run.attempt).unwrap_or(0),
        code_version: u32::try_from(run.code_version).unwrap_or(0),
        code_hash: run.code_hash.clone(),
        attempt_token: run.attempt_token.to_string(),
        heartbeat_interval_ms: u64::try_from(run.heartbeat_interval_ms).unwrap_or(u64::MAX),
        timeout_ms: u64::try_from(run.timeout_ms).unwrap_or(u64::MAX),
        initial_input: run.input.clone(),
        input_path: run.input_path.clone(),
        upstream_refs,
        failed_upstream: Vec::new(),
        previous_attempts: previous,
    }
}

struct SendFailure {
    message: String,
    unreachable: bool,
}

/// Posts a JSON `body` to `url`; anything but a 2xx within
/// [`DISPATCH_TIMEOUT`] is a failure.
async fn send(http: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<(), SendFailure> {
    match http
        .post(url)
        .timeout(DISPATCH_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            Err(SendFailure {
                message: format!("{url} refused the dispatch with {status}: {body}"),
                unreachable: false,
            })
        }
        Err(error) => Err(SendFailure {
            message: if error.is_timeout() {
                format!(
                    "{url} did not accept the dispatch within {}s",
                    DISPATCH_TIMEOUT.as_secs()
                )
            } else {
                format!("cannot reach {url}: {}", crate::error_chain(&error))
            },
            unreachable: error.is_connect(),
        }),
    }
}
