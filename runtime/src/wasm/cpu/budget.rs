//! A CPU budget (a tenant's `quotas.cpu`, or a subscriber's share, in
//! cores): the time guests actually run is metered per poll of their
//! futures (not epoch ticks, which would count time a parked guest did not
//! run) and drawn from a token bucket that refills at `cores` seconds per
//! second. At every epoch tick a guest must be admitted for the next tick,
//! which reserves a tick from the bucket (returned at the following tick,
//! when the metered time has been charged instead); a guest over budget is
//! parked until it can be admitted. Reserving keeps many parked guests from
//! all waking into the same refill, so guests spinning cannot take more
//! than their budget of the cores from the others — nor from the NATS I/O
//! of the process.

use crate::wasm::clock::{Clock, SystemClock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much unused budget may accumulate, per core: one epoch tick, so
/// that after idling or at start guests run at most about a tick ahead of
/// their budget, never on a backlog.
const BURST: Duration = crate::wasm::EPOCH_TICK;

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
    /// or says how long to park it first (counting the parking).
    pub fn admit(&self, tick: Duration) -> Option<Duration> {
        let mut b = self.state.lock().expect("cpu budget lock");
        self.refill(&mut b, self.clock.now());
        if b.tokens > 0 {
            b.tokens = b.tokens.saturating_sub(nanos(tick));
            return None;
        }
        self.parked.fetch_add(1, Ordering::Relaxed);
        let owed_ns = (-(b.tokens as f64) / self.cores()).ceil() as u64;
        Some(Duration::from_nanos(owed_ns).max(Duration::from_millis(1)))
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
        assert_eq!(b.admit(TICK), None, "a fresh budget has its burst");
        b.charge(120 * MS);
        b.release(TICK);
        // 5 ms of burst, 120 ms spent: 115 ms owed, repaid at half a core
        // in 230 ms.
        assert_eq!(b.admit(TICK), Some(230 * MS));
        clock.advance(230 * MS);
        assert_eq!(
            b.admit(TICK),
            Some(MS),
            "a budget exactly repaid holds nothing yet: the shortest park"
        );
        clock.advance(MS);
        assert_eq!(b.admit(TICK), None);
        assert_eq!((b.parked(), b.spent()), (2, 120 * MS));
    }

    #[test]
    fn reservations_keep_waking_guests_from_all_running_at_once() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(1.0, clock.clone());
        let admitted = (0..16).filter(|_| b.admit(TICK).is_none()).count();
        assert_eq!(admitted, 1, "10 ms of burst admits one 10 ms tick");
        clock.advance(Duration::from_nanos(1));
        assert_eq!(b.admit(TICK), None, "a nanosecond earned admits one more");
        assert!(b.admit(TICK).is_some());
    }

    #[test]
    fn the_budget_refills_at_its_rate_up_to_a_burst() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(2.0, clock.clone());
        b.charge(150 * MS);
        clock.advance(66 * MS);
        assert_eq!(
            b.admit(TICK),
            None,
            "66 ms at two cores repays the 130 ms owed, and a little more"
        );
        b.release(TICK);
        clock.advance(Duration::from_secs(10));
        let admitted = (0..100).filter(|_| b.admit(TICK).is_none()).count();
        assert_eq!(
            admitted, 2,
            "ten idle seconds save up the burst (10 ms per core), no more"
        );
        let used = b.cores_used();
        assert!((used - 0.150 / 10.066).abs() < 1e-9, "{used}");
    }
}
