//! Child processes for end-to-end tests: servers that print
//! `listening on http://ADDR` on stdout once ready, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running server process; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, from its `listening on` line.
    pub url: String,
}

impl Server {
    /// Starts `command` and waits up to `patience` for its `listening on`
    /// line. Its stderr goes to the test's stderr.
    #[track_caller]
    pub fn start(command: Command, patience: Duration) -> Self {
        Self::start_until(command, patience, "listening on ")
    }

    /// Starts `command` and waits up to `patience` for a line of its
    /// stdout that contains `marker` followed by its URL (other servers
    /// say it their own way). Its stderr goes to the test's stderr.
    #[track_caller]
    pub fn start_until(mut command: Command, patience: Duration, marker: &'static str) -> Self {
        let description = format!("{command:?}");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("no stdout from {description}"));
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let url = line.find(marker).and_then(|at| {
                    line[at + marker.len()..]
                        .split(|c: char| c.is_whitespace() || c == '\u{1b}')
                        .next()
                });
                match url {
                    Some(url) if !sent => {
                        let _ = sender.send(url.replace("0.0.0.0", "127.0.0.1"));
                        sent = true;
                    }
                    _ => eprintln!("{line}"),
                }
            }
        });
        match receiver.recv_timeout(patience) {
            Ok(url) => Self { child, url },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!(
                    "{description} did not print `{marker}` and its URL within {patience:?} ({status})"
                );
            }
        }
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python example worker (`examples/python-worker/worker.py`).
pub fn python_worker_script() -> PathBuf {
    crate::workspace_root()
        .join("examples")
        .join("python-worker")
        .join("worker.py")
}

/// Starts the Python example worker against `orchestrator_url`, with
/// extra arguments.
#[track_caller]
pub fn python_worker(orchestrator_url: &str, extra: &[&str]) -> Server {
    // Once per process: tests start workers in parallel, apt-get must not.
    static PYTHON: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let ready = PYTHON.get_or_init(|| {
        let has_python = Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if has_python {
            Ok(())
        } else {
            pipeweave_orchestrator::embedded_postgres::install_debian_package("python3")
        }
    });
    if let Err(why) = ready {
        panic!("the end-to-end tests need python3: {why}");
    }
    python_worker_on(Path::new("python3"), orchestrator_url, extra)
}

/// Starts the Python example worker with the interpreter `python` (a
/// virtual environment's, for the tasks that need packages).
#[track_caller]
pub fn python_worker_on(python: &Path, orchestrator_url: &str, extra: &[&str]) -> Server {
    let mut command = Command::new(python);
    command
        .arg("-u")
        .arg(python_worker_script())
        .args(["--orchestrator", orchestrator_url, "--port", "0"])
        .args(extra);
    Server::start(command, Duration::from_secs(40))
}
