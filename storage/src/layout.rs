//! Where a run's data lives in a bucket: the spec's layout.
//!
//! | what | path |
//! | --- | --- |
//! | a standalone run's input | `standalone/{runId}/input.json` |
//! | a run's output | `runs/{runId}/outputs/{taskRunId}.json` |
//! | a run's assets | `runs/{runId}/assets/{key}` |
//! | an attempt's logs | `runs/{runId}/logs/{taskRunId}/{attempt}.jsonl` |
//! | an uploaded module | `modules/{codeHash}.wasm` |
//!
//! For a standalone task run, `runId` is the task run's own id; in a
//! pipeline it is the pipeline run's. The spec names one log file per task
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

/// A run's asset.
pub fn asset(run_id: &str, key: &str) -> String {
    format!("runs/{run_id}/assets/{key}")
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
