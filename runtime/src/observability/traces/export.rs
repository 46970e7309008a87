//! The exporter: finished spans wait in a bounded queue (full, a span is
//! dropped, never a message held up) for a thread of its own, which sends
//! them in batches, as OTLP/HTTP protobuf, when a batch is full or the
//! schedule delay has passed. Encoding and sending are off the message
//! path: the handlers' threads only queue.

use super::otlp::Encoder;
use super::settings::Settings;
use super::TracesError;
use crate::error::ErrorChain;
use crate::message::trace::span::{Handlers, Span, SpanSink};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The queue the message path records spans into: one shard per core,
/// each taken by the threads that land on it, so that handlers finishing
/// on two cores at once do not contend for one lock and one buffer. The
/// exporter's thread is woken only when a shard holds its part of a batch
/// (or at shutdown), not per span.
pub struct Queue {
    shards: Box<[Shard]>,
    /// Spans a shard holds before it drops more (its part of the queue).
    shard_room: usize,
    /// Spans in a shard that wake the exporter (its part of a batch).
    shard_batch: usize,
    wake: Mutex<Wake>,
    woken: Condvar,
    /// Set once the exporter stops: what is recorded then is dropped.
    stopping: AtomicBool,
    /// The handlers the spans name.
    handlers: Arc<Handlers>,
    dropped: AtomicU64,
}

/// A shard on a cache line of its own.
#[repr(align(128))]
struct Shard(Mutex<Vec<Span>>);

/// Set, under its lock, when a shard holds its part of a batch.
#[derive(Default)]
struct Wake {
    batch_ready: bool,
}

/// Which shard threads are given next.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, by number (modulo the shards).
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Relaxed);
}

impl SpanSink for Queue {
    fn record(&self, span: Span) {
        let shard = &self.shards[SHARD.with(|n| *n) % self.shards.len()];
        let mut spans = shard.0.lock().expect("span queue lock");
        if spans.len() >= self.shard_room || self.stopping.load(Relaxed) {
            drop(spans);
            if self.dropped.fetch_add(1, Relaxed) == 0 {
                tracing::warn!(
                    "spans are made faster than the collector takes them: the queue is full, further spans are dropped (their count is logged at shutdown)"
                );
            }
            return;
        }
        spans.push(span);
        if spans.len() == self.shard_batch {
            drop(spans);
            self.wake.lock().expect("span queue lock").batch_ready = true;
            self.woken.notify_one();
        }
    }

    fn handlers(&self) -> &Handlers {
        &self.handlers
    }
}

impl Queue {
    fn new(max_queue: usize, max_batch: usize) -> Queue {
        let shards = std::thread::available_parallelism().map_or(1, usize::from);
        let shard_room = max_queue.div_ceil(shards);
        Queue {
            shards: (0..shards)
                .map(|_| Shard(Mutex::new(Vec::with_capacity(shard_room))))
                .collect(),
            shard_room,
            shard_batch: max_batch.div_ceil(shards),
            wake: Mutex::default(),
            woken: Condvar::new(),
            stopping: AtomicBool::new(false),
            handlers: Arc::default(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Waits until a shard holds its part of a batch, `delay` has passed
    /// or the exporter stops, then trades each shard's spans for an empty
    /// buffer of `taken` (one per shard, each as large as a shard): no
    /// span is copied, nor a buffer allocated, under a shard's lock.
    /// Whether it stops.
    fn take(&self, delay: Duration, taken: &mut [Vec<Span>]) -> bool {
        let deadline = Instant::now() + delay;
        let mut wake = self.wake.lock().expect("span queue lock");
        // `stop` sets `stopping` before it takes this lock to wake us: read
        // under it, it is never missed.
        while !wake.batch_ready && !self.stopping.load(Relaxed) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            wake = (self.woken.wait_timeout(wake, left))
                .expect("span queue lock")
                .0;
        }
        wake.batch_ready = false;
        let stopping = self.stopping.load(Relaxed);
        drop(wake);
        for (shard, buffer) in self.shards.iter().zip(taken.iter_mut()) {
            std::mem::swap(&mut *shard.0.lock().expect("span queue lock"), buffer);
        }
        stopping
    }

    /// Stops recording (later spans are counted as dropped); the
    /// exporter's next `take` is its last.
    fn stop(&self) {
        self.stopping.store(true, Relaxed);
        // Taken and let go, so that a `take` between its check of
        // `stopping` and its wait is waiting when notified.
        drop(self.wake.lock().expect("span queue lock"));
        self.woken.notify_one();
    }

    /// Buffers to trade for the shards' spans.
    fn buffers(&self) -> Vec<Vec<Span>> {
        (self.shards.iter())
            .map(|_| Vec::with_capacity(self.shard_room))
            .collect()
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
        let queue = Arc::new(Queue::new(settings.max_queue, settings.max_batch));
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
                        Batcher::new(settings, client, &exported).run(&exported);
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
        self.queue.stop();
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
    fn new(settings: Settings, client: reqwest::blocking::Client, queue: &Queue) -> Batcher {
        let encoder = Encoder::new(
            &settings.resource,
            "natsapp-wasm",
            env!("CARGO_PKG_VERSION"),
            queue.handlers.clone(),
        );
        Batcher {
            settings,
            client,
            encoder,
            failing: false,
        }
    }

    fn run(mut self, queue: &Queue) {
        let mut taken = queue.buffers();
        loop {
            let stopping = queue.take(self.settings.schedule_delay, &mut taken);
            // Batches of the shards' spans together, in requests of at
            // most `max_batch`.
            let mut left: usize = taken.iter().map(Vec::len).sum();
            let mut spans = taken.iter().flatten();
            while left > 0 {
                let batch = left.min(self.settings.max_batch);
                self.export(spans.by_ref().take(batch), batch);
                left -= batch;
            }
            taken.iter_mut().for_each(Vec::clear);
            if stopping {
                return;
            }
        }
    }

    /// Sends the batch; a failure is warned about once until an export
    /// succeeds again, and its spans are lost (retrying would hold up the
    /// ones behind them).
    fn export<'a>(&mut self, batch: impl Iterator<Item = &'a Span>, spans: usize) {
        let body = self.encoder.request(batch, spans);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::trace::span::{Details, SpanId, TraceId};

    fn span(n: u8) -> Span {
        Span {
            trace_id: TraceId([n; 16]),
            span_id: SpanId([n; 8]),
            parent: None,
            trace_state: None,
            start: 1,
            end: 2,
            details: Details::Send {
                operation: "publish",
                subject: "out".into(),
                message_id: None,
                error_type: None,
            },
            error: None,
        }
    }

    fn ids(taken: &[Vec<Span>]) -> Vec<u8> {
        let mut ids: Vec<u8> = taken.iter().flatten().map(|s| s.trace_id.0[0]).collect();
        ids.sort();
        ids
    }

    #[test]
    fn spans_from_every_thread_are_taken_and_a_full_shard_drops_and_counts() {
        let queue = Arc::new(Queue::new(64, 16));
        let (room, batch) = (queue.shard_room, queue.shard_batch);
        // Spans recorded on other threads, which may land on other shards.
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let queue = queue.clone();
                s.spawn(move || queue.record(span(100 + t)));
            }
        });
        let mut taken = queue.buffers();
        assert!(!queue.take(Duration::ZERO, &mut taken));
        assert_eq!(ids(&taken), [100, 101, 102, 103]);
        taken.iter_mut().for_each(Vec::clear);
        // One thread fills its shard: a batch's part wakes the exporter,
        // the shard's room is all it keeps.
        for n in 0..batch as u8 {
            queue.record(span(n));
        }
        assert!(queue.wake.lock().unwrap().batch_ready);
        for n in batch as u8..room as u8 + 2 {
            queue.record(span(n));
        }
        assert_eq!(queue.dropped.load(Relaxed), 2);
        assert!(!queue.take(Duration::from_secs(60), &mut taken));
        assert_eq!(ids(&taken), (0..room as u8).collect::<Vec<_>>());
        assert!(!queue.wake.lock().unwrap().batch_ready);
        // Stopped, the exporter takes its last spans; later ones are dropped.
        queue.record(span(200));
        queue.stop();
        queue.record(span(201));
        taken.iter_mut().for_each(Vec::clear);
        assert!(queue.take(Duration::from_secs(60), &mut taken));
        assert_eq!(ids(&taken), [200]);
        assert_eq!(queue.dropped.load(Relaxed), 3);
    }
}
