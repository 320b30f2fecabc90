//! A PostgreSQL server for tests: the one `DATABASE_URL` names, or else a
//! private cluster started from the system's PostgreSQL binaries, once per
//! test process.
//!
//! The private cluster lives in a temporary directory, listens on a free
//! port on 127.0.0.1 and runs with durability off (`fsync`,
//! `synchronous_commit`, `full_page_writes`), which tests do not need. It
//! runs as the `postgres` user when the tests run as root, since `initdb`
//! and `postgres` refuse root. A small shell watchdog stops it and removes
//! its directory when the test process is gone, however it ended.
//!
//! Each test gets a database of its own with [`create_database`], copied
//! from a template when one is given, so tests never see each other's rows.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use pipeweave_orchestrator::embedded_postgres::{EmbeddedPostgres, Options, find_bindir};

/// The server tests use.
#[derive(Debug)]
pub struct Server {
    /// `postgres://user@host:port`, without a database name.
    base_url: String,
    /// The maintenance database to connect to for administration.
    admin_database: String,
    /// `psql`, for administration.
    psql: PathBuf,
}

impl Server {
    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url)
    }

    /// Runs one SQL statement in the maintenance database with `psql`.
    #[track_caller]
    pub fn execute(&self, sql: &str) {
        run_psql(&self.psql, &self.url(&self.admin_database), sql);
    }
}

#[track_caller]
fn run_psql(psql: &Path, url: &str, sql: &str) -> String {
    let output = Command::new(psql)
        .args([
            url,
            "-v",
            "ON_ERROR_STOP=1",
            "-X",
            "-q",
            "-t",
            "-A",
            "-c",
            sql,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", psql.display()));
    assert!(
        output.status.success(),
        "psql failed on {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs one SQL statement in the database at `url` and returns what `psql`
/// printed (unaligned, tuples only).
#[track_caller]
pub fn query(url: &str, sql: &str) -> String {
    run_psql(&server().psql, url, sql)
}

/// The test server: `DATABASE_URL`'s, or the private cluster, started on
/// first use.
#[track_caller]
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
    match SERVER.get_or_init(start) {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    }
}

/// Creates a new, uniquely named database (from `template` if given) and
/// returns its URL.
#[track_caller]
pub fn create_database(template: Option<&str>) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let server = server();
    match template {
        Some(template) => server.execute(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        )),
        None => server.execute(&format!("CREATE DATABASE \"{name}\"")),
    }
    server.url(&name)
}

/// Creates a new database from a template that `migrate` brought up to
/// date once per process (given the template's URL), and returns its URL.
#[track_caller]
pub fn migrated_database(migrate: fn(&str)) -> String {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let url = create_database(None);
        migrate(&url);
        url.rsplit('/').next().unwrap_or_default().to_owned()
    });
    create_database(Some(template))
}

fn start() -> Result<Server, String> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return external(&url);
    }
    let options = Options {
        durable: false,
        max_connections: 200,
        ..Options::default()
    };
    let cluster = EmbeddedPostgres::start(&options).map_err(|e| e.to_string())?;
    let server = Server {
        base_url: cluster.base_url(),
        admin_database: "postgres".into(),
        psql: cluster.bindir().join("psql"),
    };
    // It lives as long as the test process; its watchdog cleans up after.
    std::mem::forget(cluster);
    Ok(server)
}

/// A server named by `DATABASE_URL`: its database part is the maintenance
/// database.
fn external(url: &str) -> Result<Server, String> {
    let (base, database) = match url.rsplit_once('/') {
        Some((base, database)) if base.contains("://") && !base.ends_with('/') => {
            (base.to_owned(), database.to_owned())
        }
        _ => (url.trim_end_matches('/').to_owned(), "postgres".to_owned()),
    };
    let psql = find_bindir().map_or_else(|_| PathBuf::from("psql"), |bin| bin.join("psql"));
    Ok(Server {
        base_url: base,
        admin_database: database,
        psql,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_test_database_is_separate_and_templates_are_copied() {
        let template = create_database(None);
        query(
            &template,
            "CREATE TABLE marker (id int); INSERT INTO marker VALUES (7)",
        );
        let template_name = template.rsplit('/').next().expect("database name");

        let first = create_database(Some(template_name));
        let second = create_database(Some(template_name));
        assert_ne!(first, second);
        assert_eq!(
            query(&first, "SELECT id FROM marker"),
            "7",
            "copied from the template"
        );
        query(&first, "INSERT INTO marker VALUES (8)");
        assert_eq!(
            query(&second, "SELECT count(*) FROM marker"),
            "1",
            "not shared"
        );

        let plain = create_database(None);
        assert_eq!(
            query(
                &plain,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'"
            ),
            "0"
        );
    }
}
