//! What one subscriber has finished, and what it is handling: the
//! consumer's ack floor as last seen on the server, and the latest stream
//! sequences this process acked or terminated. After a durable is
//! recreated from that floor, or a server restart loses acks (its floor may
//! even move back), a delivery of a sequence in the ledger is one already
//! handled: it is acked again without running the handler, and counted. A
//! delivery of a sequence whose handler runs here now (the server gave up
//! on it: its in-progress signals did not arrive, during a leader
//! election) waits for that handler instead of running a second one.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// Most sequences remembered (a few MiB); past it the lowest are forgotten.
const MAX_REMEMBERED: usize = 100_000;

/// The consumer's ack floor and the sequences a subscriber finished.
#[derive(Debug, Default)]
pub struct AckLedger {
    stream_created_ns: AtomicU64,
    generation: AtomicU64,
    floor: AtomicU64,
    done: Mutex<BTreeSet<u64>>,
    /// Sequences whose handler runs now, and what tells when it is done.
    running: Mutex<HashMap<u64, Busy>>,
}

/// A sequence whose handler runs now.
#[derive(Debug, Clone)]
pub struct Busy {
    /// Resolves once that handling ends.
    pub done: watch::Receiver<()>,
    /// When that handling started.
    pub since: Instant,
}

/// A sequence being handled; it is not any more once this is dropped.
#[derive(Debug)]
pub struct Running {
    ledger: Arc<AckLedger>,
    sequence: u64,
    _done: watch::Sender<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropping the sender wakes everyone waiting for it.
        self.ledger
            .running
            .lock()
            .expect("ledger lock")
            .remove(&self.sequence);
    }
}

impl AckLedger {
    /// Records when the stream was created (nanoseconds since the epoch).
    /// A stream created again under the same name numbers its messages
    /// anew: what the ledger knew is forgotten, and `true` says so.
    pub fn observe_stream(&self, created_ns: u64) -> bool {
        let before = self.stream_created_ns.swap(created_ns, Ordering::AcqRel);
        if before == 0 || before == created_ns {
            return false;
        }
        self.floor.store(0, Ordering::Release);
        let mut done = self.done.lock().expect("ledger lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        done.clear();
        true
    }

    /// Which stream the ledger's sequences belong to: it changes when the
    /// stream is created again. A delivery records it when fetched, so a
    /// handler of the old stream finishing late cannot mark a sequence of
    /// the new one as done.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The stream sequence of the consumer's ack floor as last observed
    /// (every message at or below it is acknowledged on the server).
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::Acquire)
    }

    /// Records the consumer's ack floor seen on the server.
    pub fn observe_floor(&self, floor: u64) {
        self.floor.fetch_max(floor, Ordering::AcqRel);
    }

    /// Records that `sequence`, fetched in ledger `generation`, was acked
    /// or terminated by this process.
    pub fn finished(&self, sequence: u64, generation: u64) {
        let mut done = self.done.lock().expect("ledger lock");
        if generation != self.generation() {
            return;
        }
        done.insert(sequence);
        if done.len() > MAX_REMEMBERED {
            done.pop_first();
        }
    }

    /// Whether `sequence` was already finished here.
    pub fn already_finished(&self, sequence: u64) -> bool {
        self.done.lock().expect("ledger lock").contains(&sequence)
    }

    /// Marks `sequence` as being handled here from `since` until the
    /// returned guard is dropped; when it already is, that handling.
    pub fn start(self: &Arc<Self>, sequence: u64, since: Instant) -> Result<Running, Busy> {
        let mut running = self.running.lock().expect("ledger lock");
        if let Some(busy) = running.get(&sequence) {
            return Err(busy.clone());
        }
        let (done, waiting) = watch::channel(());
        running.insert(
            sequence,
            Busy {
                done: waiting,
                since,
            },
        );
        Ok(Running {
            ledger: self.clone(),
            sequence,
            _done: done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_delivery_waits_for_the_running_one() {
        let ledger = Arc::new(AckLedger::default());
        let (first, second) = (Instant::now(), Instant::now());
        let running = ledger.start(7, first).expect("nothing runs yet");
        let mut waiting = ledger.start(7, second).expect_err("7 is being handled");
        assert_eq!(waiting.since, first, "when the running one started");
        assert!(
            ledger.start(8, second).is_ok(),
            "another sequence runs freely"
        );
        drop(running);
        // The sender is gone: changed() ends at once.
        assert!(waiting.done.changed().await.is_err());
        assert!(ledger.start(7, second).is_ok(), "7 may be handled again");
    }

    #[test]
    fn remembers_what_it_finished_and_the_highest_floor() {
        let l = AckLedger::default();
        for s in [3, 5, 9] {
            l.finished(s, 0);
        }
        assert!(l.already_finished(5) && !l.already_finished(4));
        l.observe_floor(5);
        l.observe_floor(4);
        assert_eq!(l.floor(), 5, "the floor recorded never moves back");
        assert!(
            l.already_finished(3),
            "a server that lost acks may deliver messages below its old floor again"
        );
    }

    #[test]
    fn a_stream_created_again_starts_a_new_ledger() {
        let l = AckLedger::default();
        assert!(!l.observe_stream(100));
        l.finished(7, 0);
        l.observe_floor(7);
        assert!(!l.observe_stream(100));
        assert!(l.already_finished(7));
        assert!(l.observe_stream(200));
        assert_eq!(l.floor(), 0);
        assert!(!l.already_finished(7));
        l.finished(9, 0);
        assert!(
            !l.already_finished(9),
            "a handler of the old stream finishing late marks nothing of the new one"
        );
    }

    #[test]
    fn is_bounded() {
        let l = AckLedger::default();
        for s in 1..=(MAX_REMEMBERED as u64 + 10) {
            l.finished(s, 0);
        }
        assert!(!l.already_finished(10));
        assert!(l.already_finished(11));
    }
}
