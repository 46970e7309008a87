//! Fresh instances made ahead of need, for `instances = "per-message"`.
//!
//! Every message still gets an instance nothing else has used; what moves
//! is when it is made. A task per handler instantiates, while the handler
//! has messages, as many as the recent rate needs — enough to cover the
//! messages that arrive while one instantiation runs, plus one — up to
//! `prepared_instances`. A message takes a ready one, or makes its own
//! when none is ready, as it did before. Preparing moves an
//! instantiation's CPU off the message's path, it does not remove it: it
//! is metered and charged like any instantiation (the subscriber's share,
//! its tenant's `cpu` quota), its memory counts in the tenant's `memory`
//! quota (a running instance that needs the room drops the ready ones),
//! and its pool slot is set aside when the engine is made. A component
//! that exports `warm-up` has it called on each instance before the
//! instance is ready ([`warm_up`](super::warm_up)); one whose warm-up
//! fails is dropped. A handler with no message for [`IDLE`] keeps none
//! ready.
//!
//! The preparing tasks run on threads at idle priority ([`idle`]), and
//! a task is woken once a message is done with its instance, not when the
//! message takes it: what a message waits for comes first. A handler
//! whose instantiations take a tenth of a core or more prepares only while
//! the machine has an idle core to do it on ([`idle::idle_cores`]): on a
//! busy machine a message's own instantiation costs the same CPU, and
//! handing instances from the preparing task to the messages cost 6-7% of a
//! saturated Rust per-message subscriber's throughput.

use super::idle;
use super::{Maker, Warm};
use crate::message::InFlight;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A handler that had no message for this long keeps no instance ready.
const IDLE: Duration = Duration::from_secs(30);

/// The weight of the newest gap between two messages in their average:
/// a few dozen messages set the rate.
const GAP_WEIGHT: f64 = 0.05;

/// The weight of the newest instantiation's time in their average.
const INSTANTIATION_WEIGHT: f64 = 0.2;

/// A handler whose instantiations take this much CPU or more, in cores,
/// prepares only while the machine has [`SPARE_CORES`] idle.
const BUSY_HANDLER: f64 = 0.1;

/// Idle CPU, in cores, that a busy handler prepares on.
const SPARE_CORES: f64 = 0.25;

/// How long the task waits after it could not make an instance (most
/// likely the tenant's memory quota is held) before it tries again.
const FAILED_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause after warm-ups that failed in a row: the pause
/// doubles from [`FAILED_PAUSE`] with each, as a warm-up that fails once
/// most likely fails every time.
const LONGEST_WARM_UP_PAUSE: Duration = Duration::from_secs(60);

/// A handler's instances made ahead, and what sizes them.
pub(super) struct Prepared {
    ready: Mutex<Vec<Warm>>,
    pace: Mutex<Pace>,
    /// Wakes the preparing task: a message is done with its instance.
    wake: Arc<Notify>,
    most: usize,
    /// What it last added to its subscriber's `prepared_instances` gauge:
    /// how many were ready when last counted.
    reported: AtomicUsize,
    maker: Arc<Maker>,
}

/// The recent rate of messages and the recent cost of an instantiation.
struct Pace {
    /// Seconds between two messages, smoothed.
    gap: Option<f64>,
    last_message: Option<Instant>,
    /// Seconds one instantiation took, smoothed.
    instantiation: Option<f64>,
}

impl Pace {
    /// The cores its instantiations would take if every message made its
    /// own: also how many messages arrive while one instantiation runs.
    fn load(&self) -> f64 {
        match (self.instantiation, self.gap) {
            (Some(instantiation), Some(gap)) => instantiation / gap,
            _ => 0.0,
        }
    }
}

/// `average` moved towards `sample` by `weight`; the first sample as is.
fn smoothed(average: Option<f64>, sample: f64, weight: f64) -> f64 {
    average.map_or(sample, |a| (1.0 - weight) * a + weight * sample)
}

impl Prepared {
    /// Starts preparing up to `most` instances from `maker`. Outside a
    /// tokio runtime (the in-process harness, which runs one message at a
    /// time) none are prepared.
    pub(super) fn start(maker: Arc<Maker>, most: usize) -> Option<Arc<Prepared>> {
        tokio::runtime::Handle::try_current().ok()?;
        let prepared = Arc::new(Prepared {
            ready: Mutex::new(Vec::new()),
            pace: Mutex::new(Pace {
                gap: None,
                last_message: None,
                instantiation: None,
            }),
            wake: Arc::new(Notify::new()),
            most,
            reported: AtomicUsize::new(0),
            maker,
        });
        if let Some(pool) = &prepared.maker.host.quotas.memory {
            // The tenant's memory pool drops ready instances when one of
            // its running instances needs the room.
            let ready = Arc::downgrade(&prepared);
            pool.reclaim_with(Box::new(move || {
                let Some(ready) = ready.upgrade() else {
                    return 0;
                };
                let dropped = {
                    let mut instances = ready.ready.lock().expect("ready lock");
                    ready.counted(0);
                    std::mem::take(&mut *instances)
                };
                dropped.len()
            }));
        }
        idle::spawn(prepare(Arc::downgrade(&prepared), prepared.wake.clone()));
        Some(prepared)
    }

    /// A message arrived: a ready instance for it, if there is one.
    pub(super) fn take(&self) -> Option<Warm> {
        let now = Instant::now();
        {
            let mut pace = self.pace.lock().expect("pace lock");
            if let Some(last) = pace.last_message {
                let gap = now.duration_since(last).as_secs_f64();
                pace.gap = Some(smoothed(pace.gap, gap, GAP_WEIGHT));
            }
            pace.last_message = Some(now);
        }
        let taken = {
            let mut ready = self.ready.lock().expect("ready lock");
            let taken = ready.pop();
            self.counted(ready.len());
            taken
        };
        if taken.is_some() {
            self.maker.host.settler.stats.prepared_instance_used();
        }
        taken
    }

    /// An instantiation and its warm-up took `took` of CPU time.
    fn instantiated(&self, took: Duration) {
        let mut pace = self.pace.lock().expect("pace lock");
        let took = took.as_secs_f64();
        pace.instantiation = Some(smoothed(pace.instantiation, took, INSTANTIATION_WEIGHT));
    }

    /// Its handler is dropped: the preparing task ends.
    pub(super) fn handler_gone(&self) {
        self.wake.notify_one();
    }

    /// Whether its handler had no message for [`IDLE`].
    fn handler_idle(&self) -> bool {
        let pace = self.pace.lock().expect("pace lock");
        pace.last_message.is_none_or(|last| last.elapsed() >= IDLE)
    }

    /// How many to make ready now.
    fn wanted(&self) -> usize {
        let pace = self.pace.lock().expect("pace lock");
        match pace.last_message {
            Some(last) if last.elapsed() < IDLE && may_prepare(&pace) => {
                // Messages that arrive while one instantiation runs, and
                // one for the next.
                let during = pace.load().ceil() as usize;
                during.saturating_add(1).min(self.most)
            }
            _ => 0,
        }
    }

    /// Brings the gauge to `ready`; called with the `ready` lock held, so
    /// that the changes are reported in their order.
    fn counted(&self, ready: usize) {
        let before = self.reported.swap(ready, Relaxed);
        (self.maker.host.settler.stats).prepared_instances_changed(ready as i64 - before as i64);
    }
}

/// Held while a message runs: once it is done with its instance, the
/// preparing task tops the ready ones up. Waking it for nothing, at every
/// message of a busy machine, is a cost of its own.
pub(super) struct MessageDone<'a>(pub(super) &'a Prepared);

impl Drop for MessageDone<'_> {
    fn drop(&mut self) {
        let p = self.0;
        // How many are ready, as last counted under the `ready` lock: the
        // lock is not taken again for every message.
        let full = p.reported.load(Relaxed) >= p.most;
        if !full && may_prepare(&p.pace.lock().expect("pace lock")) {
            p.wake.notify_one();
        }
    }
}

/// Whether instances are made ahead now: by a handler whose instantiations
/// take little CPU, or on a machine with a core to spare.
fn may_prepare(pace: &Pace) -> bool {
    pace.load() < BUSY_HANDLER || idle::idle_cores() >= SPARE_CORES
}

impl Drop for Prepared {
    fn drop(&mut self) {
        self.counted(0);
    }
}

/// The preparing task: tops the ready instances up to what is wanted,
/// drops them once the handler is idle, and ends with its handler. It
/// holds its handler's instances only while it works on them: a dropped
/// handler frees them at once.
async fn prepare(prepared: Weak<Prepared>, wake: Arc<Notify>) {
    // What a prepared instance is lent to until a message takes it.
    let mut waiting: Option<Arc<InFlight>> = None;
    let mut warm_ups_failed: u32 = 0;
    loop {
        let mut pause = None;
        {
            let Some(p) = prepared.upgrade() else { return };
            let wanted = p.wanted();
            let have = p.ready.lock().expect("ready lock").len();
            if have < wanted {
                let host = &p.maker.host;
                let before = waiting.get_or_insert_with(|| Arc::new(InFlight::none(&host.name)));
                // Its CPU time, not the wall clock's: on an idle-priority
                // thread a busy machine would stretch it, and a handler
                // whose instantiations seemed costly would stop preparing.
                // It does not mark the subscriber busy (see `idle`).
                let spent = AtomicU64::new(0);
                match p
                    .maker
                    .instantiate(before, true, super::Turn::ahead(&p.maker.host.cpu, &spent))
                    .await
                {
                    Ok(mut warm) => match p.maker.warm_up(&mut warm, &spent).await {
                        Ok(()) => {
                            warm_ups_failed = 0;
                            p.instantiated(Duration::from_nanos(spent.load(Relaxed)));
                            let mut ready = p.ready.lock().expect("ready lock");
                            ready.push(warm);
                            p.counted(ready.len());
                            continue;
                        }
                        Err(e) => {
                            // The instance is dropped; messages make their
                            // own meanwhile.
                            let wait = FAILED_PAUSE
                                .saturating_mul(1 << warm_ups_failed.min(6))
                                .min(LONGEST_WARM_UP_PAUSE);
                            warm_ups_failed = warm_ups_failed.saturating_add(1);
                            tracing::warn!(subscriber = %host.name, "the warm-up of an instance made ahead of need failed ({warm_ups_failed} in a row; the next in {wait:?}): {e:#}");
                            pause = Some(wait);
                        }
                    },
                    Err(outcome) => {
                        // Most likely the tenant's memory quota: messages
                        // make their own meanwhile.
                        tracing::debug!(subscriber = %host.name, "could not prepare an instance: {outcome:?}");
                        pause = Some(FAILED_PAUSE);
                    }
                }
            } else if have > 0 && p.handler_idle() {
                let dropped = {
                    let mut ready = p.ready.lock().expect("ready lock");
                    p.counted(0);
                    std::mem::take(&mut *ready)
                };
                drop(dropped);
            }
        }
        match pause {
            Some(pause) => tokio::time::sleep(pause).await,
            // Woken by the next message, or by its handler's end; or,
            // while instances are ready, in time to drop them once the
            // handler is idle.
            None => {
                let _ = tokio::time::timeout(IDLE, wake.notified()).await;
            }
        }
    }
}
