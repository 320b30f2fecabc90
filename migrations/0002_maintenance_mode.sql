-- Maintenance mode. While this table has its one row, no orchestrator
-- claims runs (the claim statement checks it), so running attempts finish
-- and nothing new starts; enqueues, heartbeats and callbacks go on. The
-- row is the switch, shared by every replica and by serverless ticks.
create table maintenance (
    -- Always true: the primary key allows one row at most.
    singleton boolean primary key default true,
    -- Why, as given by whoever entered it.
    reason text,
    since timestamptz not null,

    constraint maintenance_single_row check (singleton),
    constraint maintenance_reason_length check (length(reason) <= 500)
);
