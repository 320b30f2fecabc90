-- Uploaded modules move to object storage: `modules/{codeHash}.wasm` on
-- the backend named by `backend_id` (the default backend at upload time).
-- The table keeps what is known about each module. Modules uploaded before
-- this migration keep their bytes here and are served from here.

alter table modules add column size bigint;
alter table modules add column backend_id text;
update modules set size = octet_length(bytes);
alter table modules alter column size set not null;
alter table modules alter column bytes drop not null;
alter table modules add constraint modules_stored_in_one_place
    check ((bytes is null) <> (backend_id is null));
alter table modules add constraint modules_size_is_positive check (size > 0);
