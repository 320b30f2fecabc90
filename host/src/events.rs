//! What a running attempt reports as it goes: log lines (its own and its
//! stdout/stderr), progress and assets. The local runner prints them; the
//! dispatch server forwards them to the orchestrator. Secret values the
//! attempt was handed are redacted before any sink sees an event.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use pipeweave_protocol::LogLevel;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::secrets::Redactor;

/// Which standard stream a captured line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdStream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

/// One thing an attempt reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// A line from `runtime.log`.
    Log {
        /// Its level.
        level: LogLevel,
        /// The text.
        message: String,
    },
    /// A line the guest wrote to stdout or stderr.
    Output {
        /// Which stream.
        stream: StdStream,
        /// The line, without its newline.
        line: String,
    },
    /// A call to `runtime.progress`.
    Progress {
        /// 0 to 100.
        percent: u8,
        /// What the task is doing.
        message: Option<String>,
    },
    /// An asset was registered.
    Asset {
        /// Its key.
        key: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The attempt's log budget ran out; later lines are dropped.
    LogTruncated {
        /// The budget, in bytes.
        limit_bytes: usize,
    },
}

/// Receives an attempt's events as they happen. Called from the thread
/// running the guest, so it should return quickly.
pub trait EventSink: Send + Sync {
    /// Handles one event.
    fn event(&self, event: RunEvent);
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardEvents;

impl EventSink for DiscardEvents {
    fn event(&self, _event: RunEvent) {}
}

/// Passes events on with every secret value replaced (see
/// [`crate::secrets`]): log lines, output lines and progress messages. The
/// runner puts it in front of the request's sink whenever the attempt was
/// handed a secret, so no sink ever sees a value.
pub(crate) struct RedactingSink {
    inner: Arc<dyn EventSink>,
    redactor: Arc<Redactor>,
}

impl RedactingSink {
    pub(crate) fn new(inner: Arc<dyn EventSink>, redactor: Arc<Redactor>) -> Self {
        Self { inner, redactor }
    }
}

impl EventSink for RedactingSink {
    fn event(&self, event: RunEvent) {
        let redact = |text: String| self.redactor.redact_string(text);
        let event = match event {
            RunEvent::Log { level, message } => RunEvent::Log {
                level,
                message: redact(message),
            },
            RunEvent::Output { stream, line } => RunEvent::Output {
                stream,
                line: redact(line),
            },
            RunEvent::Progress { percent, message } => RunEvent::Progress {
                percent,
                message: message.map(redact),
            },
            other @ (RunEvent::Asset { .. } | RunEvent::LogTruncated { .. }) => other,
        };
        self.inner.event(event);
    }
}

/// How many bytes of log an attempt may still write, shared by its log
/// calls and both standard streams.
#[derive(Debug)]
pub(crate) struct LogBudget {
    remaining: AtomicUsize,
    exhausted_reported: AtomicBool,
    limit: usize,
}

impl LogBudget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            remaining: AtomicUsize::new(limit),
            exhausted_reported: AtomicBool::new(false),
            limit,
        }
    }

    /// Takes `bytes` from the budget. When they do not fit, returns
    /// `Err(true)` the first time (so the caller reports it once) and
    /// `Err(false)` afterwards.
    pub(crate) fn take(&self, bytes: usize) -> Result<(), bool> {
        if self.exhausted_reported.load(Ordering::Relaxed) {
            return Err(false);
        }
        let fits = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok();
        if fits {
            Ok(())
        } else {
            Err(!self.exhausted_reported.swap(true, Ordering::Relaxed))
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

/// Sends a log-shaped event if the budget allows it.
pub(crate) fn emit_line(sink: &dyn EventSink, budget: &LogBudget, bytes: usize, event: RunEvent) {
    match budget.take(bytes) {
        Ok(()) => sink.event(event),
        Err(true) => sink.event(RunEvent::LogTruncated {
            limit_bytes: budget.limit(),
        }),
        Err(false) => {}
    }
}

/// A guest's stdout or stderr: bytes are split into lines and each line
/// becomes a [`RunEvent::Output`]. Writes never fail, so a chatty guest
/// cannot crash on a full pipe; past the log budget lines are dropped.
#[derive(Clone)]
pub(crate) struct CapturedStream {
    stream: StdStream,
    sink: Arc<dyn EventSink>,
    budget: Arc<LogBudget>,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl std::fmt::Debug for CapturedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturedStream")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl CapturedStream {
    pub(crate) fn new(stream: StdStream, sink: Arc<dyn EventSink>, budget: Arc<LogBudget>) -> Self {
        Self {
            stream,
            sink,
            budget,
            partial: Arc::default(),
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_owned();
        let bytes = line.len() + 1;
        emit_line(
            self.sink.as_ref(),
            &self.budget,
            bytes,
            RunEvent::Output {
                stream: self.stream,
                line,
            },
        );
    }

    fn push(&self, bytes: &[u8]) {
        let Ok(mut partial) = self.partial.lock() else {
            return;
        };
        partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = partial[start..].iter().position(|&b| b == b'\n') {
            self.emit(&partial[start..start + pos]);
            start += pos + 1;
        }
        partial.drain(..start);
        // A line longer than the whole budget would never be emitted whole.
        if partial.len() > self.budget.limit() {
            let long = std::mem::take(&mut *partial);
            self.emit(&long);
        }
    }

    /// Emits a last line that had no newline.
    pub(crate) fn flush_partial(&self) {
        let rest = self
            .partial
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        if !rest.is_empty() {
            self.emit(&rest);
        }
    }
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Always ready: a write is handled synchronously, so a guest printing in a
/// loop never waits on the host.
#[async_trait::async_trait]
impl Pollable for CapturedStream {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl AsyncWrite for CapturedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<RunEvent>>);
    impl EventSink for Collect {
        fn event(&self, event: RunEvent) {
            if let Ok(mut events) = self.0.lock() {
                events.push(event);
            }
        }
    }

    #[test]
    fn output_is_split_into_lines_and_cut_at_the_budget() {
        let sink = Arc::new(Collect::default());
        let stream = CapturedStream::new(
            StdStream::Stdout,
            sink.clone(),
            Arc::new(LogBudget::new(12)),
        );
        stream.push(b"one\ntw");
        stream.push(b"o\nthree\nfour\n");
        stream.flush_partial();
        let events = sink.0.lock().map(|e| e.clone()).unwrap_or_default();
        let line = |s: &str| RunEvent::Output {
            stream: StdStream::Stdout,
            line: s.into(),
        };
        assert_eq!(
            events,
            vec![
                line("one"),
                line("two"),
                RunEvent::LogTruncated { limit_bytes: 12 }
            ]
        );
    }
}
