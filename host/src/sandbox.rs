//! The per-attempt filesystem: an empty directory that the guest sees as
//! `/`, and nothing else.
//!
//! Creating a directory costs about 100 µs on ext4, several times the cost
//! of instantiating a small task, so directories come from a pool. A
//! directory goes back to the pool only if the attempt left it empty (most
//! attempts write nothing); otherwise it is removed and the next attempt
//! gets a new one. Either way every attempt starts in an empty directory
//! that no other attempt can see while it runs. All of them live under one
//! private base directory that is removed when the pool is dropped.
//!
//! Each pooled directory keeps an open handle, so checking that it is empty
//! is a rewind and one `getdents` call rather than a path lookup, an open,
//! a read and a close.
//!
//! Host-side access to a sandbox's files goes through [`cap_std`], rooted at
//! the sandbox, so a symlink the guest planted cannot lead the host outside.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::error::{Error, Result};

/// Where sandboxes are made, and the empty ones waiting for reuse.
#[derive(Debug)]
pub(crate) struct SandboxPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    base: tempfile::TempDir,
    next_id: AtomicU64,
    idle: Mutex<Vec<(PathBuf, Entries)>>,
    max_idle: usize,
}

impl SandboxPool {
    /// A pool whose directories live in a new private directory under
    /// `parent` (the system temp dir when `None`). At most `max_idle` empty
    /// directories are kept for reuse.
    pub(crate) fn new(parent: Option<&Path>, max_idle: usize) -> Result<Self> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let base = tempfile::Builder::new()
            .prefix("pipeweave-sandboxes-")
            .tempdir_in(&parent)
            .map_err(|source| Error::Sandbox {
                path: parent.clone(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(PoolInner {
                base,
                next_id: AtomicU64::new(0),
                idle: Mutex::new(Vec::new()),
                max_idle,
            }),
        })
    }

    /// An empty directory for one attempt.
    pub(crate) fn acquire(&self) -> Result<SandboxDir> {
        let reused = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
        let (path, entries) = match reused {
            Some(idle) => idle,
            None => {
                let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                let path = self.inner.base.path().join(format!("s{id}"));
                let sandbox_error = |source| Error::Sandbox {
                    path: self.inner.base.path().to_path_buf(),
                    source,
                };
                std::fs::create_dir(&path).map_err(sandbox_error)?;
                let entries = Entries::open(&path).map_err(sandbox_error)?;
                (path, entries)
            }
        };
        Ok(SandboxDir {
            path,
            entries: Some(entries),
            pool: Arc::clone(&self.inner),
        })
    }
}

/// One attempt's directory. Dropping it returns it to the pool if it is
/// empty and removes it otherwise.
#[derive(Debug)]
pub(crate) struct SandboxDir {
    path: PathBuf,
    entries: Option<Entries>,
    pool: Arc<PoolInner>,
}

/// An open handle on a sandbox directory, for listing it cheaply.
struct Entries(rustix::fs::Dir);

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Entries")
    }
}

impl Entries {
    fn open(path: &Path) -> std::io::Result<Self> {
        let handle = std::fs::File::open(path)?;
        Ok(Self(rustix::fs::Dir::new(handle)?))
    }

    /// Whether the directory has no entries besides `.` and `..`.
    fn is_empty(&mut self) -> bool {
        self.0.rewind();
        while let Some(entry) = self.0.read() {
            match entry {
                Ok(entry) if matches!(entry.file_name().to_bytes(), b"." | b"..") => {}
                _ => return false,
            }
        }
        true
    }
}

impl SandboxDir {
    /// The directory on the host.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A capability handle rooted at the directory: paths resolved through
    /// it cannot leave it, whatever symlinks the guest created.
    pub(crate) fn open(&self) -> std::io::Result<Dir> {
        Dir::open_ambient_dir(&self.path, ambient_authority())
    }
}

impl Drop for SandboxDir {
    fn drop(&mut self) {
        if let Some(mut entries) = self.entries.take()
            && entries.is_empty()
            && let Ok(mut idle) = self.pool.idle.lock()
            && idle.len() < self.pool.max_idle
        {
            idle.push((std::mem::take(&mut self.path), entries));
            return;
        }
        // A sandbox can hold gigabytes of assets: on a tokio runtime, remove
        // it on a blocking thread rather than stall the thread running tasks.
        let path = std::mem::take(&mut self.path);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || remove_sandbox(&path))),
            Err(_) => remove_sandbox(&path),
        }
    }
}

fn remove_sandbox(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a sandbox directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_directory_is_reused_and_a_used_one_is_removed() -> std::io::Result<()> {
        let pool = SandboxPool::new(None, 4).map_err(std::io::Error::other)?;
        let first = pool.acquire().map_err(std::io::Error::other)?;
        let first_path = first.path().to_path_buf();
        drop(first);
        let second = pool.acquire().map_err(std::io::Error::other)?;
        assert_eq!(second.path(), first_path, "an empty sandbox is reused");
        std::fs::write(second.path().join("left-behind"), b"x")?;
        drop(second);
        assert!(!first_path.exists(), "a sandbox with files is removed");
        let third = pool.acquire().map_err(std::io::Error::other)?;
        assert_ne!(third.path(), first_path);
        assert_eq!(
            std::fs::read_dir(third.path())?.count(),
            0,
            "every sandbox starts empty"
        );
        Ok(())
    }
}
