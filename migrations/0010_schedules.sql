-- Cron schedules: a pipeline or a standalone task triggered on a cron
-- expression (Pipedreamer's `triggers: cron`). Each due schedule is fired
-- by whichever orchestrator locks its row first (`for update skip
-- locked`), in the transaction that moves `next_fire_at` on, so a tick
-- fires once however many replicas run. A task run fired by a schedule
-- also carries the idempotency key `schedule:{id}:{tick}`.

create type missed_ticks as enum (
    -- After downtime, fire once for the missed ticks, then keep to the
    -- schedule.
    'run-once',
    -- After downtime, fire nothing for the missed ticks.
    'skip'
);

create table schedules (
    id text primary key,
    pipeline_id text references pipelines (id) on delete cascade,
    task_id text references tasks (id),
    cron text not null,
    input jsonb not null default 'null',
    missed missed_ticks not null default 'run-once',
    enabled boolean not null default true,
    next_fire_at timestamptz not null,
    last_fired_at timestamptz,
    -- The task run or pipeline run the last fired tick made.
    last_run_id uuid,
    -- Why the last due tick made nothing (an invalid pipeline, say).
    last_error text,
    created_at timestamptz not null,

    constraint schedules_id_format check (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$'),
    constraint schedules_one_target check ((pipeline_id is null) <> (task_id is null)),
    constraint schedules_cron_length check (length(cron) <= 200)
);

create index schedules_due on schedules (next_fire_at) where enabled;
