//! The exporter: finished spans wait in a bounded queue (full, a span is
//! dropped, never a message held up) for a thread of its own, which sends
//! them in batches, as OTLP/HTTP protobuf, when a batch is full or the
//! schedule delay has passed. Encoding and sending are off the message
//! path: the handlers' threads only queue.

use super::otlp::Encoder;
use super::settings::Settings;
use super::TracesError;
use crate::error::ErrorChain;
use crate::message::trace::span::{Span, SpanSink};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The queue the message path records spans into. The exporter's thread
/// is woken only when a batch is full (or at shutdown), not per span.
pub struct Queue {
    waiting: Mutex<Waiting>,
    batch_full: Condvar,
    max_queue: usize,
    max_batch: usize,
    dropped: AtomicU64,
}

struct Waiting {
    spans: Vec<Span>,
    stopping: bool,
}

impl SpanSink for Queue {
    fn record(&self, span: Span) {
        let mut waiting = self.waiting.lock().expect("span queue lock");
        if waiting.spans.len() >= self.max_queue || waiting.stopping {
            drop(waiting);
            if self.dropped.fetch_add(1, Relaxed) == 0 {
                tracing::warn!(
                    "spans are made faster than the collector takes them: the queue is full, further spans are dropped (their count is logged at shutdown)"
                );
            }
            return;
        }
        waiting.spans.push(span);
        if waiting.spans.len() == self.max_batch {
            self.batch_full.notify_one();
        }
    }
}

impl Queue {
    /// Moves a batch of the spans waiting into `taken` (empty, as large
    /// as the queue), once a batch is full or `delay` has passed; all of
    /// them when the exporter stops. Whether it stops.
    fn take(&self, delay: Duration, taken: &mut Vec<Span>) -> bool {
        let deadline = Instant::now() + delay;
        let mut waiting = self.waiting.lock().expect("span queue lock");
        while waiting.spans.len() < self.max_batch && !waiting.stopping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            waiting = (self.batch_full.wait_timeout(waiting, left))
                .expect("span queue lock")
                .0;
        }
        // The two buffers trade places, so neither grows nor is allocated
        // again under the lock. Behind on its work, the exporter takes one
        // batch and leaves the rest for the next request.
        if waiting.spans.len() > self.max_batch && !waiting.stopping {
            taken.extend(waiting.spans.drain(..self.max_batch));
        } else {
            std::mem::swap(&mut waiting.spans, taken);
        }
        waiting.stopping
    }
}

/// The running exporter.
pub struct Exporter {
    queue: Arc<Queue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Starts the exporter's thread for `settings`.
    pub fn start(settings: Settings) -> Result<Exporter, TracesError> {
        let queue = Arc::new(Queue {
            waiting: Mutex::new(Waiting {
                spans: Vec::with_capacity(settings.max_queue),
                stopping: false,
            }),
            batch_full: Condvar::new(),
            max_queue: settings.max_queue,
            max_batch: settings.max_batch,
            dropped: AtomicU64::new(0),
        });
        let (built, client) = mpsc::channel();
        // reqwest's TLS (shared in this build with the OCI client's) leaves
        // the choice of crypto to its user and panics without one: ring, as
        // the runtime's other TLS. Only the first install counts.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exported = queue.clone();
        // The blocking client runs a runtime of its own, which may be
        // neither made nor dropped on the service's: it lives on the thread.
        let thread = std::thread::Builder::new()
            .name("natsapp-traces".into())
            .spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(settings.timeout)
                    .build();
                match client {
                    Ok(client) => {
                        let _ = built.send(Ok(()));
                        Batcher::new(settings, client).run(&exported);
                    }
                    Err(e) => {
                        let _ = built.send(Err(TracesError(e)));
                    }
                }
            })
            .expect("a thread for the trace exporter");
        client
            .recv()
            .expect("the exporter's thread says whether it has a client")?;
        Ok(Exporter {
            queue,
            thread: Some(thread),
        })
    }

    /// Where spans are recorded.
    pub fn queue(&self) -> Arc<Queue> {
        self.queue.clone()
    }

    /// Exports what is queued and stops the thread (blocks).
    pub fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.queue.waiting.lock().expect("span queue lock").stopping = true;
        self.queue.batch_full.notify_one();
        let _ = thread.join();
        let dropped = self.queue.dropped.load(Relaxed);
        if dropped > 0 {
            tracing::warn!(
                "{dropped} spans were dropped: the collector did not take them fast enough"
            );
        }
    }
}

/// The thread's side: how batches are encoded and sent.
struct Batcher {
    settings: Settings,
    client: reqwest::blocking::Client,
    encoder: Encoder,
    /// Whether the last export failed (its warning is not repeated).
    failing: bool,
}

impl Batcher {
    fn new(settings: Settings, client: reqwest::blocking::Client) -> Batcher {
        let encoder = Encoder::new(
            &settings.resource,
            "natsapp-wasm",
            env!("CARGO_PKG_VERSION"),
        );
        Batcher {
            settings,
            client,
            encoder,
            failing: false,
        }
    }

    fn run(mut self, queue: &Queue) {
        let mut taken = Vec::with_capacity(self.settings.max_queue);
        loop {
            let stopping = queue.take(self.settings.schedule_delay, &mut taken);
            for batch in taken.chunks(self.settings.max_batch) {
                self.export(batch);
            }
            taken.clear();
            if stopping {
                return;
            }
        }
    }

    /// Sends the batch; a failure is warned about once until an export
    /// succeeds again, and its spans are lost (retrying would hold up the
    /// ones behind them).
    fn export(&mut self, batch: &[Span]) {
        let body = self.encoder.request(batch);
        let spans = batch.len();
        let mut request = (self.client.post(&self.settings.endpoint))
            .header("content-type", "application/x-protobuf")
            .body(body);
        for (name, value) in &self.settings.headers {
            request = request.header(name, value);
        }
        let result = request.send().and_then(|r| r.error_for_status());
        match (result, self.failing) {
            (Ok(_), true) => {
                self.failing = false;
                tracing::info!(collector = %self.settings.endpoint, "the collector takes spans again");
            }
            (Ok(_), false) => {}
            (Err(e), failing) => {
                if !failing {
                    tracing::warn!(
                        collector = %self.settings.endpoint,
                        "{spans} spans not exported, and later ones until the collector takes them: {}",
                        ErrorChain(&e)
                    );
                }
                self.failing = true;
            }
        }
    }
}
