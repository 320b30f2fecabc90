//! Child processes for end-to-end tests and benchmarks: servers that
//! print `listening on http://ADDR` on stdout once ready, killed when
//! dropped, and what they cost in memory ([`Memory`], from `/proc`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A running server process; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, from its `listening on` line.
    pub url: String,
    /// Its stderr lines so far, when started with [`Server::start_keeping_stderr`].
    stderr: Option<Arc<Mutex<Vec<String>>>>,
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
    pub fn start_until(command: Command, patience: Duration, marker: &'static str) -> Self {
        Self::spawn(command, patience, marker, false)
    }

    /// Starts `command` like [`Server::start`], and also keeps the lines
    /// of its stderr (still echoed to ours), for a test or benchmark that
    /// reads the server's own log: see [`Server::stderr_lines`].
    #[track_caller]
    pub fn start_keeping_stderr(command: Command, patience: Duration) -> Self {
        Self::spawn(command, patience, "listening on ", true)
    }

    #[track_caller]
    fn spawn(
        mut command: Command,
        patience: Duration,
        marker: &'static str,
        keep_stderr: bool,
    ) -> Self {
        let description = format!("{command:?}");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(if keep_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
        let stderr = child.stderr.take().map(|pipe| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let kept = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("{line}");
                    if let Ok(mut kept) = kept.lock() {
                        kept.push(line);
                    }
                }
            });
            lines
        });
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
            Ok(url) => Self { child, url, stderr },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                panic!(
                    "{description} did not print `{marker}` and its URL within {patience:?} ({status})"
                );
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines it has written to stderr so far; empty unless it was
    /// started with [`Server::start_keeping_stderr`].
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .as_ref()
            .and_then(|lines| lines.lock().ok().map(|lines| lines.clone()))
            .unwrap_or_default()
    }

    /// Its resident memory now and at its peak.
    pub fn memory(&self) -> std::io::Result<Memory> {
        Memory::of(self.pid())
    }

    /// Sends SIGTERM, as a service manager stopping it would, and waits up
    /// to `patience` for it to exit; `None` if it has not.
    pub fn terminate(&mut self, patience: Duration) -> std::io::Result<Option<ExitStatus>> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
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

/// The value of `name=value` in a log line in `tracing`'s default format
/// (`… dehydrated run_id=trun_… bytes=1024 elapsed_ms=12`), for reading a
/// server's own figures from its log.
pub fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

/// A process's resident memory, from `/proc/{pid}/status` (Linux only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident now (`VmRSS`), in bytes.
    pub rss: u64,
    /// The most it has been resident (`VmHWM`), in bytes: since it started,
    /// or since the last [`Memory::reset_peak`].
    pub peak: u64,
}

impl Memory {
    /// Reads the memory of process `pid`.
    pub fn of(pid: u32) -> std::io::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|kib| kib.trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("no {name} in /proc/{pid}/status"),
                    )
                })
        };
        Ok(Self {
            rss: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }

    /// Sets process `pid`'s peak (`VmHWM`) back to what is resident now, so
    /// the next reading shows the peak of what happens in between (writes
    /// `5` to `/proc/{pid}/clear_refs`; Linux 4.0 or later, and only for a
    /// process this user may trace, such as its own children).
    pub fn reset_peak(pid: u32) -> std::io::Result<()> {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
    }
}

/// CPU time a process has used, from `/proc/{pid}/stat` (Linux only), in
/// the kernel's clock ticks of 10 ms (`USER_HZ`, 100 on the architectures
/// this project builds for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// User and system time of the process itself.
    pub own_ticks: u64,
    /// User and system time of its children that it has waited for.
    pub reaped_children_ticks: u64,
}

/// Milliseconds per [`CpuTime`] tick.
pub const CPU_TICK_MS: f64 = 10.0;

impl CpuTime {
    /// Reads the CPU time of process `pid`.
    pub fn of(pid: u32) -> std::io::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Self::parse(&stat).map(|(_, cpu)| cpu).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unexpected /proc/{pid}/stat: {stat}"),
            )
        })
    }

    /// The CPU time, in ticks, of process `pid` and every process it
    /// started, living or ended, as far as it has waited for them: its
    /// own, its reaped children's and its living children's (one level
    /// down, as a PostgreSQL postmaster's backends are).
    pub fn of_family(pid: u32) -> std::io::Result<u64> {
        let ticks = |cpu: Self| cpu.own_ticks + cpu.reaped_children_ticks;
        let mut total = ticks(Self::of(pid)?);
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(other) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A process may end between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{other}/stat")) else {
                continue;
            };
            if let Some((parent, cpu)) = Self::parse(&stat)
                && parent == pid
            {
                total += ticks(cpu);
            }
        }
        Ok(total)
    }

    /// The parent's pid and the CPU time in a `/proc/{pid}/stat` line.
    fn parse(stat: &str) -> Option<(u32, Self)> {
        // The command name, in parentheses, may hold spaces: the fields
        // after its closing parenthesis start with field 3 (the state), so
        // field n of proc(5) is `fields[n - 3]`: the parent is field 4,
        // utime, stime, cutime and cstime are fields 14 to 17.
        let (_, after_name) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let number = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
        let parent = fields.get(1)?.parse().ok()?;
        Some((
            parent,
            Self {
                own_ticks: number(14)? + number(15)?,
                reaped_children_ticks: number(16)? + number(17)?,
            },
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_a_family_includes_its_parent() {
        let pid = std::process::id();
        let before = CpuTime::of(pid).expect("this process's CPU time");
        // Work until 100 ms of CPU time show (10 ticks); a loaded machine
        // takes longer, so the patience is in wall-clock time.
        let started = std::time::Instant::now();
        let mut spin = 0_u64;
        let after = loop {
            for _ in 0..1_000_000 {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
            let now = CpuTime::of(pid).expect("this process's CPU time");
            if now.own_ticks >= before.own_ticks + 10 {
                break now;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{before:?} → {now:?} after 30 s of work"
            );
        };
        let family = CpuTime::of_family(pid).expect("this process's family");
        assert!(family >= after.own_ticks, "{family} < {after:?}");
        assert!(CpuTime::of(u32::MAX).is_err(), "no such process");
    }
}
