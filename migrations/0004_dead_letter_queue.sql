-- The dead-letter queue is the set of dead runs. Retrying one enqueues a
-- new run that points back at it; purging deletes dead runs (and their
-- attempts) past the retention.
alter table runs
    -- The dead run this one retries. No foreign key: every update of a
    -- run would pay for its triggers, and a purge clears the pointers
    -- itself.
    add column retry_of uuid,
    -- Set when a retry pins the failed attempt's code instead of the
    -- task's current code (WebAssembly tasks only).
    add column pinned_code_version integer,
    add column pinned_code_hash text,
    add constraint runs_pin_is_whole check ((pinned_code_version is null) = (pinned_code_hash is null));

-- A dead run is retried at most once, even by two requests at the same
-- instant: the second finds the first's run.
create unique index runs_retry_of on runs (retry_of) where retry_of is not null;

-- The dead-letter queue by time of death (listing and purge).
create index runs_dead on runs (finished_at) where state = 'dead';
