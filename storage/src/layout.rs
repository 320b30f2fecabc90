//! Where a run's data lives in a bucket: the spec's layout.
//!
//! | what | path |
//! | --- | --- |
//! | a standalone run's input | `standalone/{runId}/input.json` |
//! | a pipeline run's input | `pipelines/{runId}/input.json` |
//! | a run's output | `runs/{runId}/outputs/{taskRunId}.json` |
//! | a standalone run's assets | `runs/{runId}/assets/{key}` |
//! | a pipeline task run's assets | `runs/{runId}/assets/{taskRunId}/{key}` |
//! | an attempt's logs | `runs/{runId}/logs/{taskRunId}/{attempt}.jsonl` |
//! | an uploaded module | `modules/{codeHash}.wasm` |
//!
//! For a standalone task run, `runId` is the task run's own id; in a
//! pipeline it is the pipeline run's. In a pipeline run each task run's
//! assets get a folder of their own, so two tasks that store the same key
//! do not overwrite each other. The spec names one log file per task
//! run (`logs/{taskRunId}.jsonl`); here each attempt keeps its own, so a
//! retry does not overwrite the log of the attempt that failed.

use crate::scope::Scope;

/// A standalone run's input.
pub fn standalone_input(run_id: &str) -> String {
    format!("standalone/{run_id}/input.json")
}

/// Everything a run writes is under this prefix.
pub fn run_prefix(run_id: &str) -> String {
    format!("runs/{run_id}/")
}

/// A task run's output.
pub fn output(run_id: &str, task_run_id: &str) -> String {
    format!("runs/{run_id}/outputs/{task_run_id}.json")
}

/// A task run's asset.
pub fn asset(run_id: &str, task_run_id: &str, key: &str) -> String {
    if run_id == task_run_id {
        format!("runs/{run_id}/assets/{key}")
    } else {
        format!("runs/{run_id}/assets/{task_run_id}/{key}")
    }
}

/// A pipeline run's input.
pub fn pipeline_input(run_id: &str) -> String {
    format!("pipelines/{run_id}/input.json")
}

/// The log of one attempt of a task run.
pub fn logs(run_id: &str, task_run_id: &str, attempt: u32) -> String {
    format!("runs/{run_id}/logs/{task_run_id}/{attempt}.jsonl")
}

/// An uploaded module.
pub fn module(code_hash: &str) -> String {
    format!("modules/{code_hash}.wasm")
}

/// What an attempt of a standalone task run may touch: read its input,
/// write (and read back) under its run's prefix. `input_path` is the
/// input object when it lives elsewhere: a dead-letter retry reads the
/// input its dead run stored.
pub fn standalone_scope(run_id: &str, input_path: Option<&str>) -> Scope {
    let mut read = vec![format!("standalone/{run_id}/")];
    if let Some(path) = input_path
        && !path.starts_with(&read[0])
    {
        read.push(path.to_owned());
    }
    Scope {
        read,
        write: vec![run_prefix(run_id)],
    }
}

/// What an attempt of a task run in a pipeline run may touch: read the
/// pipeline run's input and everything its tasks stored (upstream outputs
/// and assets), write only its own output, assets and logs.
pub fn pipeline_task_scope(pipeline_run_id: &str, task_run_id: &str) -> Scope {
    Scope {
        read: vec![
            format!("pipelines/{pipeline_run_id}/"),
            run_prefix(pipeline_run_id),
        ],
        write: vec![
            output(pipeline_run_id, task_run_id),
            format!("runs/{pipeline_run_id}/assets/{task_run_id}/"),
            format!("runs/{pipeline_run_id}/logs/{task_run_id}/"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Access;

    #[test]
    fn a_pipeline_task_writes_only_its_own_objects_and_reads_its_run() {
        let scope = pipeline_task_scope("prun_1", "trun_a");
        for own in [
            output("prun_1", "trun_a"),
            asset("prun_1", "trun_a", "pdf"),
            logs("prun_1", "trun_a", 2),
        ] {
            assert!(scope.check(Access::Write, &own).is_ok(), "{own}");
        }
        for sibling in [
            output("prun_1", "trun_b"),
            asset("prun_1", "trun_b", "pdf"),
            logs("prun_1", "trun_b", 1),
        ] {
            assert!(scope.check(Access::Write, &sibling).is_err(), "{sibling}");
            assert!(scope.check(Access::Read, &sibling).is_ok(), "{sibling}");
        }
        assert!(scope.check(Access::Read, &pipeline_input("prun_1")).is_ok());
        assert!(
            scope
                .check(Access::Read, &pipeline_input("prun_2"))
                .is_err()
        );
    }
}
