-- Secrets tasks read, kept by the orchestrator (`PUT /api/secrets/{name}`)
-- and delivered to hosts and workers in the dispatches of the tasks that
-- declare them. Values are never stored in the clear: each is sealed with
-- AES-256-GCM under a key derived from PIPEWEAVE_SECRET_KEY and bound to
-- its name (pipeweave_storage::secret_box), so this table alone reveals
-- names and times only.

create table secrets (
    -- The name tasks declare: letters, digits, '-', '_' or '.'.
    name text primary key,
    -- A random 96-bit nonce followed by the ciphertext and its 128-bit tag.
    sealed bytea not null,
    created_at timestamptz not null,
    updated_at timestamptz not null,

    constraint secrets_name_format check (name ~ '^[A-Za-z0-9._-]{1,128}$')
);
