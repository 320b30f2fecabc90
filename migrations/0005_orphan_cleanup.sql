-- A task its service no longer registers. When a service registers a new
-- version without one of its tasks, the task is marked removed (runs keep
-- pointing at it), its waiting runs are cancelled, and it takes no new
-- runs; registering it again clears the mark.
alter table tasks add column removed_in_version text;
