//! One subscriber's counters, updated on the message path with relaxed
//! atomics, and their snapshot.

use super::capabilities::{CapabilityCounters, HttpOutcome, KvOp, KvOutcome};
use crate::message::{FailureCause, Outcome};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Latency buckets: bucket `i` counts durations below 2^i microseconds.
const BUCKETS: usize = 32;

/// Counters of one subscriber.
#[derive(Debug, Default)]
pub struct SubscriberStats {
    received: AtomicU64,
    acked: AtomicU64,
    naked: AtomicU64,
    termed: AtomicU64,
    dead_lettered: AtomicU64,
    retried: AtomicU64,
    rejected: AtomicU64,
    settled_by_guest: AtomicU64,
    settle_errors: AtomicU64,
    replayed: AtomicU64,
    past_max_deliver: AtomicU64,
    dead_letter_trimmed: AtomicU64,
    consumer_recreated: AtomicU64,
    pulls_silent: AtomicU64,
    pulls_stalled: AtomicU64,
    nats_unavailable: AtomicU64,
    redelivered_while_running: AtomicU64,
    redriven: AtomicU64,
    paused: AtomicBool,
    ack_floor: AtomicU64,
    quota_refused: AtomicU64,
    concurrency_quota_waits: AtomicU64,
    not_running: std::sync::OnceLock<String>,
    in_flight: AtomicU64,
    failed: [AtomicU64; FailureCause::ALL.len()],
    latency: Durations,
    publish_latency: Durations,
    publish_failures: AtomicU64,
    batches_committed: AtomicU64,
    outputs_committed: AtomicU64,
    batches_already_stored: AtomicU64,
    batches_busy: AtomicU64,
    warm_instances: AtomicU64,
    prepared_instances: AtomicU64,
    prepared_instances_used: AtomicU64,
    guest_cpu_ns: AtomicU64,
    cpu_parked: AtomicU64,
    calls: CapabilityCounters,
}

/// A histogram of durations in power-of-two microsecond buckets.
#[derive(Debug, Default)]
struct Durations {
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Durations {
    fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
        let bucket = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        let counts: [u64; BUCKETS] = std::array::from_fn(|i| self.buckets[i].load(Relaxed));
        let n = self.count.load(Relaxed);
        let max_us = self.max_us.load(Relaxed);
        let sum_us = self.sum_us.load(Relaxed);
        let percentile_us = |p: f64| {
            if n == 0 {
                return 0;
            }
            let rank = ((n as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return (1u64 << i).min(max_us);
                }
            }
            max_us
        };
        LatencySnapshot {
            count: n,
            mean_us: sum_us.checked_div(n).unwrap_or(0),
            p50_us_at_most: percentile_us(0.50),
            p99_us_at_most: percentile_us(0.99),
            max_us,
            sum_us,
            buckets: counts.to_vec(),
        }
    }
}

/// What the runtime did with a message, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Acked by the runtime.
    Acked,
    /// Nak'd by the runtime.
    Naked,
    /// Termed by the runtime.
    Termed,
    /// Termed after a dead-letter copy.
    DeadLettered,
    /// The guest settled it.
    ByGuest,
    /// Acked again without running the handler: already handled here.
    Replayed,
    /// Settling failed (the server will redeliver after ack_wait).
    Error,
}

impl SubscriberStats {
    /// A message arrived and its handler starts.
    pub fn started(&self) {
        self.received.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// The handler finished after `latency` with `outcome`.
    pub fn finished(&self, latency: Duration, outcome: &Outcome) {
        self.latency.record(latency);
        match outcome {
            Outcome::Ok => {}
            Outcome::Retry { .. } => {
                self.retried.fetch_add(1, Relaxed);
            }
            Outcome::Reject(_) => {
                self.rejected.fetch_add(1, Relaxed);
            }
            Outcome::Failed { cause, .. } => self.failed(*cause),
        }
    }

    /// A guest's JetStream publish got its PubAck after `waited`, or failed.
    pub fn published(&self, waited: Duration, acked: bool) {
        if acked {
            self.publish_latency.record(waited);
        } else {
            self.publish_failures.fetch_add(1, Relaxed);
        }
    }

    /// An atomic batch of `outputs` messages was committed (the count its
    /// PubAck reports).
    pub fn batch_committed(&self, outputs: u64) {
        self.batches_committed.fetch_add(1, Relaxed);
        self.outputs_committed.fetch_add(outputs, Relaxed);
    }

    /// A redelivery's atomic batch was found committed by an earlier delivery.
    pub fn batch_already_stored(&self) {
        self.batches_already_stored.fetch_add(1, Relaxed);
    }

    /// The server refused an atomic batch for too many batches in flight
    /// on the stream; it is sent again after a pause.
    pub fn batch_busy(&self) {
        self.batches_busy.fetch_add(1, Relaxed);
    }

    /// The fresh instances it keeps ready grew by `delta` (or shrank):
    /// a handler and its replacement after a reload count in one gauge.
    pub fn prepared_instances_changed(&self, delta: i64) {
        self.prepared_instances.fetch_add(delta as u64, Relaxed);
    }

    /// A message took an instance made ahead of need.
    pub fn prepared_instance_used(&self) {
        self.prepared_instances_used.fetch_add(1, Relaxed);
    }

    /// The subscriber keeps this many idle instances for reuse.
    pub fn set_warm_instances(&self, n: usize) {
        self.warm_instances.store(n as u64, Relaxed);
    }

    /// Its guests ran `spent` (or work was done on their behalf).
    pub fn guest_cpu(&self, spent: Duration) {
        let ns = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.guest_cpu_ns.fetch_add(ns, Relaxed);
    }

    /// One of its guests was parked: over its share of guest CPU, or its
    /// tenant's `cpu` quota.
    pub fn cpu_parked(&self) {
        self.cpu_parked.fetch_add(1, Relaxed);
    }

    /// A guest's outbound HTTP request ended with `outcome`.
    pub fn http(&self, outcome: HttpOutcome) {
        self.calls.http(outcome);
    }

    /// A guest's key-value call ended with `outcome`.
    pub fn kv(&self, op: KvOp, outcome: KvOutcome) {
        self.calls.kv(op, outcome);
    }

    /// The invocation failed.
    pub fn failed(&self, cause: FailureCause) {
        let i = FailureCause::ALL
            .iter()
            .position(|c| *c == cause)
            .unwrap_or(0);
        self.failed[i].fetch_add(1, Relaxed);
    }

    /// The message was settled (or left in flight) and is no longer ours.
    pub fn settled(&self, how: Settled) {
        let counter = match how {
            Settled::Acked => &self.acked,
            Settled::Naked => &self.naked,
            Settled::Termed => &self.termed,
            Settled::DeadLettered => {
                self.termed.fetch_add(1, Relaxed);
                &self.dead_lettered
            }
            Settled::ByGuest => &self.settled_by_guest,
            Settled::Replayed => &self.replayed,
            Settled::Error => &self.settle_errors,
        };
        counter.fetch_add(1, Relaxed);
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// A request's handler is done with it: a core request is delivered
    /// once and settled by nothing.
    pub fn request_done(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// A delivery past `max_deliver` arrived: settled without the handler.
    pub fn past_max_deliver(&self) {
        self.past_max_deliver.fetch_add(1, Relaxed);
    }

    /// A dead-letter copy left out the payload (or more) to fit.
    pub fn dead_letter_trimmed(&self) {
        self.dead_letter_trimmed.fetch_add(1, Relaxed);
    }

    /// The durable consumer was recreated after it disappeared.
    pub fn consumer_recreated(&self) {
        self.consumer_recreated.fetch_add(1, Relaxed);
    }

    /// A pull request heard nothing from the server (no message, status or
    /// heartbeat) and was given up.
    pub fn pull_silent(&self) {
        self.pulls_silent.fetch_add(1, Relaxed);
    }

    /// The pull stalled (messages pending, room to take them, nothing
    /// delivered) and was got going again.
    pub fn pull_stalled(&self) {
        self.pulls_stalled.fetch_add(1, Relaxed);
    }

    /// A call (a guest's publish, request or key-value call, a commit, a
    /// dead-letter copy) failed for want of NATS and is made again.
    pub fn nats_unavailable(&self) {
        self.nats_unavailable.fetch_add(1, Relaxed);
    }

    /// The server delivered a message again while its handler still ran here.
    pub fn redelivered_while_running(&self) {
        self.redelivered_while_running.fetch_add(1, Relaxed);
    }

    /// A message put back from the dead letters (`redrive`) arrived.
    pub fn redriven(&self) {
        self.redriven.fetch_add(1, Relaxed);
    }

    /// Handlers running now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// The subscriber could not be set up and does not run.
    pub fn not_running(&self, reason: String) {
        let _ = self.not_running.set(reason);
    }

    /// A publish or request refused by the tenant's `publishes_per_message`.
    pub fn quota_refused(&self) {
        self.quota_refused.fetch_add(1, Relaxed);
    }

    /// A free handler slot waited for the tenant's `concurrency` quota.
    pub fn concurrency_quota_wait(&self) {
        self.concurrency_quota_waits.fetch_add(1, Relaxed);
    }

    /// The consumer's ack floor (a stream sequence) seen on the server.
    pub fn set_ack_floor(&self, floor: u64) {
        self.ack_floor.store(floor, Relaxed);
    }

    /// The consumer is paused (or resumed) on the server.
    pub fn set_paused(&self, paused: bool) -> bool {
        self.paused.swap(paused, Relaxed)
    }

    /// A message fetched but never started (shutdown): counted as received and nak'd.
    pub fn returned_unstarted(&self) {
        self.received.fetch_add(1, Relaxed);
        self.naked.fetch_add(1, Relaxed);
    }

    /// A consistent-enough copy of the counters.
    pub fn snapshot(&self, name: &str, tenant: Option<&str>) -> SubscriberSnapshot {
        SubscriberSnapshot {
            name: name.to_string(),
            tenant: tenant.map(str::to_string),
            not_running: self.not_running.get().cloned(),
            quota_refused: self.quota_refused.load(Relaxed),
            concurrency_quota_waits: self.concurrency_quota_waits.load(Relaxed),
            received: self.received.load(Relaxed),
            acked: self.acked.load(Relaxed),
            naked: self.naked.load(Relaxed),
            termed: self.termed.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            settled_by_guest: self.settled_by_guest.load(Relaxed),
            settle_errors: self.settle_errors.load(Relaxed),
            replayed: self.replayed.load(Relaxed),
            past_max_deliver: self.past_max_deliver.load(Relaxed),
            dead_letter_trimmed: self.dead_letter_trimmed.load(Relaxed),
            consumer_recreated: self.consumer_recreated.load(Relaxed),
            pulls_silent: self.pulls_silent.load(Relaxed),
            pulls_stalled: self.pulls_stalled.load(Relaxed),
            nats_unavailable: self.nats_unavailable.load(Relaxed),
            redelivered_while_running: self.redelivered_while_running.load(Relaxed),
            redriven: self.redriven.load(Relaxed),
            paused: self.paused.load(Relaxed),
            ack_floor: self.ack_floor.load(Relaxed),
            retried: self.retried.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            failed: FailureCause::ALL
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str().to_string(), self.failed[i].load(Relaxed)))
                .collect(),
            in_flight: self.in_flight.load(Relaxed),
            latency: self.latency.snapshot(),
            publish_latency: self.publish_latency.snapshot(),
            publish_failures: self.publish_failures.load(Relaxed),
            batches_committed: self.batches_committed.load(Relaxed),
            outputs_committed: self.outputs_committed.load(Relaxed),
            batches_already_stored: self.batches_already_stored.load(Relaxed),
            batches_busy: self.batches_busy.load(Relaxed),
            warm_instances: self.warm_instances.load(Relaxed),
            prepared_instances: self.prepared_instances.load(Relaxed),
            prepared_instances_used: self.prepared_instances_used.load(Relaxed),
            guest_cpu_us: self.guest_cpu_ns.load(Relaxed) / 1_000,
            cpu_parked: self.cpu_parked.load(Relaxed),
            kv: self.calls.kv_snapshot(),
            http: self.calls.http_snapshot(),
        }
    }
}

/// Durations: mean, max and power-of-two upper bounds of p50 and p99.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Durations measured.
    pub count: u64,
    /// Mean, microseconds.
    pub mean_us: u64,
    /// p50 is at most this many microseconds.
    pub p50_us_at_most: u64,
    /// p99 is at most this many microseconds.
    pub p99_us_at_most: u64,
    /// Longest, microseconds.
    pub max_us: u64,
    /// All together, microseconds.
    pub sum_us: u64,
    /// By duration: entry `i` counts those under 2^i microseconds (and at
    /// least 2^(i-1)).
    #[serde(skip)]
    pub buckets: Vec<u64>,
}

/// One subscriber's statistics.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SubscriberSnapshot {
    /// Subscriber name.
    pub name: String,
    /// Its tenant (`None`: the service's own identity).
    pub tenant: Option<String>,
    /// Why it does not run, when it could not be set up.
    pub not_running: Option<String>,
    /// Publishes and requests refused by the tenant's `publishes_per_message`.
    pub quota_refused: u64,
    /// Times a free handler slot waited for the tenant's `concurrency` quota.
    pub concurrency_quota_waits: u64,
    /// Messages received from the server.
    pub received: u64,
    /// Acked by the runtime.
    pub acked: u64,
    /// Nak'd by the runtime (retries, failures, shutdown).
    pub naked: u64,
    /// Termed by the runtime (rejects, max_deliver), dead-lettered included.
    pub termed: u64,
    /// Copied to the dead-letter subject before term.
    pub dead_lettered: u64,
    /// Settled by the guest itself.
    pub settled_by_guest: u64,
    /// Settle calls that failed (the server redelivers after ack_wait).
    pub settle_errors: u64,
    /// Deliveries of messages already handled here (a lost ack, a
    /// recreated durable), acked again without the handler.
    pub replayed: u64,
    /// Deliveries past `max_deliver` (the last handled one did not finish),
    /// dead-lettered or termed without the handler.
    pub past_max_deliver: u64,
    /// Dead-letter copies that left out the payload (or more) to fit.
    pub dead_letter_trimmed: u64,
    /// Times the durable consumer was recreated after it disappeared.
    pub consumer_recreated: u64,
    /// Pull requests given up because the server said nothing for two
    /// idle heartbeats.
    pub pulls_silent: u64,
    /// Times the pull stalled (messages pending, room to take them, nothing
    /// delivered for three pull timeouts) and was got going again.
    pub pulls_stalled: u64,
    /// Calls made again because NATS was unavailable (no stream leader, no
    /// answer in time, the connection down) instead of failing the handler.
    pub nats_unavailable: u64,
    /// Deliveries of a message whose handler still ran here (its
    /// in-progress signals did not reach the server in time): each waited
    /// for that handler instead of running a second one.
    pub redelivered_while_running: u64,
    /// Messages put back from the dead letters (`redrive`), counted at
    /// their first delivery.
    pub redriven: u64,
    /// The consumer is paused on the server.
    pub paused: bool,
    /// The consumer's ack floor (stream sequence) when last looked at.
    pub ack_floor: u64,
    /// Handler returned retry.
    pub retried: u64,
    /// Handler returned reject.
    pub rejected: u64,
    /// Failed invocations by cause (trap, panic, timeout, memory_limit, instantiate, commit).
    pub failed: Vec<(String, u64)>,
    /// Handlers running now.
    pub in_flight: u64,
    /// Handler latency.
    pub latency: LatencySnapshot,
    /// How long the guest's JetStream publishes waited for their PubAck.
    pub publish_latency: LatencySnapshot,
    /// The guest's JetStream publishes that got no PubAck (an error or a timeout).
    pub publish_failures: u64,
    /// Atomic batches committed (`outputs.mode = "atomic"`).
    pub batches_committed: u64,
    /// Outputs those batches stored, as their PubAcks count them.
    pub outputs_committed: u64,
    /// Batches of a redelivery found already committed by an earlier delivery.
    pub batches_already_stored: u64,
    /// Atomic batches refused for too many in flight on the stream, then sent again.
    pub batches_busy: u64,
    /// Idle instances kept for reuse.
    pub warm_instances: u64,
    /// Fresh instances made ahead of need, ready now.
    pub prepared_instances: u64,
    /// Messages that took an instance made ahead of need.
    pub prepared_instances_used: u64,
    /// Guest execution metered (and work on its guests' behalf), microseconds.
    pub guest_cpu_us: u64,
    /// Times one of its guests was parked: over its share of guest CPU, or
    /// its tenant's `cpu` quota.
    pub cpu_parked: u64,
    /// Key-value calls by (operation, outcome); only those that happened.
    pub kv: Vec<(String, String, u64)>,
    /// Outbound HTTP requests by outcome; only those that happened.
    pub http: Vec<(String, u64)>,
}

impl SubscriberSnapshot {
    /// Outbound HTTP requests that ended with `outcome`.
    pub fn http(&self, outcome: HttpOutcome) -> u64 {
        self.http
            .iter()
            .find(|(o, _)| o == outcome.as_str())
            .map_or(0, |(_, n)| *n)
    }

    /// Key-value calls of `op` that ended with `outcome`.
    pub fn kv(&self, op: KvOp, outcome: KvOutcome) -> u64 {
        self.kv
            .iter()
            .find(|(o, r, _)| o == op.as_str() && r == outcome.as_str())
            .map_or(0, |(_, _, n)| *n)
    }

    /// Failed invocations with this cause.
    pub fn failed(&self, cause: FailureCause) -> u64 {
        self.failed
            .iter()
            .find(|(c, _)| c == cause.as_str())
            .map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_latency() {
        let s = SubscriberStats::default();
        for us in [100u64, 200, 300, 5000] {
            s.started();
            s.finished(Duration::from_micros(us), &Outcome::Ok);
            s.settled(Settled::Acked);
        }
        s.started();
        s.failed(FailureCause::Timeout);
        s.settled(Settled::DeadLettered);
        let snap = s.snapshot("x", None);
        assert_eq!(
            (
                snap.received,
                snap.acked,
                snap.termed,
                snap.dead_lettered,
                snap.in_flight
            ),
            (5, 4, 1, 1, 0)
        );
        assert_eq!(snap.failed(FailureCause::Timeout), 1);
        assert_eq!(snap.latency.count, 4);
        assert_eq!(snap.latency.max_us, 5000);
        assert_eq!(snap.latency.mean_us, 1400);
        assert!(
            snap.latency.p50_us_at_most >= 200 && snap.latency.p50_us_at_most <= 512,
            "{:?}",
            snap.latency
        );
        assert_eq!(snap.latency.p99_us_at_most, 5000);
    }
}
