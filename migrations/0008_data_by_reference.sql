-- Data by reference (the spec's "Storage & Data Flow").
--
-- A run's input travels inline in `input` while it is small; a larger one
-- is written to object storage at enqueue (`standalone/{runId}/input.json`)
-- and the row keeps only its path. `backend_id` names the backend that
-- holds the run's data, so a change of default backend does not strand
-- the runs already queued; null means the default backend at dispatch.

alter table runs alter column input drop not null;
alter table runs add column input_path text;
alter table runs add column backend_id text;
alter table runs add constraint runs_input_in_one_place
    check ((input is null) <> (input_path is null));
alter table runs add constraint runs_input_path_names_its_backend
    check (input_path is null or backend_id is not null);

-- Each attempt's log (JSON lines), written by the host or worker that ran
-- it: the successful attempt's on the run, the failed ones' with them.
alter table runs add column logs_path text;
alter table attempts add column logs_path text;
