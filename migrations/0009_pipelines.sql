-- Pipelines: the DAG that the tasks' `allowedNext` span from a pipeline's
-- entry tasks, registered under an id, and its runs.
--
-- A pipeline run keeps a snapshot of its structure at trigger time (each
-- task's allowedNext, predecessors, ancestors, code hash and version), so
-- a registration that changes the graph mid-run does not change the run.
-- Its task runs are ordinary rows of `runs` with `pipeline_run_id` set:
-- the queue, claims, retries and the dead-letter queue treat them as any
-- other run. What runs next is decided in SQL in the transaction that ends
-- a task run, under a lock on the pipeline run row (see
-- orchestrator/queries/advance.sql).

create type failure_mode as enum ('fail-fast', 'continue', 'partial-merge');

create table pipelines (
    id text primary key,
    description text,
    entry_tasks text[] not null,
    -- The tasks the author expects the entries to reach, if given:
    -- registration checks that they are exactly those.
    tasks text[],
    -- The default for runs that do not name one.
    failure_mode failure_mode not null default 'fail-fast',
    -- 1 at the first registration, bumped by each one that changes it.
    version integer not null default 1,
    created_at timestamptz not null,
    updated_at timestamptz not null,

    constraint pipelines_id_format check (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$'),
    constraint pipelines_has_an_entry check (cardinality(entry_tasks) between 1 and 100),
    constraint pipelines_description_length check (length(description) <= 1000)
);

create type pipeline_run_state as enum (
    -- Some task run is queued, running or waiting for a retry.
    'running',
    -- Every task run that ran succeeded.
    'succeeded',
    -- A task run died (fail-fast, continue) or was cancelled.
    'failed',
    -- partial-merge: some task runs died, the others went on.
    'partial',
    -- Cancelled as a whole.
    'cancelled'
);

create table pipeline_runs (
    id uuid primary key,
    pipeline_id text not null references pipelines (id),
    pipeline_version integer not null,
    state pipeline_run_state not null default 'running',
    failure_mode failure_mode not null,
    -- The input every task run of it receives: inline, or stored at
    -- `pipelines/{runId}/input.json` on `backend_id`.
    input jsonb,
    input_path text,
    backend_id text,
    -- {"entry": [...], "tasks": {"<id>": {"allowedNext", "predecessors",
    --  "ancestors", "codeHash", "codeVersion"}}} at trigger time.
    structure jsonb not null,
    metadata jsonb,
    created_at timestamptz not null,
    finished_at timestamptz,

    constraint pipeline_runs_input_in_one_place check ((input is null) <> (input_path is null)),
    constraint pipeline_runs_input_path_names_its_backend
        check (input_path is null or backend_id is not null),
    constraint pipeline_runs_finished_iff_ended
        check ((state = 'running') = (finished_at is null))
);

alter table runs add column pipeline_run_id uuid references pipeline_runs (id);
-- What a successful task run of a pipeline selected to run next: its
-- `selectedNext`, or all of its allowedNext when it chose nothing.
alter table runs add column selected_next text[];

-- A task runs at most once per pipeline run (dead-letter retries aside),
-- which is what makes a join fire once whoever completes its inputs; it is
-- also how a pipeline run's task runs are found.
create unique index runs_once_per_pipeline_run on runs (pipeline_run_id, task_id)
    where pipeline_run_id is not null and retry_of is null;

-- UUID v7 ids made in SQL (PostgreSQL 15 has no uuidv7()), for the task
-- runs that completions enqueue: milliseconds since the epoch in the first
-- 48 bits, then version 7, then random bits.
create function pipeweave_uuid_v7() returns uuid language sql volatile as $$
    select encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    placing substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
                    from 1 for 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
