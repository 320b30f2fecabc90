//! How a task run looks in the API: camelCase, the spec's `runId`,
//! `taskId` and `status`, and the output fields of the callback
//! (`output`, `outputPath`, `outputSize`, `assets`) lifted to the top.

use serde_json::{Map, Value, json};

use crate::RunId;
use crate::storage::RunState;
use crate::storage::attempts::AttemptRow;
use crate::storage::runs::RunRow;

/// The summary shown in lists.
pub(super) fn summary(run: &RunRow) -> Map<String, Value> {
    let mut view = Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            view.insert(key.to_owned(), value);
        }
    };
    put("runId", json!(RunId(run.id)));
    put("taskId", json!(run.task_id));
    put("status", json!(run.state.as_str()));
    put("priority", json!(run.priority));
    put("attempt", json!(run.attempt));
    put("createdAt", json!(run.created_at));
    put("scheduledAt", json!(run.scheduled_at));
    put("startedAt", json!(run.started_at));
    put("heartbeatAt", json!(run.heartbeat_at));
    put("finishedAt", json!(run.finished_at));
    put("codeVersion", json!(run.code_version));
    put("codeHash", json!(run.code_hash));
    put("target", json!(run.target));
    put("progress", json!(run.progress));
    put("progressMessage", json!(run.progress_message));
    put("metadata", run.metadata.clone().unwrap_or(Value::Null));
    put("error", run.error.clone().unwrap_or(Value::Null));
    put("cancelledBy", json!(run.cancelled_by));
    put("cancelReason", json!(run.cancel_reason));
    view
}

/// Everything about one run: the summary, its input, its result and every
/// finished attempt (the failed ones from `attempts`, the successful one
/// from the run row).
pub(super) fn detail(run: &RunRow, attempts: &[AttemptRow]) -> Value {
    let mut view = summary(run);
    view.insert("input".into(), run.input.clone());
    if let Some(Value::Object(result)) = &run.result {
        for (key, value) in result {
            view.insert(key.clone(), value.clone());
        }
    }
    let mut attempts: Vec<Value> = attempts
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "outcome": a.outcome,
                "target": a.target,
                "codeVersion": a.code_version,
                "codeHash": a.code_hash,
                "startedAt": a.started_at,
                "finishedAt": a.finished_at,
                "error": a.error,
            })
        })
        .collect();
    if run.state == RunState::Succeeded {
        attempts.push(json!({
            "attempt": run.attempt,
            "outcome": "succeeded",
            "target": run.target,
            "codeVersion": run.code_version,
            "codeHash": run.code_hash,
            "startedAt": run.started_at,
            "finishedAt": run.finished_at,
        }));
    }
    view.insert("attempts".into(), Value::Array(attempts));
    Value::Object(view)
}
