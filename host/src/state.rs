//! What one attempt's wasmtime store holds, and the host functions the guest
//! calls: WASI and wasi-http contexts, the outbound policy (with the
//! credentials the host adds), the memory limiter, the sandbox, secrets,
//! assets and the event sink.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cap_std::fs::Dir;
use pipeweave_protocol::{AssetKind, LogLevel, OutboundRule, OutboundRules};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::{runtime, types};
use crate::cancel::CancelToken;
use crate::events::{EventSink, LogBudget, RunEvent, emit_line};
use crate::sandbox::SandboxDir;
use crate::secrets::Redactor;

/// Why the host stopped a guest from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupt {
    Timeout,
    Cancelled,
}

/// Enforces a task's memory limit over all of its linear memories together
/// and remembers the peak.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    used: u64,
    pub(crate) peak: u64,
    /// Set when a growth was refused, so the trap that usually follows is
    /// reported as `memory_limit`.
    pub(crate) hit: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            used: 0,
            peak: 0,
            hit: false,
        }
    }
}

/// Table elements one instance may grow to; far above what compiled
/// languages need and enough for interpreters.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        if self.used.saturating_add(growth) > self.limit {
            self.hit = true;
            return Ok(false);
        }
        self.used += growth;
        self.peak = self.peak.max(self.used);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A header the host adds to the requests that one declared outbound host
/// entry matches: a task's [`pipeweave_protocol::Credential`] with its
/// secret's value filled in.
pub(crate) struct InjectedCredential {
    /// The declared entry the credential names.
    pub(crate) rule: OutboundRule,
    /// The header.
    pub(crate) name: http::HeaderName,
    /// Its value, marked sensitive so it is never printed.
    pub(crate) value: http::HeaderValue,
}

/// The outbound allow-list and the credentials the host adds, enforced in
/// the one place every `wasi:http` request passes through.
pub(crate) struct OutboundPolicy {
    rules: Arc<OutboundRules>,
    credentials: Vec<InjectedCredential>,
    redactor: Arc<Redactor>,
    /// `scheme://authority` of every request let through.
    pub(crate) contacted: Vec<String>,
    /// Every request refused, as the URI the guest asked for (redacted).
    pub(crate) denied: Vec<String>,
}

impl OutboundPolicy {
    pub(crate) fn new(
        rules: Arc<OutboundRules>,
        credentials: Vec<InjectedCredential>,
        redactor: Arc<Redactor>,
    ) -> Self {
        Self {
            rules,
            credentials,
            redactor,
            contacted: Vec::new(),
            denied: Vec::new(),
        }
    }
}

type SendRequestFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendRequestFuture {
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("");
        let host = uri.host().unwrap_or("");
        let port = uri.port_u16();
        if !self.rules.allows(scheme, host, port) {
            let shown = self.redactor.redact(&uri.to_string()).into_owned();
            tracing::warn!(uri = %shown, "outbound request denied: host not declared");
            self.denied.push(shown);
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // Each hop of a redirect is a new request here, so a credential
        // never follows a redirect to a host its entry does not match; a
        // header the guest set itself is left as it is.
        for credential in &self.credentials {
            if credential.rule.allows(scheme, host, port)
                && !request.headers().contains_key(&credential.name)
            {
                request
                    .headers_mut()
                    .insert(credential.name.clone(), credential.value.clone());
            }
        }
        let origin = match uri.authority() {
            Some(authority) => format!("{scheme}://{authority}"),
            None => uri.to_string(),
        };
        let origin = self.redactor.redact_string(origin);
        if !self.contacted.contains(&origin) {
            self.contacted.push(origin);
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// An asset the attempt registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRecord {
    /// Its key.
    pub key: String,
    /// How to read it.
    pub kind: AssetKind,
    /// Its size in bytes.
    pub size: u64,
}

/// Where assets live inside the sandbox.
pub(crate) const ASSETS_DIR: &str = "assets";
/// Where upstream assets are copied when the guest asks for them.
const UPSTREAM_ASSETS_DIR: &str = "upstream";

/// Everything one attempt's store holds.
pub(crate) struct TaskState {
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) outbound: OutboundPolicy,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) deadline: Instant,
    pub(crate) cancel: Option<CancelToken>,
    pub(crate) interrupt: Option<Interrupt>,
    pub(crate) panic_message: Option<String>,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) budget: Arc<LogBudget>,
    pub(crate) declared_secrets: Arc<[String]>,
    pub(crate) secrets: Arc<HashMap<String, String>>,
    pub(crate) sandbox: Option<SandboxDir>,
    sandbox_dir: Option<Dir>,
    pub(crate) upstream_assets: Arc<HashMap<String, PathBuf>>,
    pub(crate) assets: Vec<AssetRecord>,
}

/// The parts of [`TaskState`] that differ between attempts.
pub(crate) struct TaskStateParts {
    pub(crate) wasi: WasiCtx,
    pub(crate) rules: Arc<OutboundRules>,
    pub(crate) credentials: Vec<InjectedCredential>,
    pub(crate) redactor: Arc<Redactor>,
    pub(crate) memory_limit: u64,
    pub(crate) deadline: Instant,
    pub(crate) cancel: Option<CancelToken>,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) budget: Arc<LogBudget>,
    pub(crate) declared_secrets: Arc<[String]>,
    pub(crate) secrets: Arc<HashMap<String, String>>,
    pub(crate) sandbox: Option<SandboxDir>,
    pub(crate) upstream_assets: Arc<HashMap<String, PathBuf>>,
}

impl TaskState {
    pub(crate) fn new(parts: TaskStateParts) -> Self {
        Self {
            table: ResourceTable::new(),
            wasi: parts.wasi,
            http: WasiHttpCtx::new(),
            outbound: OutboundPolicy::new(parts.rules, parts.credentials, parts.redactor),
            limiter: MemoryLimiter::new(parts.memory_limit),
            deadline: parts.deadline,
            cancel: parts.cancel,
            interrupt: None,
            panic_message: None,
            sink: parts.sink,
            budget: parts.budget,
            declared_secrets: parts.declared_secrets,
            secrets: parts.secrets,
            sandbox: parts.sandbox,
            sandbox_dir: None,
            upstream_assets: parts.upstream_assets,
            assets: Vec::new(),
        }
    }

    /// Checks the deadline and the cancel token; called on every epoch tick.
    pub(crate) fn check_interrupt(&mut self) -> Option<Interrupt> {
        if self.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            self.interrupt = Some(Interrupt::Cancelled);
        } else if Instant::now() >= self.deadline {
            self.interrupt = Some(Interrupt::Timeout);
        }
        self.interrupt
    }

    /// The sandbox, opened through cap-std on first use.
    fn sandbox_dir(&mut self) -> Result<&Dir, String> {
        if self.sandbox_dir.is_none() {
            let sandbox = self.sandbox.as_ref().ok_or("this call has no sandbox")?;
            let dir = sandbox
                .open()
                .map_err(|e| format!("cannot open the sandbox: {e}"))?;
            self.sandbox_dir = Some(dir);
        }
        self.sandbox_dir
            .as_ref()
            .ok_or_else(|| "cannot open the sandbox".to_owned())
    }

    fn emit_log(&self, level: LogLevel, message: String) {
        let bytes = message.len() + 1;
        emit_line(
            self.sink.as_ref(),
            &self.budget,
            bytes,
            RunEvent::Log { level, message },
        );
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for TaskState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Whether `key` may name an asset: 1 to 128 letters, digits, `.`, `-` or
/// `_`, not starting with `.`.
pub(crate) fn is_valid_asset_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Turns a guest path (absolute from the sandbox root, or relative to it)
/// into a relative path with no `..`, or `None` if it cannot name a file
/// inside the sandbox.
fn sandbox_relative(path: &str) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => relative.push(part),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!relative.as_os_str().is_empty()).then_some(relative)
}

fn to_wit_level(level: types::LogLevel) -> LogLevel {
    match level {
        types::LogLevel::Trace => LogLevel::Trace,
        types::LogLevel::Debug => LogLevel::Debug,
        types::LogLevel::Info => LogLevel::Info,
        types::LogLevel::Warn => LogLevel::Warn,
        types::LogLevel::Error => LogLevel::Error,
    }
}

fn to_asset_kind(kind: types::AssetKind) -> AssetKind {
    match kind {
        types::AssetKind::Json => AssetKind::Json,
        types::AssetKind::Text => AssetKind::Text,
        types::AssetKind::Binary => AssetKind::Binary,
    }
}

impl types::Host for TaskState {}

impl runtime::Host for TaskState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        self.emit_log(to_wit_level(level), message);
    }

    fn progress(&mut self, percent: u8, message: Option<String>) {
        let bytes = message.as_ref().map_or(0, String::len) + 8;
        let percent = percent.min(100);
        emit_line(
            self.sink.as_ref(),
            &self.budget,
            bytes,
            RunEvent::Progress { percent, message },
        );
    }

    fn add_asset(
        &mut self,
        key: String,
        kind: types::AssetKind,
        path: String,
    ) -> Result<u64, types::AssetError> {
        use types::AssetError;
        if !is_valid_asset_key(&key) {
            return Err(AssetError::InvalidKey(format!(
                "{key:?}: use 1 to 128 letters, digits, '.', '-' or '_', not starting with '.'"
            )));
        }
        let from = sandbox_relative(&path).ok_or_else(|| {
            AssetError::InvalidPath(format!("{path:?} does not name a file inside the sandbox"))
        })?;
        let to = Path::new(ASSETS_DIR).join(&key);
        let dir = self.sandbox_dir().map_err(AssetError::Io)?;
        let metadata = dir
            .symlink_metadata(&from)
            .map_err(|e| AssetError::InvalidPath(format!("{path:?}: {e}")))?;
        if !metadata.is_file() {
            return Err(AssetError::InvalidPath(format!(
                "{path:?} is not a regular file"
            )));
        }
        if from != to {
            dir.create_dir_all(ASSETS_DIR)
                .and_then(|()| dir.rename(&from, dir, &to))
                .map_err(|e| {
                    AssetError::Io(format!("cannot move {path:?} to /{}: {e}", to.display()))
                })?;
        }
        let size = metadata.len();
        let record = AssetRecord {
            key: key.clone(),
            kind: to_asset_kind(kind),
            size,
        };
        match self.assets.iter_mut().find(|a| a.key == key) {
            Some(existing) => *existing = record,
            None => self.assets.push(record),
        }
        self.sink.event(RunEvent::Asset { key, size });
        Ok(size)
    }

    fn asset_path(&mut self, key: String) -> Result<String, types::AssetError> {
        use types::AssetError;
        if !is_valid_asset_key(&key) {
            return Err(AssetError::InvalidKey(format!(
                "{key:?} is not a valid asset key"
            )));
        }
        if self.assets.iter().any(|a| a.key == key) {
            return Ok(format!("/{ASSETS_DIR}/{key}"));
        }
        let Some(source) = self.upstream_assets.get(&key).cloned() else {
            return Err(AssetError::NotFound(key));
        };
        let guest_path = format!("/{UPSTREAM_ASSETS_DIR}/{key}");
        let target = Path::new(UPSTREAM_ASSETS_DIR).join(&key);
        let dir = self.sandbox_dir().map_err(AssetError::Io)?;
        if dir.symlink_metadata(&target).is_ok_and(|m| m.is_file()) {
            return Ok(guest_path);
        }
        let copy = || -> std::io::Result<()> {
            let mut from = std::fs::File::open(&source)?;
            dir.create_dir_all(UPSTREAM_ASSETS_DIR)?;
            let mut to = dir.create(&target)?;
            std::io::copy(&mut from, &mut to)?;
            Ok(())
        };
        copy()
            .map_err(|e| AssetError::Io(format!("cannot provide upstream asset {key:?}: {e}")))?;
        Ok(guest_path)
    }

    fn secret(&mut self, name: String) -> Result<String, types::SecretError> {
        if !self.declared_secrets.contains(&name) {
            return Err(types::SecretError::NotDeclared(name));
        }
        self.secrets
            .get(&name)
            .cloned()
            .ok_or(types::SecretError::NotSet(name))
    }

    fn report_panic(&mut self, message: String) {
        self.emit_log(LogLevel::Error, message.clone());
        self.panic_message = Some(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_stay_inside_the_sandbox() {
        assert_eq!(
            sandbox_relative("/assets/a.txt"),
            Some(PathBuf::from("assets/a.txt"))
        );
        assert_eq!(
            sandbox_relative("scratch.bin"),
            Some(PathBuf::from("scratch.bin"))
        );
        assert_eq!(sandbox_relative("./x/./y"), Some(PathBuf::from("x/y")));
        assert_eq!(sandbox_relative("/../etc/passwd"), None);
        assert_eq!(sandbox_relative("a/../../b"), None);
        assert_eq!(sandbox_relative("/"), None);
    }

    #[test]
    fn asset_keys_are_plain_names() {
        assert!(is_valid_asset_key("report-2024.pdf"));
        assert!(!is_valid_asset_key(".hidden"));
        assert!(!is_valid_asset_key("a/b"));
        assert!(!is_valid_asset_key(""));
        assert!(!is_valid_asset_key(&"k".repeat(129)));
    }

    #[test]
    fn memory_is_limited_across_all_memories_and_the_peak_is_kept() -> wasmtime::Result<()> {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None)?);
        assert!(limiter.memory_growing(0, 30, None)?);
        assert!(!limiter.memory_growing(60, 80, None)?);
        assert!(limiter.hit);
        assert_eq!(limiter.peak, 90);
        Ok(())
    }
}
