//! `pipeweave services`: the services registered with an orchestrator and
//! their tasks, with each task's current code (`GET /api/services`,
//! `GET /api/services/{id}/tasks`).

use serde_json::Value;

use crate::cli::{CommandError, exit};
use crate::client::{ApiClient, ClientArgs, print_json, segment};
use crate::ui::{self, Table};

const SERVICES_EXAMPLES: &str = "\
Examples:
  # Every service and its tasks
  pipeweave services

  # One service's tasks, from another orchestrator
  pipeweave services pdf-worker --url https://orchestrator.example.com

  # For scripts: the services, each with its tasks
  pipeweave services --json | jq '.[].tasks[].id'

Exit codes:
  0  listed
  4  the orchestrator cannot be reached
  5  no service has that id";

/// List the services registered with an orchestrator and their tasks.
#[derive(Debug, clap::Args)]
#[command(after_help = SERVICES_EXAMPLES)]
pub(crate) struct ServicesArgs {
    /// Only this service.
    service: Option<String>,

    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `pipeweave services`.
pub(crate) async fn run(args: ServicesArgs) -> Result<u8, CommandError> {
    let api = ApiClient::new(&args.client)?;
    let mut services = match &args.service {
        Some(id) => {
            // Its tasks answer 404 for an unknown service.
            let tasks = api
                .get(&format!("/api/services/{}/tasks", segment(id)))
                .await?;
            let all = api.get("/api/services").await?;
            let mut service = all
                .as_array()
                .and_then(|list| list.iter().find(|s| s["id"] == id.as_str()))
                .cloned()
                .unwrap_or_else(|| serde_json::json!({ "id": id }));
            service["tasks"] = tasks;
            vec![service]
        }
        None => {
            let all = api.get("/api/services").await?;
            all.as_array().cloned().unwrap_or_default()
        }
    };
    if args.service.is_none() {
        for service in &mut services {
            let id = service["id"].as_str().unwrap_or_default().to_owned();
            service["tasks"] = api
                .get(&format!("/api/services/{}/tasks", segment(&id)))
                .await?;
        }
    }
    if args.client.json {
        print_json(&Value::Array(services))?;
        return Ok(exit::SUCCESS);
    }
    if services.is_empty() {
        println!(
            "No services are registered with {}. Register a task with `pipeweave register task.wasm`, \
             or start a plain HTTP worker.",
            api.base()
        );
        return Ok(exit::SUCCESS);
    }
    print_services(&services);
    Ok(exit::SUCCESS)
}

fn print_services(services: &[Value]) {
    let mut table = Table::new(&[
        "SERVICE",
        "VERSION",
        "RUNTIME",
        "TASKS",
        "WHERE",
        "UPDATED (UTC)",
    ]);
    for service in services {
        let place = match service["runtime"].as_str() {
            Some("wasm") => "PipeWeave hosts".to_owned(),
            _ => ui::cell(&service["baseUrl"]),
        };
        table.row(vec![
            ui::cell(&service["id"]),
            ui::cell(&service["version"]),
            ui::cell(&service["runtime"]),
            ui::cell(&service["taskCount"]),
            place,
            ui::time(&service["updatedAt"]),
        ]);
    }
    table.print();

    let mut tasks = Table::new(&[
        "TASK", "SERVICE", "CODE", "HASH", "TIMEOUT", "RETRIES", "NEXT", "RUNNING",
    ]);
    for service in services {
        for task in service["tasks"].as_array().into_iter().flatten() {
            let next: Vec<&str> = task["allowedNext"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            tasks.row(vec![
                ui::cell(&task["id"]),
                ui::cell(&task["serviceId"]),
                format!("v{}", ui::cell(&task["codeVersion"])),
                ui::dim(ui::short_hash(task["codeHash"].as_str().unwrap_or("-"))),
                task["timeout"]
                    .as_u64()
                    .map_or_else(|| "-".to_owned(), |s| format!("{s}s")),
                ui::cell(&task["retries"]),
                if next.is_empty() {
                    "-".to_owned()
                } else {
                    next.join(", ")
                },
                ui::cell(&task["runningCount"]),
            ]);
        }
    }
    if !tasks.is_empty() {
        println!();
        tasks.print();
    }
}
