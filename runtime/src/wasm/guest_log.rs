//! Guest stdout and stderr go to the runtime's log under the subscriber's
//! name, or — when a handler runs on one local message — to a
//! [`Transcript`] the caller reads. What a guest writes during one call (a Python traceback, a Rust
//! panic message) becomes one log event, not one per line; a long call's
//! output is logged at its first yield a second after it was written. Output past a per-message budget is dropped (never a
//! trap); the last stderr lines are kept to explain a trap or panic.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of output one message may log.
const BUDGET: usize = 64 * 1024;
/// What a line costs on top of its text: about the timestamp, level and
/// fields of its log record, so a flood of empty lines reaches the log as
/// about a thousand records, not sixty-five thousand.
const LINE_COST: usize = 64;
/// Longest logged line; the rest is cut.
const MAX_LINE: usize = 4096;
/// Bytes of stderr kept for failure reports.
const TAIL: usize = 2048;

/// Output collected from one store.
pub struct GuestOutput {
    subscriber: Arc<str>,
    secrets: Arc<crate::config::secrets::Secrets>,
    budget: AtomicUsize,
    stderr_tail: Mutex<String>,
    /// Lines written since the last [`flush`](GuestOutput::flush): stdout's,
    /// stderr's, and when the first of them was written.
    pending: Mutex<Pending>,
    /// Where the lines go instead of the log, when set.
    transcript: Option<Arc<Transcript>>,
}

/// One line a guest wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLine {
    /// Written to stderr (else stdout).
    pub stderr: bool,
    /// The line, without its line break, secrets masked.
    pub text: String,
}

/// The lines a guest wrote, in order, kept for the caller instead of logged.
#[derive(Debug, Default)]
pub struct Transcript(Mutex<Vec<GuestLine>>);

impl Transcript {
    /// Takes the lines written so far.
    pub fn take(&self) -> Vec<GuestLine> {
        std::mem::take(&mut *self.0.lock().expect("transcript lock"))
    }
}

#[derive(Default)]
struct Pending {
    lines: [Vec<String>; 2],
    since: Option<std::time::Instant>,
}

impl GuestOutput {
    /// Output for a store of `subscriber`, with its `secrets` masked,
    /// logged or kept in `transcript`.
    pub fn new(
        subscriber: Arc<str>,
        secrets: Arc<crate::config::secrets::Secrets>,
        transcript: Option<Arc<Transcript>>,
    ) -> Arc<Self> {
        Arc::new(GuestOutput {
            subscriber,
            secrets,
            budget: AtomicUsize::new(BUDGET),
            stderr_tail: Mutex::new(String::new()),
            pending: Mutex::new(Pending::default()),
            transcript,
        })
    }

    /// Starts a new message: a full budget and an empty stderr tail.
    pub fn reset(&self) {
        self.budget.store(BUDGET, Ordering::Relaxed);
        if let Ok(mut tail) = self.stderr_tail.lock() {
            tail.clear();
        }
    }

    /// The last lines the guest wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|t| t.trim_end().to_string())
            .unwrap_or_default()
    }

    fn emit(&self, stderr: bool, line: &[u8]) {
        let line = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
        let line = line.trim_end_matches(['\r', '\n']);
        let masked;
        let line = if self.secrets.is_empty() {
            line
        } else {
            masked = self.secrets.mask(line);
            masked.as_str()
        };
        let cost = line.len() + LINE_COST;
        let left = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_sub(cost.min(b))
            });
        match left {
            Ok(b) if b >= cost => {}
            Ok(b) if b > 0 => {
                tracing::warn!(subscriber = %self.subscriber, "guest output beyond {BUDGET} bytes for this message is dropped");
            }
            _ => return,
        }
        if let Some(transcript) = &self.transcript {
            // Kept in the order written, stdout and stderr interleaved.
            transcript
                .0
                .lock()
                .expect("transcript lock")
                .push(GuestLine {
                    stderr,
                    text: line.to_string(),
                });
        } else if let Ok(mut pending) = self.pending.lock() {
            pending.lines[usize::from(stderr)].push(line.to_string());
            pending.since.get_or_insert_with(std::time::Instant::now);
        }
        if stderr {
            if let Ok(mut tail) = self.stderr_tail.lock() {
                tail.push_str(line);
                tail.push('\n');
                if tail.len() > TAIL {
                    let cut = tail.len() - TAIL;
                    let cut = (cut..tail.len())
                        .find(|i| tail.is_char_boundary(*i))
                        .unwrap_or(0);
                    tail.drain(..cut);
                }
            }
        }
    }

    /// Logs what the guest wrote since the last flush when the first of it
    /// is older than `age`: a running guest's output waits a little, so a
    /// traceback it prints across one of its yields stays one event.
    pub fn flush_older_than(&self, age: std::time::Duration) {
        let due = self
            .pending
            .lock()
            .is_ok_and(|p| p.since.is_some_and(|t| t.elapsed() >= age));
        if due {
            self.flush();
        }
    }

    /// Logs what the guest wrote since the last flush: one event for its
    /// stdout lines, one for its stderr lines.
    pub fn flush(&self) {
        let [out, err] = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending).lines,
            Err(_) => return,
        };
        if !out.is_empty() {
            tracing::info!(target: "guest", subscriber = %self.subscriber, "{}", out.join("\n"));
        }
        if !err.is_empty() {
            tracing::warn!(target: "guest", subscriber = %self.subscriber, "{}", err.join("\n"));
        }
    }
}

impl Drop for GuestOutput {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A guest's stdout or stderr.
#[derive(Clone)]
pub struct GuestLog {
    output: Arc<GuestOutput>,
    stderr: bool,
}

impl GuestLog {
    /// The guest's stdout.
    pub fn stdout(output: &Arc<GuestOutput>) -> Self {
        GuestLog {
            output: output.clone(),
            stderr: false,
        }
    }

    /// The guest's stderr.
    pub fn stderr(output: &Arc<GuestOutput>) -> Self {
        GuestLog {
            output: output.clone(),
            stderr: true,
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.clone(),
            line: Vec::new(),
        })
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            log: self.clone(),
            line: Vec::new(),
        })
    }
}

/// Splits writes into lines.
struct LineWriter {
    log: GuestLog,
    line: Vec<u8>,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = bytes.iter().position(|b| *b == b'\n') {
            self.line.extend_from_slice(&bytes[..nl]);
            self.log.output.emit(self.log.stderr, &self.line);
            self.line.clear();
            bytes = &bytes[nl + 1..];
        }
        if self.line.len() < MAX_LINE {
            self.line
                .extend_from_slice(&bytes[..bytes.len().min(MAX_LINE - self.line.len())]);
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.log.output.emit(self.log.stderr, &self.line);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().push(buf);
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

    #[test]
    fn empty_lines_use_up_the_budget_too() {
        let out = GuestOutput::new("kit".into(), Default::default(), None);
        for _ in 0..BUDGET / LINE_COST {
            out.emit(false, b"\n");
        }
        assert_eq!(out.budget.load(Ordering::Relaxed), 0);
        out.reset();
        out.emit(false, b"twelve bytes\n");
        assert_eq!(out.budget.load(Ordering::Relaxed), BUDGET - 12 - LINE_COST);
    }
}
