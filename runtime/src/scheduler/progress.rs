//! What the pull loop tells its watcher: when it last received a delivery
//! and whether it waits for its tenant's concurrency quota; and the
//! watcher's request to give up the open pull and send a new one when the
//! server delivers nothing although messages are pending.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

/// One subscriber's pull progress.
#[derive(Debug)]
pub struct Progress {
    /// When the last delivery arrived (or the loop started).
    delivered: Mutex<Instant>,
    /// The loop waits for a slot of its tenant's concurrency quota.
    quota_wait: AtomicBool,
    /// How many restarts were asked for: a request sent after an asking
    /// is not given up for it.
    restarts: watch::Sender<u64>,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            delivered: Mutex::new(Instant::now()),
            quota_wait: AtomicBool::new(false),
            restarts: watch::Sender::new(0),
        }
    }
}

impl Progress {
    /// A delivery arrived.
    pub fn delivered(&self) {
        *self.delivered.lock().expect("progress lock") = Instant::now();
    }

    /// How long ago the last delivery arrived.
    pub fn since_delivery(&self) -> std::time::Duration {
        self.delivered.lock().expect("progress lock").elapsed()
    }

    /// The loop starts (or stops) waiting for its tenant's quota.
    pub fn waiting_for_quota(&self, waiting: bool) {
        self.quota_wait.store(waiting, Relaxed);
    }

    /// Whether the loop waits for its tenant's quota.
    pub fn is_waiting_for_quota(&self) -> bool {
        self.quota_wait.load(Relaxed)
    }

    /// Asks the loop to give up its open pull and send a new one.
    pub fn ask_restart(&self) {
        self.restarts.send_modify(|n| *n += 1);
    }

    /// What a request just sent watches: it resolves `changed()` when a
    /// restart is asked for after now.
    pub fn restarts(&self) -> watch::Receiver<u64> {
        self.restarts.subscribe()
    }
}
