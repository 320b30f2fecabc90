-- Ends the current attempts named by ($1 run ids, $2 attempts, $3 tokens)
-- as succeeded with results $4 and log paths $6 at time $5; returns the
-- runs that changed.
-- Only runs outside pipelines: a pipeline's task run ends with what it
-- selects, under its pipeline run's lock (storage::runs::succeed_in_pipeline).
-- Attempts that are no longer current are skipped: only a running run
-- holds a token (runs_token_iff_running), so the token match is the guard.
-- storage::runs::succeed plans this statement at each execution: a
-- generic plan cached while `runs` was nearly empty (a fresh or truncated
-- table) joins by scanning every run, 100–400 ms per batch once 20,000
-- are queued. One run at a time goes by a statement of its own instead.
with reported as (
    select * from unnest($1::uuid[], $2::integer[], $3::uuid[], $4::jsonb[], $6::text[])
        as r (id, attempt, attempt_token, result, logs_path)
),
finished as (
    update runs set state = 'succeeded', finished_at = $5, result = reported.result, error = null,
        attempt_token = null, logs_path = reported.logs_path
    from reported
    where runs.id = reported.id
      and runs.attempt = reported.attempt and runs.attempt_token = reported.attempt_token
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
