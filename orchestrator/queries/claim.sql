-- Claims up to $2 due runs of the tasks in $1 for target $4 at time $3 and
-- starts an attempt of each, leaving the target at most $5 running attempts;
-- nothing while maintenance mode is on.
-- See storage::runs::claim for how it honours priority, delayed runs,
-- per-task concurrency and the target's capacity across replicas. The
-- benchmark runs this same file under pgbench. Run it with
-- scheduler::claim_session_settings(), which keep its plan an ordered scan of
-- runs_claimable and primary-key lookups whatever the statistics say.
with limited as materialized (
    select id, concurrency - running_count as free
    from tasks
    where id = any($1) and concurrency > 0
    for update skip locked
),
claimable_tasks as materialized (
    select array(
        select id from tasks where id = any($1) and concurrency = 0
        union all
        select id from limited where free > 0
    ) as ids
),
candidates as materialized (
    select runs.id, runs.task_id, runs.priority, runs.scheduled_at
    from runs
    where runs.state in ('queued', 'awaiting_retry')
      and runs.scheduled_at <= $3
      and runs.task_id = any((select ids from claimable_tasks)::text[])
      and not exists (select from maintenance)
    order by runs.priority, runs.scheduled_at, runs.id
    limit least($2, greatest($5 - (
        select count(*) from runs where state = 'running' and target = $4
    ), 0))
    for update skip locked
),
chosen as (
    select ranked.id, ranked.task_id
    from (
        select candidates.*, row_number() over (
            partition by candidates.task_id
            order by candidates.priority, candidates.scheduled_at, candidates.id
        ) as rank_in_task
        from candidates
    ) ranked
    left join limited on limited.id = ranked.task_id
    where limited.id is null or ranked.rank_in_task <= limited.free
),
counted as (
    update tasks set running_count = tasks.running_count + per_task.claimed
    from (select task_id, count(*)::integer as claimed from chosen group by task_id) per_task
    where tasks.id = per_task.task_id and tasks.concurrency > 0
)
update runs set
    state = 'running',
    attempt = runs.attempt + 1,
    attempt_token = gen_random_uuid(),
    target = $4,
    -- The task's current code, unless a dead-letter retry pinned the code
    -- that failed.
    code_version = coalesce(runs.pinned_code_version, tasks.code_version),
    code_hash = coalesce(runs.pinned_code_hash, tasks.code_hash),
    started_at = $3,
    heartbeat_at = $3,
    deadline_at = $3 + tasks.timeout_ms * interval '1 millisecond',
    heartbeat_interval_ms = tasks.heartbeat_interval_ms,
    progress = null,
    progress_message = null
from tasks
-- The claimed runs by primary key, not a join with `chosen`: a generic
-- plan made while `runs` looked empty walked all of runs_pkey for that
-- join, for every claim until the plan was replaced.
where runs.id = any(array(select id from chosen))
  and tasks.id = runs.task_id
returning runs.id, runs.task_id, runs.attempt, runs.attempt_token as "attempt_token!",
          runs.input, runs.input_path, runs.backend_id, runs.pipeline_run_id, runs.code_version as "code_version!", runs.code_hash as "code_hash!",
          tasks.timeout_ms,
          tasks.heartbeat_interval_ms,
          -- Whether the dispatch must look up secrets (most tasks declare none).
          coalesce(jsonb_array_length(case when jsonb_typeof(tasks.descriptor -> 'secrets') = 'array'
                                           then tasks.descriptor -> 'secrets' end) > 0,
                   false) as "declares_secrets!";
