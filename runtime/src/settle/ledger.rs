//! What one subscriber has finished, and what it is handling: the
//! consumer's ack floor as last seen on the server, and the latest stream
//! sequences this process acked or terminated. After a durable is
//! recreated from that floor, or a server restart loses acks (its floor may
//! even move back), a delivery of a sequence in the ledger is one already
//! handled: it is acked again without running the handler, and counted. A
//! delivery of a sequence whose handler runs here now (the server gave up
//! on it: its in-progress signals did not arrive, during a leader
//! election) waits for that handler instead of running a second one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// Most sequences remembered (a few MiB); past it the lowest are forgotten.
const MAX_REMEMBERED: usize = 100_000;

/// The consumer's ack floor and the sequences a subscriber finished.
#[derive(Debug, Default)]
pub struct AckLedger {
    stream_created_ns: AtomicU64,
    generation: AtomicU64,
    floor: AtomicU64,
    /// Finished sequences in ascending order. They finish nearly in order,
    /// so each goes in at or near the end, and the lowest leaves the front.
    done: Mutex<VecDeque<u64>>,
    /// Sequences whose handler runs now, and when it started.
    running: Mutex<HashMap<u64, Instant>>,
    /// Deliveries waiting for a running handler of their sequence: rare
    /// (a redelivery while the handler runs), so one wake-up serves them
    /// all, and a handling that ends with nobody waiting wakes nothing.
    waiting: AtomicUsize,
    /// Woken when a handling ends while a delivery waits.
    ended: Notify,
}

/// A sequence whose handler runs now.
#[derive(Debug)]
pub struct Busy {
    ledger: Arc<AckLedger>,
    sequence: u64,
    /// When that handling started.
    pub since: Instant,
}

impl Busy {
    /// Resolves once that handling has ended.
    pub async fn ended(&self) {
        let ledger = &*self.ledger;
        ledger.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Waiting(ledger);
        loop {
            let ended = ledger.ended.notified();
            tokio::pin!(ended);
            // Registered before the check: an end after it wakes this one.
            ended.as_mut().enable();
            if !ledger.running_now(self.sequence) {
                return;
            }
            ended.await;
        }
    }
}

/// A delivery counted in [`AckLedger::waiting`] until dropped.
struct Waiting<'a>(&'a AckLedger);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A sequence being handled; it is not any more once this is dropped.
#[derive(Debug)]
pub struct Running {
    ledger: Arc<AckLedger>,
    sequence: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.ledger
            .running
            .lock()
            .expect("ledger lock")
            .remove(&self.sequence);
        // A waiter counted itself before it looked at `running`: if it saw
        // this sequence there, its count is seen here.
        if self.ledger.waiting.load(Ordering::SeqCst) > 0 {
            self.ledger.ended.notify_waiters();
        }
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
        if let Err(at) = done.binary_search(&sequence) {
            done.insert(at, sequence);
            if done.len() > MAX_REMEMBERED {
                done.pop_front();
            }
        }
    }

    /// Whether `sequence` was already finished here.
    pub fn already_finished(&self, sequence: u64) -> bool {
        self.done
            .lock()
            .expect("ledger lock")
            .binary_search(&sequence)
            .is_ok()
    }

    /// Marks `sequence` as being handled here from `since` until the
    /// returned guard is dropped; when it already is, that handling.
    pub fn start(self: &Arc<Self>, sequence: u64, since: Instant) -> Result<Running, Busy> {
        let mut running = self.running.lock().expect("ledger lock");
        if let Some(&since) = running.get(&sequence) {
            return Err(Busy {
                ledger: self.clone(),
                sequence,
                since,
            });
        }
        running.insert(sequence, since);
        Ok(Running {
            ledger: self.clone(),
            sequence,
        })
    }

    /// Whether `sequence` is being handled here now.
    fn running_now(&self, sequence: u64) -> bool {
        self.running
            .lock()
            .expect("ledger lock")
            .contains_key(&sequence)
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
        let waiting = ledger.start(7, second).expect_err("7 is being handled");
        assert_eq!(waiting.since, first, "when the running one started");
        let other = ledger
            .start(8, second)
            .expect("another sequence runs freely");
        let mut ended = Box::pin(waiting.ended());
        assert!(futures::poll!(ended.as_mut()).is_pending(), "7 still runs");
        drop(other);
        assert!(
            futures::poll!(ended.as_mut()).is_pending(),
            "the end of 8 does not end the wait for 7"
        );
        drop(running);
        tokio::time::timeout(std::time::Duration::from_secs(5), ended)
            .await
            .expect("the end of 7 ends the wait");
        assert_eq!(ledger.waiting.load(Ordering::SeqCst), 0);
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
    fn sequences_finished_out_of_order_are_all_remembered_once() {
        let l = AckLedger::default();
        for s in [5, 3, 9, 4, 3, 10, 1] {
            l.finished(s, 0);
        }
        assert_eq!(
            Vec::from(l.done.lock().unwrap().clone()),
            [1, 3, 4, 5, 9, 10]
        );
        assert!([1, 3, 4, 5, 9, 10].iter().all(|&s| l.already_finished(s)));
        assert!(!l.already_finished(2) && !l.already_finished(11));
    }

    #[test]
    fn is_bounded() {
        let l = AckLedger::default();
        for s in 1..=(MAX_REMEMBERED as u64 + 10) {
            l.finished(s, 0);
        }
        assert!(!l.already_finished(10));
        assert!(l.already_finished(11));
        // A late one below the others is the lowest: it goes at once.
        l.finished(2, 0);
        assert!(!l.already_finished(2) && l.already_finished(11));
    }
}
