-- Idempotency keys: while a key is live, enqueuing its task again with
-- the same key returns the run that holds it instead of a new run. The
-- primary key makes two concurrent duplicates produce one run.
create table idempotency_keys (
    task_id text not null references tasks (id),
    -- `key:` and the caller's key, or `derived:` and the SHA-256 of the
    -- input parts and code version the task's descriptor names.
    key text not null,
    -- The run that holds the key (no foreign key: runs are purged on
    -- their own schedule, and a missing run frees the key).
    run_id uuid not null,
    -- Enqueue time plus the TTL; a later duplicate makes a new run.
    expires_at timestamptz not null,

    primary key (task_id, key),
    constraint idempotency_keys_key_length check (length(key) <= 300)
);
