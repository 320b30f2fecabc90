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

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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
    let bin = find_bindir()?;
    let psql = bin.join("psql");
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("pipeweave-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if root {
        let (uid, gid) = postgres_ids()?;
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to the postgres user: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    let as_postgres = |program: &Path| {
        if root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    };

    let initdb = as_postgres(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !initdb.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        ));
    }

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))?
        .port();
    // The watchdog: start postgres, wait while the test process lives, then
    // stop postgres and remove the cluster.
    let script = format!(
        "{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
         >{dir}/postgres.log 2>&1 & pg=$!; \
         while [ -d /proc/{test_pid} ] && kill -0 $pg 2>/dev/null; do sleep 0.5; done; \
         kill -INT $pg 2>/dev/null; wait $pg; rm -rf {dir}",
        postgres = bin.join("postgres").display(),
        data = data.display(),
        dir = dir.display(),
        test_pid = std::process::id(),
    );
    as_postgres(Path::new("/bin/sh"))
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start postgres: {e}"))?;

    let server = Server {
        base_url: format!("postgres://postgres@127.0.0.1:{port}"),
        admin_database: "postgres".into(),
        psql,
    };
    wait_until_ready(&bin, port, &dir)?;
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

fn wait_until_ready(bin: &Path, port: u16, dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            return Err(format!("postgres did not start within 30 s:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directory with `initdb`, `postgres`, `pg_isready` and `psql`:
/// `PG_BINDIR`, else the newest `/usr/lib/postgresql/<version>/bin`.
fn find_bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "no PostgreSQL server binaries found: install Debian's `postgresql` package \
         (apt-get install postgresql), set PG_BINDIR to the folder with initdb and postgres, \
         or set DATABASE_URL to a server the tests may create databases on"
            .to_owned()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn postgres_ids() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                "no `postgres` user: install Debian's `postgresql` package, which creates it"
                    .to_owned()
            })
    };
    Ok((id("-u")?, id("-g")?))
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
