-- Ends the current attempts named by ($1 run ids, $2 attempts, $3 tokens)
-- as succeeded with results $4 and log paths $6 at time $5; returns the
-- runs that changed.
-- Only runs outside pipelines: a pipeline's task run ends with what it
-- selects, under its pipeline run's lock (storage::runs::succeed_in_pipeline).
-- Attempts that are no longer current are skipped: only a running run
-- holds a token (runs_token_iff_running), so the token match is the guard.
-- Each run is found by primary key (`id = any($1)`) and takes its values
-- from the arrays at its position in $1. There is no join between the runs
-- and the arrays, so no join order to get wrong: a generic plan made while
-- `runs` was empty joined the other way round, scanning every run for each
-- reported one (100–400 ms per batch once 20,000 were queued). Run it
-- with scheduler::FIXED_PLAN_SETTINGS (storage::runs::succeed says why).
with finished as (
    update runs set state = 'succeeded', finished_at = $5,
        result = ($4::jsonb[])[array_position($1::uuid[], runs.id)],
        error = null, attempt_token = null,
        logs_path = ($6::text[])[array_position($1::uuid[], runs.id)]
    where runs.id = any($1::uuid[])
      and runs.attempt = ($2::integer[])[array_position($1::uuid[], runs.id)]
      and runs.attempt_token = ($3::uuid[])[array_position($1::uuid[], runs.id)]
      and runs.pipeline_run_id is null
    returning runs.id, runs.task_id
),
released as (
    update tasks set running_count = greatest(tasks.running_count - per_task.finished, 0)
    from (select task_id, count(*)::integer as finished from finished group by task_id) per_task
    where tasks.id = per_task.task_id and tasks.concurrency > 0
)
-- The successful attempt stays on the run row (attempt, target, code,
-- started_at, finished_at), and the attempts table keeps the others.
select id from finished;
