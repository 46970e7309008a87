//! A CPU budget (a tenant's `quotas.cpu`, or a subscriber's share, in
//! cores): the time guests actually run is metered per poll of their
//! futures (not epoch ticks, which would count time a parked guest did not
//! run) and drawn from a token bucket that refills at `cores` seconds per
//! second. Before every poll a guest must be admitted, which reserves a
//! tick from the bucket for as long as the poll lasts (at most a tick: the
//! guest yields at every epoch tick), after which the metered time is
//! charged instead; a guest over budget is parked until it can be
//! admitted. Reserving keeps many parked guests from all waking into the
//! same refill, so guests spinning cannot take more than their budget of
//! the cores from the others — nor from the NATS I/O of the process — and
//! a guest waiting for the host (a PubAck, an HTTP answer) holds nothing.

use crate::wasm::clock::{Clock, SystemClock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much unused budget may accumulate, per core: a short burst, never
/// a backlog.
const BURST: Duration = Duration::from_millis(50);

/// A CPU budget, on the system's clock (or `C`).
#[derive(Debug)]
pub struct CpuBudget<C: Clock = SystemClock> {
    clock: C,
    /// The rate, in cores (`f64` bits): a share changes as its group's
    /// busy members come and go.
    cores: AtomicU64,
    since: Instant,
    state: Mutex<Bucket>,
    spent_ns: AtomicU64,
    parked: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    /// Nanoseconds of CPU time that may be spent now (negative: owed).
    tokens: i64,
    refilled: Instant,
    /// Guests parked now: while there are any, only they are admitted, so
    /// a guest that keeps running cannot starve those waiting.
    waiting: u64,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl CpuBudget {
    /// A budget of `cores` cores' worth of guest execution.
    pub fn new(cores: f64) -> CpuBudget {
        CpuBudget::with_clock(cores, SystemClock)
    }
}

impl<C: Clock> CpuBudget<C> {
    /// A budget of `cores` cores' worth of guest execution, timed by `clock`.
    pub fn with_clock(cores: f64, clock: C) -> CpuBudget<C> {
        let now = clock.now();
        CpuBudget {
            clock,
            cores: AtomicU64::new(cores.to_bits()),
            since: now,
            state: Mutex::new(Bucket {
                tokens: (BURST.as_nanos() as f64 * cores) as i64,
                refilled: now,
                waiting: 0,
            }),
            spent_ns: AtomicU64::new(0),
            parked: AtomicU64::new(0),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let cores = self.cores();
        let earned = (now.duration_since(b.refilled).as_nanos() as f64 * cores) as i64;
        let cap = (BURST.as_nanos() as f64 * cores) as i64;
        b.tokens = b.tokens.saturating_add(earned).min(cap);
        b.refilled = now;
    }

    /// Charges `spent` of guest execution.
    pub fn charge(&self, spent: Duration) {
        self.spent_ns.fetch_add(
            u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let mut b = self.state.lock().expect("cpu budget lock");
        self.refill(&mut b, self.clock.now());
        b.tokens = b.tokens.saturating_sub(nanos(spent));
    }

    /// Admits a guest for its next `tick`, reserving it from the bucket,
    /// or says how long to park it first (counting the parking). While
    /// guests are parked, only a `waiter` (one of them) is admitted.
    pub fn admit(&self, tick: Duration, waiter: bool) -> Option<Duration> {
        let mut b = self.state.lock().expect("cpu budget lock");
        self.refill(&mut b, self.clock.now());
        if b.tokens > 0 && (waiter || b.waiting == 0) {
            b.tokens = b.tokens.saturating_sub(nanos(tick));
            return None;
        }
        self.parked.fetch_add(1, Ordering::Relaxed);
        // A guest not yet waiting goes to the back of the line: it waits
        // for the deficit and a tick for each guest parked before it, so
        // that those are served first.
        let owed = (-b.tokens).max(0) as f64;
        let ahead = if waiter { 0 } else { b.waiting };
        let line = ahead as f64 * nanos(tick) as f64;
        let wait_ns = ((owed + line) / self.cores()).ceil() as u64;
        Some(Duration::from_nanos(wait_ns).max(Duration::from_millis(1)))
    }

    /// A guest starts waiting to be admitted.
    pub fn wait_begin(&self) {
        self.state.lock().expect("cpu budget lock").waiting += 1;
    }

    /// A guest waiting to be admitted no longer waits (admitted, or dropped).
    pub fn wait_end(&self) {
        let mut b = self.state.lock().expect("cpu budget lock");
        b.waiting = b.waiting.saturating_sub(1);
    }

    /// Returns a reservation made by [`admit`](Self::admit): the time the
    /// guest actually ran was charged by the metering.
    pub fn release(&self, tick: Duration) {
        let mut b = self.state.lock().expect("cpu budget lock");
        b.tokens = b.tokens.saturating_add(nanos(tick));
    }

    /// Guest execution charged so far.
    pub fn spent(&self) -> Duration {
        Duration::from_nanos(self.spent_ns.load(Ordering::Relaxed))
    }

    /// The rate, in cores.
    pub fn cores(&self) -> f64 {
        f64::from_bits(self.cores.load(Ordering::Relaxed))
    }

    /// Sets the rate to `cores` from now on (what it earned until now was
    /// earned at the old rate).
    pub fn set_cores(&self, cores: f64) {
        if self.cores.load(Ordering::Relaxed) == cores.to_bits() {
            return;
        }
        let mut b = self.state.lock().expect("cpu budget lock");
        self.refill(&mut b, self.clock.now());
        self.cores.store(cores.to_bits(), Ordering::Relaxed);
    }

    /// Guest execution per second of wall-clock time since the budget was
    /// made, in cores: what the quota bounds.
    pub fn cores_used(&self) -> f64 {
        let elapsed = self.clock.now().duration_since(self.since);
        self.spent().as_secs_f64() / elapsed.as_secs_f64().max(1e-9)
    }

    /// Counts a guest parked by a share of this budget.
    pub fn count_parked(&self) {
        self.parked.fetch_add(1, Ordering::Relaxed);
    }

    /// Times a guest was parked for this budget (or a share of it).
    pub fn parked(&self) -> u64 {
        self.parked.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::clock::ManualClock;

    const TICK: Duration = Duration::from_millis(10);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn spending_past_the_budget_parks_for_the_deficit() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(0.5, clock.clone());
        assert_eq!(b.admit(TICK, false), None, "a fresh budget has its burst");
        b.charge(120 * MS);
        b.release(TICK);
        // 25 ms of burst, 120 ms spent: 95 ms owed, repaid at half a core
        // in 190 ms.
        assert_eq!(b.admit(TICK, false), Some(190 * MS));
        clock.advance(190 * MS);
        assert_eq!(
            b.admit(TICK, false),
            Some(MS),
            "a budget exactly repaid holds nothing yet: the shortest park"
        );
        clock.advance(MS);
        assert_eq!(b.admit(TICK, false), None);
        assert_eq!((b.parked(), b.spent()), (2, 120 * MS));
    }

    #[test]
    fn reservations_keep_waking_guests_from_all_running_at_once() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(1.0, clock.clone());
        let admitted = (0..16).filter(|_| b.admit(TICK, false).is_none()).count();
        assert_eq!(admitted, 5, "50 ms of burst admits five 10 ms ticks");
        clock.advance(Duration::from_nanos(1));
        assert_eq!(
            b.admit(TICK, false),
            None,
            "a nanosecond earned admits one more"
        );
        assert!(b.admit(TICK, false).is_some());
    }

    #[test]
    fn a_guest_that_waited_goes_before_one_that_keeps_running() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(1.0, clock.clone());
        b.charge(60 * MS);
        assert_eq!(b.admit(TICK, false), Some(10 * MS), "10 ms owed");
        b.wait_begin();
        clock.advance(11 * MS);
        assert_eq!(
            b.admit(TICK, false),
            Some(10 * MS),
            "a guest that did not wait waits a tick behind the one that did"
        );
        assert_eq!(b.admit(TICK, true), None, "the waiter is admitted");
        b.wait_end();
        b.release(TICK);
        assert_eq!(b.admit(TICK, false), None, "nobody waits: first come");
    }

    #[test]
    fn the_budget_refills_at_its_rate_up_to_a_burst() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(2.0, clock.clone());
        b.charge(150 * MS);
        clock.advance(26 * MS);
        assert_eq!(
            b.admit(TICK, false),
            None,
            "26 ms at two cores repays the 50 ms owed, and a little more"
        );
        b.release(TICK);
        clock.advance(Duration::from_secs(10));
        let admitted = (0..100).filter(|_| b.admit(TICK, false).is_none()).count();
        assert_eq!(
            admitted, 10,
            "ten idle seconds save up the burst (50 ms per core), no more"
        );
        let used = b.cores_used();
        assert!((used - 0.150 / 10.026).abs() < 1e-9, "{used}");
    }
}
