//! A private PostgreSQL cluster started from the system's server binaries,
//! for the zero-configuration quick start (`pipeweave dev`), the test
//! suites and the benchmarks.
//!
//! The cluster lives in a fresh directory, or in a kept one
//! ([`Options::keep_in`], for `pipeweave dev`'s project-local database that
//! outlives restarts), listens on a free port on 127.0.0.1 only, and trusts
//! local connections as user `postgres`. When this process runs as root it
//! runs the server as the `postgres` user that Debian's package creates,
//! since `initdb` and `postgres` refuse root. A small shell watchdog stops
//! the server (and removes a fresh directory) once this process is gone,
//! however it ended (even by SIGKILL); [`stop`] does the same at once.
//!
//! [`stop`]: EmbeddedPostgres::stop

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How to run the cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Keep PostgreSQL's durability defaults (`fsync`, `synchronous_commit`,
    /// `full_page_writes` on). Tests turn them off for speed; benchmarks
    /// keep them so figures mean what they would in production.
    pub durable: bool,
    /// `max_connections`.
    pub max_connections: u32,
    /// Where to create the cluster's directory (default: the system's
    /// temporary directory).
    pub parent_dir: Option<PathBuf>,
    /// Keep the cluster in this directory instead of a fresh one: reuse the
    /// cluster it holds (`initdb` only the first time) and leave it in
    /// place when stopped. `parent_dir` is then ignored.
    pub keep_in: Option<PathBuf>,
    /// More server settings, each passed as `-c name=value` (the benchmark
    /// loads `pg_stat_statements` this way to show where time goes).
    pub settings: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            durable: true,
            max_connections: 100,
            parent_dir: None,
            keep_in: None,
            settings: Vec::new(),
        }
    }
}

/// The cluster could not be started.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot start a private PostgreSQL: {0}")]
pub struct EmbeddedError(String);

/// A running private cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    kept: bool,
    stopped: bool,
}

impl EmbeddedPostgres {
    /// Creates and starts a cluster.
    pub fn start(options: &Options) -> Result<Self, EmbeddedError> {
        let fail = |message: String| EmbeddedError(message);
        let bin = find_bindir().map_err(fail)?;
        let root = is_root();
        let kept = options.keep_in.is_some();
        let dir = match &options.keep_in {
            Some(dir) => dir.clone(),
            None => {
                let parent = options
                    .parent_dir
                    .clone()
                    .unwrap_or_else(std::env::temp_dir);
                let dir = parent.join(format!("pipeweave-pg-{}-{}", std::process::id(), unique()));
                let _ = std::fs::remove_dir_all(&dir);
                dir
            }
        };
        prepare_dir(&dir, root).map_err(fail)?;
        let data = dir.join("data");
        if kept && let Some(pid) = running_postmaster(&data) {
            return Err(fail(format!(
                "the database in {} is in use by another process (postgres pid {pid}); \
                 stop the other `pipeweave dev` first",
                dir.display()
            )));
        }
        if !data.join("PG_VERSION").is_file() {
            let _ = std::fs::remove_dir_all(&data);
            let initdb = as_postgres(root, &bin.join("initdb"))
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
                .map_err(|e| fail(format!("cannot run initdb: {e}")))?;
            if !initdb.status.success() {
                return Err(fail(format!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&initdb.stderr)
                )));
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| fail(format!("cannot find a free port: {e}")))?
            .port();
        let durability = if options.durable {
            ""
        } else {
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        // The watchdog: start postgres, wait while the owner lives, then
        // stop postgres and remove a fresh cluster. A kept one listens on
        // TCP only: a project path can be longer than a socket path may be.
        let (sockets, cleanup) = if kept {
            ("-c unix_socket_directories=".to_owned(), String::new())
        } else {
            (
                format!("-k {}", dir.display()),
                format!("rm -rf {}", dir.display()),
            )
        };
        let script = format!(
            "{postgres} -D {data} -p {port} {sockets} -c listen_addresses=127.0.0.1 \
             -c max_connections={max_connections} {durability} {settings} >{dir}/postgres.log 2>&1 & pg=$!; \
             while [ -d /proc/{owner} ] && kill -0 $pg 2>/dev/null; do sleep 0.2; done; \
             kill -INT $pg 2>/dev/null; wait $pg; {cleanup}",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
            max_connections = options.max_connections,
            settings = options
                .settings
                .iter()
                .map(|(name, value)| format!("-c {}", shell_quoted(&format!("{name}={value}"))))
                .collect::<Vec<_>>()
                .join(" "),
            owner = std::process::id(),
        );
        as_postgres(root, Path::new("/bin/sh"))
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| fail(format!("cannot start postgres: {e}")))?;
        let cluster = Self {
            bin,
            dir,
            port,
            kept,
            stopped: false,
        };
        cluster.wait_until_ready().map_err(fail)?;
        Ok(cluster)
    }

    /// `postgres://postgres@127.0.0.1:PORT`, without a database name.
    pub fn base_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url())
    }

    /// The folder with the server's binaries (`psql`, `pgbench` …).
    pub fn bindir(&self) -> &Path {
        &self.bin
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id, while it runs; its backends are its
    /// children.
    pub fn postmaster_pid(&self) -> Option<u32> {
        running_postmaster(&self.dir.join("data"))
    }

    /// Stops the server now and removes its directory; waits up to 30 s.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = as_postgres(is_root(), &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The watchdog removes a fresh directory once the server is gone;
        // a kept one is done when the server has removed its pid file.
        let done = if self.kept {
            self.dir.join("data").join("postmaster.pid")
        } else {
            self.dir.clone()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_until_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                return Err(format!("postgres did not start within 30 s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Whether a cluster can be kept in `dir`: it is created if missing and,
/// when this process is root, given to the `postgres` user, who must be
/// able to write there (a parent folder such as `/root` can be closed to
/// it). `pipeweave dev` asks before it chooses where to keep its database.
pub fn can_keep_in(dir: &Path) -> bool {
    prepare_dir(dir, is_root()).is_ok()
}

/// Creates `dir` and, as root, gives it to the `postgres` user and checks
/// that the server will be able to write there.
fn prepare_dir(dir: &Path, root: bool) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !root {
        return Ok(());
    }
    let (uid, gid) = postgres_ids()?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("cannot give {} to the postgres user: {e}", dir.display()))?;
    let writable = as_postgres(root, Path::new("test"))
        .arg("-w")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !writable {
        return Err(format!(
            "the postgres user cannot write to {}: a parent folder is closed to it (such as /root)",
            dir.display()
        ));
    }
    Ok(())
}

/// The pid of a live server that holds the cluster in `data`, from its
/// `postmaster.pid` (a stale file left by a crash names no live process).
fn running_postmaster(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn unique() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn as_postgres(root: bool, program: &Path) -> Command {
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The directory with `initdb`, `postgres`, `pg_isready` and `psql`:
/// `PG_BINDIR`, else the newest `/usr/lib/postgresql/<version>/bin`. On a
/// fresh Debian machine, running as root, it installs the `postgresql`
/// package first (set `PIPEWEAVE_NO_AUTO_INSTALL` to forbid that).
pub fn find_bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    installed_bindir().or_else(|missing| {
        install_debian_package("postgresql").map_err(|why| format!("{missing} ({why})"))?;
        installed_bindir()
    })
}

/// Installs a Debian package with apt-get, when this process is root on a
/// machine with apt-get and `PIPEWEAVE_NO_AUTO_INSTALL` is unset; so the
/// quick start and the tests work on a fresh machine.
pub fn install_debian_package(package: &str) -> Result<(), String> {
    if std::env::var_os("PIPEWEAVE_NO_AUTO_INSTALL").is_some() {
        return Err("PIPEWEAVE_NO_AUTO_INSTALL is set".into());
    }
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        return Err(format!("install it with: sudo apt-get install {package}"));
    }
    eprintln!(
        "installing the Debian package {package} (apt-get; set PIPEWEAVE_NO_AUTO_INSTALL to prevent this)…"
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))
            .and_then(|s| {
                if s.success() {
                    Ok(())
                } else {
                    Err(format!("apt-get {} failed", args.join(" ")))
                }
            })
    };
    apt(&["update", "-qq"])?;
    apt(&["install", "-y", "-qq", package])
}

fn installed_bindir() -> Result<PathBuf, String> {
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
         or set DATABASE_URL to a server to use instead"
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

/// `text` as one single-quoted `sh` word.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
