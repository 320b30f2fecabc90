//! Pipeline structure: the DAG that the tasks' `allowedNext` span from a
//! pipeline's entry tasks, its validation, its execution plan (what
//! `dry-run` prints) and the snapshot a pipeline run keeps.
//!
//! This module is pure logic over task descriptors; the database side is
//! `storage::pipelines` and the transaction that decides what runs next is
//! `queries/advance.sql`, which reads the snapshot built here: each task's
//! `predecessors` (tasks of the pipeline that may select it) and
//! `ancestors` (tasks from which it can be reached). A task becomes ready
//! when a succeeded run selected it and no run of one of its ancestors is
//! still queued, running or waiting for a retry; so a join waits for every
//! upstream branch that is still under way on this run, and for no branch
//! that was not selected.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use utoipa::ToSchema;

/// What the validation needs to know of a registered task.
#[derive(Debug, Clone, Default)]
pub struct TaskInfo {
    /// Its `allowedNext`.
    pub allowed_next: Vec<String>,
    /// Its concurrency limit (0: none).
    pub concurrency: i32,
    /// Its code hash now.
    pub code_hash: String,
    /// Its code version now.
    pub code_version: i32,
    /// Whether a live host or worker can run it now.
    pub has_target: bool,
}

/// One task in a pipeline run's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// The tasks it may select.
    pub allowed_next: Vec<String>,
    /// The tasks of the pipeline that may select it.
    pub predecessors: Vec<String>,
    /// Every task of the pipeline from which it can be reached.
    pub ancestors: Vec<String>,
    /// Its code hash at trigger time.
    pub code_hash: String,
    /// Its code version at trigger time.
    pub code_version: i32,
}

/// A pipeline's structure: its entry tasks and every task they reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Structure {
    /// The tasks that start with the pipeline's input.
    pub entry: Vec<String>,
    /// Every task of the pipeline, by id.
    pub tasks: BTreeMap<String, Node>,
}

/// Something that makes a pipeline unusable, named so its author can fix
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Problem {
    /// A task the pipeline names is not registered.
    UnknownTask {
        /// The task.
        task: String,
        /// Who names it: `entry`, `tasks` or the task whose allowedNext
        /// lists it.
        named_by: String,
    },
    /// The graph has a cycle, so some task would wait for itself.
    Cycle {
        /// The tasks around the cycle, the first repeated at the end.
        path: Vec<String>,
    },
    /// An entry task is also selected by another task of the pipeline; it
    /// runs once per run, at the start, so that selection could never
    /// start it.
    EntryHasPredecessor {
        /// The entry task.
        task: String,
        /// The task whose allowedNext lists it.
        predecessor: String,
    },
    /// A task the definition lists is not reachable from the entry tasks.
    Unreachable {
        /// The task.
        task: String,
    },
    /// The entry tasks reach a task the definition does not list.
    NotListed {
        /// The task.
        task: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownTask { task, named_by } => {
                write!(f, "task {task:?} (named by {named_by}) is not registered")
            }
            Self::Cycle { path } => write!(f, "cycle: {}", path.join(" → ")),
            Self::EntryHasPredecessor { task, predecessor } => write!(
                f,
                "entry task {task:?} is also in the allowedNext of {predecessor:?}, but an entry task runs only at the start"
            ),
            Self::Unreachable { task } => {
                write!(
                    f,
                    "task {task:?} is listed but not reachable from the entry tasks"
                )
            }
            Self::NotListed { task } => write!(
                f,
                "task {task:?} is reachable from the entry tasks but not listed in `tasks`"
            ),
        }
    }
}

/// One step of the execution plan: tasks that can run at the same time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// The tasks, in id order.
    pub tasks: Vec<String>,
    /// The step as the spec's dry-run prints it, e.g.
    /// `summarize (join, waits for: extract-text, extract-tables)`.
    pub text: String,
}

/// A validated pipeline: its structure, its plan and what deserves a look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Validated {
    /// The structure a run would snapshot now.
    pub structure: Structure,
    /// The execution plan, step by step.
    pub plan: Vec<Step>,
    /// Things that do not stop a run but deserve a look: concurrency
    /// limits, tasks that no live host or worker runs now.
    pub warnings: Vec<String>,
}

/// Validates the pipeline with `entry` tasks over the registered `tasks`:
/// every named task is registered, the graph spanned from the entries has
/// no cycle, no entry task is selected by another task, and, if `listed`
/// is given, it is exactly the set of reachable tasks. All problems are
/// reported at once.
pub fn validate(
    entry: &[String],
    listed: Option<&[String]>,
    tasks: &BTreeMap<String, TaskInfo>,
) -> Result<Validated, Vec<Problem>> {
    let mut problems = Vec::new();
    let known = |task: &String, named_by: &str, problems: &mut Vec<Problem>| {
        let found = tasks.contains_key(task);
        if !found {
            problems.push(Problem::UnknownTask {
                task: task.clone(),
                named_by: named_by.to_owned(),
            });
        }
        found
    };

    // What the entries reach, breadth first.
    let mut reached: BTreeSet<String> = BTreeSet::new();
    let mut frontier: Vec<String> = entry
        .iter()
        .filter(|task| known(task, "entry", &mut problems))
        .cloned()
        .collect();
    while let Some(task) = frontier.pop() {
        if !reached.insert(task.clone()) {
            continue;
        }
        for next in &tasks[&task].allowed_next {
            if known(next, &format!("{task:?}"), &mut problems) && !reached.contains(next) {
                frontier.push(next.clone());
            }
        }
    }
    problems.dedup();

    let predecessors = predecessors(&reached, tasks);
    for task in entry {
        if let Some(from) = predecessors.get(task).and_then(|p| p.iter().next()) {
            problems.push(Problem::EntryHasPredecessor {
                task: task.clone(),
                predecessor: from.clone(),
            });
        }
    }
    if let Some(path) = find_cycle(&reached, tasks) {
        problems.push(Problem::Cycle { path });
    }
    if let Some(listed) = listed {
        for task in listed {
            if known(task, "tasks", &mut problems) && !reached.contains(task) {
                problems.push(Problem::Unreachable { task: task.clone() });
            }
        }
        let listed: BTreeSet<&String> = listed.iter().collect();
        for task in &reached {
            if !listed.contains(task) {
                problems.push(Problem::NotListed { task: task.clone() });
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut nodes = BTreeMap::new();
    for task in &reached {
        let info = &tasks[task];
        nodes.insert(
            task.clone(),
            Node {
                allowed_next: info.allowed_next.clone(),
                predecessors: predecessors
                    .get(task)
                    .map(|p| p.iter().cloned().collect())
                    .unwrap_or_default(),
                ancestors: ancestors(task, &predecessors).into_iter().collect(),
                code_hash: info.code_hash.clone(),
                code_version: info.code_version,
            },
        );
    }
    let structure = Structure {
        entry: entry.to_vec(),
        tasks: nodes,
    };
    let plan = plan(&structure);
    let mut warnings = Vec::new();
    for task in &reached {
        let info = &tasks[task];
        if info.concurrency > 0 {
            warnings.push(format!(
                "Task '{task}' has concurrency limit of {}",
                info.concurrency
            ));
        }
        if !info.has_target {
            warnings.push(format!(
                "Task '{task}' has no live host or worker now; its runs wait in the queue until one registers"
            ));
        }
    }
    Ok(Validated {
        structure,
        plan,
        warnings,
    })
}

/// For each reached task, the reached tasks whose allowedNext lists it.
fn predecessors(
    reached: &BTreeSet<String>,
    tasks: &BTreeMap<String, TaskInfo>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut predecessors: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for task in reached {
        for next in &tasks[task].allowed_next {
            if reached.contains(next) {
                predecessors
                    .entry(next.clone())
                    .or_default()
                    .insert(task.clone());
            }
        }
    }
    predecessors
}

/// Every task from which `task` can be reached.
fn ancestors(task: &str, predecessors: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut frontier = vec![task.to_owned()];
    while let Some(current) = frontier.pop() {
        for from in predecessors.get(&current).into_iter().flatten() {
            if from != task && seen.insert(from.clone()) {
                frontier.push(from.clone());
            }
        }
    }
    seen
}

/// A cycle among the reached tasks, if there is one (depth-first search
/// with colours, in id order so the answer is stable).
fn find_cycle(
    reached: &BTreeSet<String>,
    tasks: &BTreeMap<String, TaskInfo>,
) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Colour {
        InProgress,
        Done,
    }
    fn visit(
        task: &str,
        tasks: &BTreeMap<String, TaskInfo>,
        reached: &BTreeSet<String>,
        colour: &mut BTreeMap<String, Colour>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        colour.insert(task.to_owned(), Colour::InProgress);
        path.push(task.to_owned());
        let mut next: Vec<&String> = tasks[task]
            .allowed_next
            .iter()
            .filter(|n| reached.contains(*n))
            .collect();
        next.sort();
        for n in next {
            match colour.get(n) {
                Some(Colour::InProgress) => {
                    let start = path.iter().position(|p| p == n).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(n.clone());
                    return Some(cycle);
                }
                Some(Colour::Done) => {}
                None => {
                    if let Some(cycle) = visit(n, tasks, reached, colour, path) {
                        return Some(cycle);
                    }
                }
            }
        }
        path.pop();
        colour.insert(task.to_owned(), Colour::Done);
        None
    }
    let mut colour = BTreeMap::new();
    for task in reached {
        if !colour.contains_key(task)
            && let Some(cycle) = visit(task, tasks, reached, &mut colour, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// The execution plan: tasks grouped by their longest distance from an
/// entry task, so each step's tasks can run at the same time once the
/// steps before it are done. Needs an acyclic structure.
fn plan(structure: &Structure) -> Vec<Step> {
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    // Kahn's algorithm over in-pipeline predecessors.
    let mut waiting: BTreeMap<&str, usize> = structure
        .tasks
        .iter()
        .map(|(task, node)| (task.as_str(), node.predecessors.len()))
        .collect();
    let mut ready: Vec<&str> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(task, _)| *task)
        .collect();
    while let Some(task) = ready.pop() {
        let here = depth.get(task).copied().unwrap_or(0);
        for next in &structure.tasks[task].allowed_next {
            let Some(count) = waiting.get_mut(next.as_str()) else {
                continue;
            };
            let entry = depth.entry(next.as_str()).or_insert(0);
            *entry = (*entry).max(here + 1);
            *count -= 1;
            if *count == 0 {
                ready.push(next.as_str());
            }
        }
    }
    let mut steps: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for task in structure.tasks.keys() {
        steps
            .entry(depth.get(task.as_str()).copied().unwrap_or(0))
            .or_default()
            .push(task.as_str());
    }
    steps
        .into_values()
        .map(|tasks| {
            let mut notes = Vec::new();
            if tasks.iter().all(|t| structure.entry.iter().any(|e| e == t)) {
                notes.push("entry".to_owned());
            }
            if tasks.len() > 1 {
                notes.push("parallel".to_owned());
            }
            if tasks
                .iter()
                .all(|t| structure.tasks[*t].allowed_next.is_empty())
            {
                notes.push("end".to_owned());
            }
            let joins: Vec<String> = tasks
                .iter()
                .filter(|t| structure.tasks[**t].predecessors.len() > 1)
                .map(|t| format!("waits for: {}", structure.tasks[*t].predecessors.join(", ")))
                .collect();
            if !joins.is_empty() {
                notes.push("join".to_owned());
                notes.extend(joins);
            }
            let names = tasks.join(", ");
            let text = if notes.is_empty() {
                names
            } else {
                format!("{names} ({})", notes.join(", "))
            };
            Step {
                tasks: tasks.into_iter().map(str::to_owned).collect(),
                text,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, TaskInfo> {
        edges
            .iter()
            .map(|(task, next)| {
                (
                    (*task).to_owned(),
                    TaskInfo {
                        allowed_next: next.iter().map(|n| (*n).to_owned()).collect(),
                        code_hash: format!("hash-{task}"),
                        code_version: 1,
                        has_target: true,
                        ..TaskInfo::default()
                    },
                )
            })
            .collect()
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// The spec's PDF pipeline.
    fn pdf() -> BTreeMap<String, TaskInfo> {
        graph(&[
            ("download", &["extract-text", "extract-tables"]),
            ("extract-text", &["summarize"]),
            ("extract-tables", &["summarize"]),
            ("summarize", &["notify", "archive"]),
            ("notify", &[]),
            ("archive", &[]),
        ])
    }

    #[test]
    fn the_spec_pdf_pipeline_plans_as_the_spec_prints_it() -> Result<(), Vec<Problem>> {
        let mut tasks = pdf();
        if let Some(info) = tasks.get_mut("extract-tables") {
            info.concurrency = 2;
        }
        let validated = validate(&ids(&["download"]), None, &tasks)?;
        let texts: Vec<&str> = validated.plan.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "download (entry)",
                "extract-tables, extract-text (parallel)",
                "summarize (join, waits for: extract-tables, extract-text)",
                "archive, notify (parallel, end)",
            ]
        );
        assert_eq!(
            validated.warnings,
            ["Task 'extract-tables' has concurrency limit of 2"]
        );
        let summarize = &validated.structure.tasks["summarize"];
        assert_eq!(
            summarize.predecessors,
            ids(&["extract-tables", "extract-text"])
        );
        assert_eq!(
            summarize.ancestors,
            ids(&["download", "extract-tables", "extract-text"])
        );
        assert_eq!(validated.structure.tasks["download"].ancestors, ids(&[]));
        Ok(())
    }

    #[test]
    fn a_cycle_and_unknown_tasks_are_all_reported_by_name() {
        let tasks = graph(&[("a", &["b"]), ("b", &["c", "ghost"]), ("c", &["a"])]);
        let problems = validate(&ids(&["a", "nope"]), None, &tasks)
            .err()
            .unwrap_or_default();
        assert!(problems.contains(&Problem::UnknownTask {
            task: "nope".into(),
            named_by: "entry".into()
        }));
        assert!(problems.contains(&Problem::UnknownTask {
            task: "ghost".into(),
            named_by: "\"b\"".into()
        }));
        assert!(problems.contains(&Problem::Cycle {
            path: ids(&["a", "b", "c", "a"])
        }));
        assert!(problems.contains(&Problem::EntryHasPredecessor {
            task: "a".into(),
            predecessor: "c".into()
        }));
    }

    #[test]
    fn a_listed_task_out_of_reach_and_a_reached_task_not_listed_are_reported() {
        let tasks = graph(&[("a", &["b"]), ("b", &[]), ("lonely", &[])]);
        let problems = validate(&ids(&["a"]), Some(&ids(&["a", "lonely"])), &tasks)
            .err()
            .unwrap_or_default();
        assert_eq!(
            problems,
            [
                Problem::Unreachable {
                    task: "lonely".into()
                },
                Problem::NotListed { task: "b".into() }
            ]
        );
    }

    #[test]
    fn a_task_without_a_live_target_is_a_warning() -> Result<(), Vec<Problem>> {
        let mut tasks = graph(&[("a", &[])]);
        if let Some(info) = tasks.get_mut("a") {
            info.has_target = false;
        }
        let validated = validate(&ids(&["a"]), None, &tasks)?;
        assert!(validated.warnings[0].contains("no live host or worker"));
        Ok(())
    }

    #[test]
    fn a_diamond_with_a_shortcut_waits_for_the_longest_branch() -> Result<(), Vec<Problem>> {
        // a → b → d, a → d: d waits for a and b.
        let tasks = graph(&[("a", &["b", "d"]), ("b", &["d"]), ("d", &[])]);
        let validated = validate(&ids(&["a"]), None, &tasks)?;
        let texts: Vec<&str> = validated.plan.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["a (entry)", "b", "d (end, join, waits for: a, b)"]);
        Ok(())
    }
}
