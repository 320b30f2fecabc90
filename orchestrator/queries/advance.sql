-- Decides what runs next in pipeline run $1 at time $2. The caller holds
-- the pipeline run's row lock (storage::pipelines::lock_run) and has just
-- ended one of its task runs in the same transaction, so every completion
-- of this pipeline run is decided one after the other, each seeing the
-- ones before it; a crash before the commit loses neither the completion
-- nor what it enqueues.
--
-- A task of the snapshot is ready when
--   * a succeeded task run of this pipeline run selected it,
--   * it has no run in this pipeline run yet (a join fires once),
--   * no run of one of its ancestors is still queued, running or waiting
--     for a retry (a join waits for every branch still under way), and
--   * in `continue` mode, none of its predecessors died or was cancelled
--     (a merge with a failed input is skipped).
-- A task of a WebAssembly service runs the code of the snapshot (its run
-- is pinned to the snapshot's hash and version, as a pinned dead-letter
-- retry is); a plain HTTP worker runs whatever it has, and the run shows
-- when that changed (GET /api/runs/{id}).
-- The pipeline run ends when none of its task runs is active and nothing
-- was enqueued: succeeded if none died or was cancelled, otherwise
-- `partial` in partial-merge mode and `failed` in the others.
with pipeline_run as (
    select id, structure, failure_mode, input, input_path, backend_id
    from pipeline_runs
    where id = $1 and state = 'running'
),
mine as (
    -- Its task runs, less the dead or cancelled ones that a dead-letter
    -- retry replaced.
    select task_id, state, selected_next from runs
    where pipeline_run_id = $1
      and not exists (select from runs retry where retry.retry_of = runs.id)
),
node as (
    select node.task_id, node.spec
    from pipeline_run, jsonb_each(pipeline_run.structure -> 'tasks') as node (task_id, spec)
),
ready as (
    select node.task_id, node.spec
    from node
    where exists (
              select from mine
              where mine.state = 'succeeded' and node.task_id = any(mine.selected_next))
      and not exists (select from mine where mine.task_id = node.task_id)
      and not exists (
              select from mine
              where mine.state in ('queued', 'running', 'awaiting_retry')
                and mine.task_id in (select jsonb_array_elements_text(node.spec -> 'ancestors')))
      and not (
              (select failure_mode from pipeline_run) = 'continue'
              and exists (
                  select from mine
                  where mine.state in ('dead', 'cancelled')
                    and mine.task_id in (
                        select jsonb_array_elements_text(node.spec -> 'predecessors'))))
),
enqueued as (
    insert into runs (id, task_id, pipeline_run_id, priority, scheduled_at, input, input_path,
                      backend_id, created_at, pinned_code_version, pinned_code_hash)
    select pipeweave_uuid_v7(), ready.task_id, pipeline_run.id, tasks.priority, $2,
           pipeline_run.input, pipeline_run.input_path, pipeline_run.backend_id, $2,
           case when services.runtime = 'wasm' then (ready.spec ->> 'codeVersion')::integer end,
           case when services.runtime = 'wasm' then ready.spec ->> 'codeHash' end
    from ready
    cross join pipeline_run
    join tasks on tasks.id = ready.task_id
    join services on services.id = tasks.service_id
    order by ready.task_id
    on conflict (pipeline_run_id, task_id)
        where pipeline_run_id is not null and retry_of is null
        do nothing
    returning id
),
ended as (
    update pipeline_runs set
        state = case
            when not exists (select from mine where state in ('dead', 'cancelled'))
                then 'succeeded'::pipeline_run_state
            when failure_mode = 'partial-merge' then 'partial'::pipeline_run_state
            else 'failed'::pipeline_run_state
        end,
        finished_at = $2
    where id = $1 and state = 'running'
      and not exists (select from mine where state in ('queued', 'running', 'awaiting_retry'))
      and not exists (select from enqueued)
    returning state
)
select (select count(*) from enqueued) as "enqueued!",
       (select state from ended) as "ended: PipelineRunState"
