-- PipeWeave's initial schema: the services that run tasks and their code
-- history, uploaded WebAssembly modules, hosts, and the queue itself (task
-- runs and their finished attempts).
--
-- Every state change of a run is one transaction guarded by the run's
-- current attempt and its token, so a crash at any instant loses nothing
-- and a late message from a superseded attempt changes nothing.

-- Where a service's tasks run.
create type service_runtime as enum (
    -- A plain HTTP worker in any language, reached at its base URL.
    'http',
    -- WebAssembly components uploaded through registration, run by
    -- PipeWeave hosts.
    'wasm'
);

create table services (
    id text primary key,
    -- The service's own version string; a change of version is what
    -- triggers orphan cleanup.
    version text not null,
    runtime service_runtime not null,
    -- Where a plain HTTP worker receives dispatches; absent for wasm.
    base_url text,
    -- Attempts a plain HTTP worker takes at once; absent means the
    -- orchestrator's MAX_CONCURRENCY.
    capacity integer,
    -- A dispatch to this worker could not connect: no dispatches until
    -- then, or until it registers again (a restarted worker does).
    unreachable_until timestamptz,
    registered_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),

    constraint services_id_length check (length(id) between 1 and 200),
    constraint services_capacity_positive check (capacity > 0),
    constraint services_http_has_base_url check ((runtime = 'http') = (base_url is not null))
);

create table tasks (
    id text primary key,
    service_id text not null references services (id),
    -- SHA-256 of the module (wasm), or the worker's own hash of its handler.
    code_hash text not null,
    -- Starts at 1 and grows by one with every change of code_hash.
    code_version integer not null default 1,
    -- The descriptor as registered (retry policy, allowedNext, grants …);
    -- the columns below copy what SQL needs to read quickly.
    descriptor jsonb not null,
    -- Default priority of new runs; lower runs first.
    priority integer not null,
    -- Most attempts of this task running at once across all replicas;
    -- 0 means no limit.
    concurrency integer not null,
    -- Attempts running now, kept only for tasks with a limit: the claim
    -- locks this row (skip locked) and raises it in the same statement, the
    -- end of an attempt lowers it in the same transaction.
    running_count integer not null default 0,
    timeout_ms bigint not null,
    heartbeat_interval_ms bigint not null,
    registered_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),

    constraint tasks_id_length check (length(id) between 1 and 200),
    constraint tasks_code_version_positive check (code_version >= 1),
    constraint tasks_priority_non_negative check (priority >= 0),
    constraint tasks_concurrency_non_negative check (concurrency >= 0),
    constraint tasks_running_count_non_negative check (running_count >= 0),
    constraint tasks_timeout_positive check (timeout_ms > 0),
    constraint tasks_heartbeat_interval_positive check (heartbeat_interval_ms > 0)
);

-- One row per code version of a task, the first included.
create table task_code_history (
    task_id text not null references tasks (id),
    code_version integer not null,
    code_hash text not null,
    service_version text not null,
    recorded_at timestamptz not null default now(),

    primary key (task_id, code_version)
);

-- Uploaded WebAssembly components, addressed by the SHA-256 of their bytes.
create table modules (
    code_hash text primary key,
    bytes bytea not null,
    uploaded_at timestamptz not null default now(),

    constraint modules_code_hash_is_sha256 check (code_hash ~ '^[0-9a-f]{64}$')
);

-- PipeWeave hosts; each repeats its registration as a liveness ping.
create table hosts (
    id text primary key,
    url text not null,
    capacity integer not null,
    registered_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),

    constraint hosts_capacity_positive check (capacity > 0)
);

create type run_state as enum (
    -- Waiting to be claimed, from scheduled_at on.
    'queued',
    -- Claimed and handed to a host or worker: one attempt in flight.
    'running',
    -- The last attempt failed and another is scheduled at scheduled_at.
    'awaiting_retry',
    -- An attempt returned a result.
    'succeeded',
    -- No attempts left, or a fatal error: the dead-letter queue.
    'dead',
    -- Cancelled by a person or by orphan cleanup.
    'cancelled'
);

-- A task run is a row: the queue is this table.
create table runs (
    id uuid primary key,
    task_id text not null references tasks (id),
    state run_state not null default 'queued',
    priority integer not null,
    -- Not claimed before this instant: a delayed run, or a retry's backoff.
    scheduled_at timestamptz not null,
    input jsonb not null,
    -- The caller's own data, returned as given.
    metadata jsonb,
    created_at timestamptz not null default now(),

    -- The current attempt (or the last one, once the run has ended); 0
    -- before the first claim.
    attempt integer not null default 0,
    -- Heartbeats and the callback must present it; a new one per attempt,
    -- cleared when the attempt ends.
    attempt_token uuid,
    -- The host or service the attempt was handed to.
    target text,
    code_version integer,
    code_hash text,
    started_at timestamptz,
    heartbeat_at timestamptz,
    -- started_at plus the task's timeout.
    deadline_at timestamptz,
    -- The heartbeat interval the attempt was dispatched with; silence for
    -- twice this long loses the attempt.
    heartbeat_interval_ms bigint,
    progress smallint,
    progress_message text,

    finished_at timestamptz,
    -- The successful attempt's output and assets (a ResultRef).
    result jsonb,
    -- The last failed attempt's error.
    error jsonb,

    constraint runs_priority_non_negative check (priority >= 0),
    constraint runs_attempt_non_negative check (attempt >= 0),
    constraint runs_running_has_attempt check (
        state <> 'running'
        or (attempt >= 1 and attempt_token is not null and started_at is not null
            and heartbeat_at is not null and deadline_at is not null
            and heartbeat_interval_ms is not null and code_hash is not null)
    ),
    constraint runs_token_iff_running check ((state = 'running') = (attempt_token is not null)),
    constraint runs_finished_iff_terminal check (
        (state in ('succeeded', 'dead', 'cancelled')) = (finished_at is not null)
    ),
    constraint runs_succeeded_has_result check (state <> 'succeeded' or result is not null),
    constraint runs_progress_percent check (progress between 0 and 100)
);

-- Built for the claim: its where clause and order by, exactly.
create index runs_claimable on runs (priority, scheduled_at, id)
    where state in ('queued', 'awaiting_retry');

-- Running attempts by target: host capacity and the heartbeat watch.
create index runs_running on runs (target) where state = 'running';

-- No index by task or creation time: every index is written on every
-- state change (none of them can be HOT), and listings walk the primary
-- key backwards instead (UUID v7 ids are in creation order).

create type attempt_outcome as enum ('failed', 'cancelled');

-- Attempts that ended without a result. The running attempt and the
-- successful one live on the run row, so the happy path writes no row
-- here (one insert and one index entry less per run).
create table attempts (
    run_id uuid not null references runs (id),
    attempt integer not null,
    outcome attempt_outcome not null,
    target text,
    code_version integer not null,
    code_hash text not null,
    started_at timestamptz not null,
    finished_at timestamptz not null,
    -- {message, code, retryable, reason, details} for a failed attempt.
    error jsonb,

    primary key (run_id, attempt),
    constraint attempts_failure_has_error check (outcome <> 'failed' or error is not null)
);

-- Wakes the schedulers (LISTEN pipeweave_runs) when runs are enqueued;
-- once per statement, so a bulk insert sends one notification.
create function notify_runs_enqueued() returns trigger language plpgsql as $$
begin
    perform pg_notify('pipeweave_runs', '');
    return null;
end;
$$;

create trigger runs_enqueued after insert on runs
    for each statement execute function notify_runs_enqueued();
