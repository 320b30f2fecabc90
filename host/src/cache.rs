//! Compiled components, kept so each is compiled once.
//!
//! In memory, loaded tasks are keyed by code hash. On disk, compiled
//! artifacts are keyed by the code hash together with wasmtime's
//! compatibility hash of the engine (its version, target and every setting
//! that shapes compiled code), so a host with another wasmtime or another
//! configuration never picks up an artifact it cannot use. Writes go to a
//! temporary file renamed into place, so a crash leaves no half-written
//! artifact.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pipeweave_protocol::CodeHash;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::{Error, Result};
use crate::runner::LoadedTask;

/// Loaded tasks in memory and compiled artifacts on disk.
#[derive(Debug)]
pub(crate) struct ComponentCache {
    loaded: Mutex<HashMap<CodeHash, Arc<LoadedTask>>>,
    dir: Option<PathBuf>,
}

impl ComponentCache {
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        Self {
            loaded: Mutex::default(),
            dir,
        }
    }

    /// The task already loaded from these bytes, if any.
    pub(crate) fn loaded(&self, code_hash: &CodeHash) -> Option<Arc<LoadedTask>> {
        self.loaded.lock().ok()?.get(code_hash).cloned()
    }

    /// Keeps a loaded task; if another caller loaded the same code first,
    /// that one is kept and returned.
    pub(crate) fn insert(&self, code_hash: CodeHash, task: Arc<LoadedTask>) -> Arc<LoadedTask> {
        match self.loaded.lock() {
            Ok(mut loaded) => Arc::clone(loaded.entry(code_hash).or_insert(task)),
            Err(_) => task,
        }
    }

    /// The compiled component for `bytes`: from disk if a compatible
    /// artifact is there, otherwise compiled now (on a blocking thread) and
    /// written to disk.
    pub(crate) async fn compile(
        &self,
        engine: &Engine,
        code_hash: &CodeHash,
        bytes: Vec<u8>,
    ) -> Result<Component> {
        check_is_component(&bytes)?;
        let artifact = self
            .dir
            .as_ref()
            .map(|dir| dir.join(artifact_name(engine, code_hash)));
        let engine = engine.clone();
        let code_hash = code_hash.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(path) = &artifact
                && let Some(component) = read_artifact(&engine, path)
            {
                tracing::debug!(code_hash = %code_hash, path = %path.display(), "compiled component from cache");
                return Ok(component);
            }
            let started = std::time::Instant::now();
            let component = Component::new(&engine, &bytes).map_err(|e| Error::Compile(format!("{e:#}")))?;
            tracing::debug!(code_hash = %code_hash, elapsed = ?started.elapsed(), "compiled component");
            if let Some(path) = &artifact
                && let Err(e) = write_artifact(&component, path)
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled component");
            }
            Ok(component)
        })
        .await
        .map_err(|e| Error::Compile(format!("the compiler thread failed: {e}")))?
    }
}

/// Refuses bytes that are not a component, with a hint for the common
/// mistake of building a core module.
fn check_is_component(bytes: &[u8]) -> Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_VERSION: &[u8] = &[1, 0, 0, 0];
    match bytes.get(..8) {
        Some(header) if header.starts_with(MAGIC) && &header[4..] == CORE_VERSION => {
            Err(Error::Compile(
                "this is a core WebAssembly module, not a component: build the task with \
             `cargo build --target wasm32-wasip2` or `cargo component build`"
                    .into(),
            ))
        }
        Some(header) if header.starts_with(MAGIC) => Ok(()),
        _ => Err(Error::Compile(
            "the file does not start with the WebAssembly magic bytes".into(),
        )),
    }
}

/// `<code hash>-<engine compatibility hash>.cwasm`.
fn artifact_name(engine: &Engine, code_hash: &CodeHash) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{code_hash}-{:016x}.cwasm", hasher.finish())
}

#[allow(unsafe_code)]
fn read_artifact(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: wasmtime requires that the file was produced by
    // `Component::serialize` of a compatible engine and is not modified
    // while mapped. Only this cache writes into its directory, always
    // through a rename of a complete file, under a name that includes the
    // engine's compatibility hash; wasmtime also checks the header and
    // refuses an incompatible artifact, which we then recompile.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable cached component");
            None
        }
    }
}

fn write_artifact(component: &Component, path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("artifact path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
