//! `pipeweave visualize [dir]`: a project's pipelines as a Mermaid
//! flowchart. The graph is the one the orchestrator would snapshot: the
//! tasks each pipeline's entry tasks reach through their `allowedNext`,
//! as validated by `pipeweave_orchestrator::pipeline::validate`. Entry
//! tasks are stadiums, joins (tasks with more than one predecessor)
//! hexagons, and every node shows its task id, timeout and retries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::anyhow;
use pipeweave_orchestrator::pipeline::{self, Validated};

use crate::cli::{CommandError, exit};
use crate::project::{MANIFEST_FILE, Project, build_and_load, local_runner, task_infos};

const VISUALIZE_HELP: &str = "\
Examples:
  pipeweave visualize                                    every pipeline of the project in ./
  pipeweave visualize examples/pdf-pipeline --pipeline pdf-processing
  pipeweave visualize -o pipeline.mmd                    write the diagram to a file
  pipeweave visualize -o PIPELINES.md                    a .md file gets a ```mermaid block

Paste the output into https://mermaid.live, or into Markdown on GitHub or
GitLab inside a ```mermaid block.

Exit codes:
  0  the diagram was written
  1  a pipeline is invalid (its problems are printed; see pipeweave validate)
  2  usage error: not a project, no pipelines, no such pipeline, the build failed";

/// Print a project's pipelines as a Mermaid flowchart.
#[derive(Debug, clap::Args)]
#[command(after_help = VISUALIZE_HELP)]
pub(crate) struct VisualizeArgs {
    /// The project directory.
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// Draw only this pipeline.
    #[arg(long, value_name = "ID")]
    pipeline: Option<String>,

    /// Write the diagram to this file instead of stdout (a `.md` file gets
    /// a fenced mermaid block).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Build the tasks in the debug profile.
    #[arg(long)]
    debug: bool,

    /// Where compiled components are cached between runs.
    #[arg(long, env = "PIPEWEAVE_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

/// Mermaid node ids for task ids: `t_` and the id with `-` as `_`, made
/// unique with a suffix (`a-b` and `a_b` would otherwise meet).
fn node_ids<'a>(
    tasks: impl IntoIterator<Item = &'a str>,
    prefix: &str,
) -> BTreeMap<String, String> {
    let mut used = BTreeSet::new();
    let mut ids = BTreeMap::new();
    for task in tasks {
        let base = format!("{prefix}t_{}", task.replace('-', "_"));
        let mut id = base.clone();
        let mut n = 2;
        while !used.insert(id.clone()) {
            id = format!("{base}_{n}");
            n += 1;
        }
        ids.insert(task.to_owned(), id);
    }
    ids
}

/// The tasks of a validated pipeline in plan order (entries first).
fn plan_order(validated: &Validated) -> Vec<&str> {
    let mut order: Vec<&str> = Vec::new();
    for step in &validated.plan {
        for task in &step.tasks {
            if !order.contains(&task.as_str()) {
                order.push(task);
            }
        }
    }
    for task in validated.structure.tasks.keys() {
        if !order.contains(&task.as_str()) {
            order.push(task);
        }
    }
    order
}

/// Renders pipelines as one Mermaid flowchart: one pipeline plainly,
/// several as one subgraph each. `details` gives each task's label
/// line under its id (timeout, retries).
pub(crate) fn render_mermaid(
    pipelines: &[(&str, &Validated)],
    details: &BTreeMap<String, String>,
) -> String {
    let mut lines = vec!["flowchart TD".to_owned()];
    let mut entries = Vec::new();
    let mut joins = Vec::new();
    let several = pipelines.len() > 1;
    for (index, (pipeline_id, validated)) in pipelines.iter().enumerate() {
        let structure = &validated.structure;
        let prefix = if several {
            format!("p{}_", index + 1)
        } else {
            String::new()
        };
        let indent = if several { "        " } else { "    " };
        let order = plan_order(validated);
        let ids = node_ids(order.iter().copied(), &prefix);
        if several {
            lines.push(format!(
                "    subgraph p{}[\"pipeline {pipeline_id}\"]",
                index + 1
            ));
        } else {
            lines.push(format!("    %% pipeline {pipeline_id}"));
        }
        for task in &order {
            let node = &ids[*task];
            let is_entry = structure.entry.iter().any(|e| e == task);
            let is_join = structure
                .tasks
                .get(*task)
                .is_some_and(|n| n.predecessors.len() > 1);
            let mut notes = Vec::new();
            if is_entry {
                notes.push("entry".to_owned());
                entries.push(node.clone());
            }
            if is_join {
                notes.push("join".to_owned());
                joins.push(node.clone());
            }
            if let Some(detail) = details.get(*task) {
                notes.push(detail.clone());
            }
            let label = if notes.is_empty() {
                (*task).to_owned()
            } else {
                format!("{task}<br/>{}", notes.join(" · "))
            };
            let (open, close) = if is_entry {
                ("([", "])")
            } else if is_join {
                ("{{", "}}")
            } else {
                ("[", "]")
            };
            lines.push(format!("{indent}{node}{open}\"{label}\"{close}"));
        }
        for task in &order {
            let Some(node) = structure.tasks.get(*task) else {
                continue;
            };
            for next in &node.allowed_next {
                if let Some(target) = ids.get(next) {
                    lines.push(format!("{indent}{} --> {target}", ids[*task]));
                }
            }
        }
        if several {
            lines.push("    end".to_owned());
        }
    }
    lines.push("    classDef entry stroke-width:3px".to_owned());
    lines.push("    classDef join stroke-dasharray:4 2".to_owned());
    if !entries.is_empty() {
        lines.push(format!("    class {} entry", entries.join(",")));
    }
    if !joins.is_empty() {
        lines.push(format!("    class {} join", joins.join(",")));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Runs `pipeweave visualize`.
pub(crate) async fn run(args: VisualizeArgs) -> Result<u8, CommandError> {
    let project = Project::discover(&args.dir).map_err(CommandError::usage)?;
    if project.pipelines().is_empty() {
        return Err(CommandError::usage(anyhow!(
            "{} declares no pipelines; add one to {}:\n\n[[pipelines]]\nid = \"my-pipeline\"\nentry = [\"first-task\"]",
            project.name(),
            project.root().join(MANIFEST_FILE).display()
        )));
    }
    let specs: Vec<_> = match &args.pipeline {
        Some(id) => {
            let Some(spec) = project.pipelines().iter().find(|p| &p.id == id) else {
                return Err(CommandError::usage(anyhow!(
                    "{} has no pipeline {id:?}; its pipelines are: {}",
                    project.name(),
                    project
                        .pipelines()
                        .iter()
                        .map(|p| p.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            vec![spec]
        }
        None => project.pipelines().iter().collect(),
    };
    let runner = local_runner(args.cache_dir.clone()).map_err(CommandError::internal)?;
    let tasks = build_and_load(&project, &runner, args.debug, false)
        .await
        .map_err(CommandError::usage)?;
    let infos = task_infos(&tasks);
    let details: BTreeMap<String, String> = tasks
        .iter()
        .map(|t| {
            let d = t.task.descriptor();
            (
                d.id.clone(),
                format!("timeout {} s · retries {}", d.timeout, d.retries),
            )
        })
        .collect();

    let mut validated = Vec::new();
    let mut invalid = false;
    for spec in &specs {
        match pipeline::validate(&spec.entry, None, &infos) {
            Ok(v) => validated.push((spec.id.as_str(), v)),
            Err(problems) => {
                invalid = true;
                eprintln!("error: pipeline {} is invalid:", spec.id);
                for problem in problems {
                    eprintln!("  {problem}");
                }
            }
        }
    }
    if invalid {
        eprintln!("(run `pipeweave validate` for every check)");
        return Ok(exit::TASK_FAILED);
    }
    let pairs: Vec<(&str, &Validated)> = validated.iter().map(|(id, v)| (*id, v)).collect();
    let diagram = render_mermaid(&pairs, &details);
    match &args.output {
        None => print!("{diagram}"),
        Some(path) => {
            let text = if path.extension().is_some_and(|e| e == "md") {
                format!("```mermaid\n{diagram}```\n")
            } else {
                diagram
            };
            std::fs::write(path, text)
                .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
                .map_err(CommandError::usage)?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeweave_orchestrator::pipeline::TaskInfo;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, TaskInfo> {
        edges
            .iter()
            .map(|(task, next)| {
                (
                    (*task).to_owned(),
                    TaskInfo {
                        allowed_next: next.iter().map(|n| (*n).to_owned()).collect(),
                        has_target: true,
                        ..TaskInfo::default()
                    },
                )
            })
            .collect()
    }

    fn pdf() -> Result<Validated, Vec<pipeline::Problem>> {
        pipeline::validate(
            &["download".to_owned()],
            None,
            &graph(&[
                ("download", &["extract-text", "extract-tables"]),
                ("extract-text", &["summarize"]),
                ("extract-tables", &["summarize"]),
                ("summarize", &["notify", "archive"]),
                ("notify", &[]),
                ("archive", &[]),
                ("elsewhere", &["download"]),
            ]),
        )
    }

    /// Nodes (id → label) and edges of a one-pipeline diagram.
    type Parsed = (BTreeMap<String, String>, BTreeSet<(String, String)>);

    fn parse(text: &str) -> Parsed {
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("flowchart TD"));
        let mut nodes = BTreeMap::new();
        let mut edges = BTreeSet::new();
        for line in lines.map(str::trim) {
            if let Some((from, to)) = line.split_once(" --> ") {
                edges.insert((from.to_owned(), to.to_owned()));
            } else if let Some(open) = line.find('"') {
                let label = &line[open + 1..line.rfind('"').unwrap_or(line.len())];
                let id: String = line
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                nodes.insert(id, label.to_owned());
            }
        }
        (nodes, edges)
    }

    #[test]
    fn the_pdf_pipeline_draws_its_nodes_and_edges() -> Result<(), Vec<pipeline::Problem>> {
        let validated = pdf()?;
        let details =
            BTreeMap::from([("download".to_owned(), "timeout 60 s · retries 3".to_owned())]);
        let text = render_mermaid(&[("pdf-processing", &validated)], &details);
        let (nodes, edges) = parse(&text);
        assert_eq!(nodes.len(), 6, "{text}");
        assert_eq!(
            nodes["t_download"],
            "download<br/>entry · timeout 60 s · retries 3"
        );
        assert_eq!(nodes["t_summarize"], "summarize<br/>join");
        assert!(
            text.contains("    t_download([\""),
            "entry is a stadium: {text}"
        );
        assert!(
            text.contains("    t_summarize{{\""),
            "a join is a hexagon: {text}"
        );
        let expected: BTreeSet<(String, String)> = [
            ("download", "extract_text"),
            ("download", "extract_tables"),
            ("extract_text", "summarize"),
            ("extract_tables", "summarize"),
            ("summarize", "notify"),
            ("summarize", "archive"),
        ]
        .iter()
        .map(|(a, b)| (format!("t_{a}"), format!("t_{b}")))
        .collect();
        assert_eq!(edges, expected, "{text}");
        assert!(
            !text.contains("elsewhere"),
            "only what the entries reach: {text}"
        );
        Ok(())
    }

    #[test]
    fn several_pipelines_are_subgraphs_with_their_own_nodes() -> Result<(), Vec<pipeline::Problem>>
    {
        let first = pdf()?;
        let second = pipeline::validate(
            &["summarize".to_owned()],
            None,
            &graph(&[("summarize", &["notify"]), ("notify", &[])]),
        )?;
        let text = render_mermaid(&[("a", &first), ("b", &second)], &BTreeMap::new());
        assert!(text.contains("    subgraph p1[\"pipeline a\"]"), "{text}");
        assert!(
            text.contains("        p2_t_summarize --> p2_t_notify"),
            "{text}"
        );
        assert!(
            text.contains("        p1_t_summarize --> p1_t_notify"),
            "{text}"
        );
        assert_eq!(text.matches("\n    end").count(), 2, "{text}");
        Ok(())
    }

    #[test]
    fn node_ids_stay_unique() {
        let ids = node_ids(["a-b", "a_b", "end"], "");
        assert_eq!(ids["a-b"], "t_a_b");
        assert_eq!(ids["a_b"], "t_a_b_2");
        assert_eq!(ids["end"], "t_end");
    }
}
