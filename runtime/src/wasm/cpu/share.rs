//! Guest CPU shared between the subscribers of one group — a tenant's,
//! whose pool is its `quotas.cpu`, or the service's own subscribers, which
//! act as one implicit tenant whose pool is every core but one (the one
//! left is for the host's NATS I/O). Each subscriber has a budget of its
//! own whose rate is the pool divided by the group's busy subscribers: a
//! subscriber whose guests spin takes at most its share while a sibling
//! has work, whatever its concurrency, and the whole pool when it is alone.
//! A subscriber is busy while one of its handlers runs and for
//! [`BUSY_GRACE`] after, so a sibling between two pulls keeps its share.

use super::budget::{Admission, CpuBudget, Ticket};
use crate::wasm::clock::{Clock, SystemClock};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

/// How long a subscriber counts as busy after its last handler ended.
pub const BUSY_GRACE: Duration = Duration::from_millis(100);
/// How long a share's rate stands before its group's busy members are
/// counted again: every poll of every guest asks for it, and counting
/// takes the group's lock.
const RATE_STANDS: Duration = Duration::from_millis(10);

/// The guest CPU pool of the service's own subscribers: every core but one,
/// at least one.
pub fn service_pool() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.saturating_sub(1).max(1) as f64
}

/// The subscribers sharing one pool of guest CPU.
#[derive(Debug)]
pub struct CpuGroup<C: Clock = SystemClock> {
    clock: C,
    /// In cores.
    pool: f64,
    origin: Instant,
    members: Mutex<Vec<Weak<Member>>>,
}

/// One subscriber's presence in its group.
#[derive(Debug, Default)]
struct Member {
    /// Its handlers running now.
    running: AtomicUsize,
    /// When its last handler ended, in nanoseconds since the group's
    /// origin, plus one; 0 before any has.
    ended: AtomicU64,
}

impl CpuGroup {
    /// A group sharing `pool` cores.
    pub fn new(pool: f64) -> Arc<CpuGroup> {
        CpuGroup::with_clock(pool, SystemClock)
    }
}

impl<C: Clock + Clone> CpuGroup<C> {
    /// A group sharing `pool` cores, timed by `clock`.
    pub fn with_clock(pool: f64, clock: C) -> Arc<CpuGroup<C>> {
        Arc::new(CpuGroup {
            origin: clock.now(),
            clock,
            pool,
            members: Mutex::default(),
        })
    }

    /// The pool, in cores.
    pub fn pool(&self) -> f64 {
        self.pool
    }

    /// A share of this group for one more subscriber.
    pub fn join(self: &Arc<Self>) -> CpuShare<C> {
        let member = Arc::new(Member::default());
        self.members
            .lock()
            .expect("cpu group lock")
            .push(Arc::downgrade(&member));
        CpuShare {
            budget: CpuBudget::with_clock(self.pool, self.clock.clone()),
            group: self.clone(),
            member,
            rate_set: AtomicU64::new(0),
        }
    }
}

impl<C: Clock> CpuGroup<C> {
    fn since_origin(&self) -> u64 {
        let d = self.clock.now().duration_since(self.origin);
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Its members busy now (forgetting those gone).
    fn busy(&self) -> usize {
        let now = self.since_origin();
        let grace = BUSY_GRACE.as_nanos() as u64;
        let mut members = self.members.lock().expect("cpu group lock");
        members.retain(|m| m.strong_count() > 0);
        members
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|m| {
                let ended = m.ended.load(Ordering::Acquire);
                m.running.load(Ordering::Acquire) > 0
                    || (ended > 0 && now.saturating_sub(ended - 1) < grace)
            })
            .count()
    }
}

/// A subscriber's share of its group's pool.
#[derive(Debug)]
pub struct CpuShare<C: Clock = SystemClock> {
    budget: CpuBudget<C>,
    group: Arc<CpuGroup<C>>,
    member: Arc<Member>,
    /// When its budget's rate was last set, in nanoseconds since the
    /// group's origin, plus one; 0 before it was.
    rate_set: AtomicU64,
}

/// Marks its subscriber busy until dropped.
pub struct Busy<C: Clock = SystemClock> {
    member: Arc<Member>,
    group: Arc<CpuGroup<C>>,
}

impl<C: Clock> Drop for Busy<C> {
    fn drop(&mut self) {
        let now = self.group.since_origin();
        self.member.ended.fetch_max(now + 1, Ordering::AcqRel);
        self.member.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<C: Clock + Clone> CpuShare<C> {
    /// Marks the subscriber busy while a handler runs.
    pub fn busy(&self) -> Busy<C> {
        self.member.running.fetch_add(1, Ordering::AcqRel);
        Busy {
            member: self.member.clone(),
            group: self.group.clone(),
        }
    }

    /// Its rate now: the pool divided by the group's busy members (itself
    /// among them, as a guest of its asks).
    pub fn cores(&self) -> f64 {
        self.group.pool / self.group.busy().max(1) as f64
    }

    /// Admits a guest for its next `tick` at the share's current rate, or
    /// puts it in line (see [`CpuBudget::admit`]).
    pub fn admit(&self, tick: Duration, ticket: &mut Ticket, waker: &Waker) -> Admission {
        self.update_rate();
        self.budget.admit(tick, ticket, waker)
    }

    /// Admits work that never waits in line (see [`CpuBudget::try_admit`]).
    pub fn try_admit(&self, tick: Duration) -> bool {
        self.update_rate();
        self.budget.try_admit(tick)
    }

    /// Sets the budget's rate again once the last one has stood for
    /// [`RATE_STANDS`].
    fn update_rate(&self) {
        let now = self.group.since_origin() + 1;
        let set = self.rate_set.load(Ordering::Relaxed);
        if set == 0 || now.saturating_sub(set) >= RATE_STANDS.as_nanos() as u64 {
            self.rate_set.store(now, Ordering::Relaxed);
            self.budget.set_cores(self.cores());
        }
    }

    /// Takes a guest out of the line.
    pub fn leave(&self, ticket: &mut Ticket) {
        self.budget.leave(ticket);
    }

    /// Returns a reservation made by [`admit`](Self::admit).
    pub fn release(&self, tick: Duration) {
        self.budget.release(tick);
    }

    /// Charges `spent` of guest execution.
    pub fn charge(&self, spent: Duration) {
        self.budget.charge(spent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::clock::ManualClock;
    use crate::wasm::cpu::budget::tests::Guest;

    const TICK: Duration = Duration::from_millis(10);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_busy_siblings_presence_halves_a_spinners_share() {
        let clock = ManualClock::new();
        let group = CpuGroup::with_clock(1.0, clock.clone());
        let spinner = group.join();
        let quiet = group.join();
        let _spinning = spinner.busy();
        assert_eq!(spinner.cores(), 1.0, "alone, it has the whole pool");
        let handling = quiet.busy();
        assert_eq!(spinner.cores(), 0.5, "beside a busy sibling, half");
        drop(handling);
        clock.advance(BUSY_GRACE - MS);
        assert_eq!(
            spinner.cores(),
            0.5,
            "a sibling between two messages keeps its share"
        );
        clock.advance(MS);
        assert_eq!(spinner.cores(), 1.0, "an idle sibling gives it back");
        drop(quiet);
        assert_eq!(group.members.lock().unwrap().len(), 2);
        let _ = group.busy();
        assert_eq!(
            group.members.lock().unwrap().len(),
            1,
            "a gone member is forgotten"
        );
    }

    #[test]
    fn a_share_parks_its_guests_at_the_shares_rate() {
        let clock = ManualClock::new();
        let group = CpuGroup::with_clock(1.0, clock.clone());
        let spinner = group.join();
        let quiet = group.join();
        let _spinning = spinner.busy();
        let _handling = quiet.busy();
        let mut guest = Guest::new();
        let mut ask = |share: &CpuShare<ManualClock>| {
            let waker = guest.waker().clone();
            share.admit(TICK, &mut guest.ticket, &waker)
        };
        assert_eq!(ask(&spinner), Admission::Now, "a fresh share has its burst");
        spinner.charge(100 * MS);
        spinner.release(TICK);
        // 25 ms of burst at half a core, 100 ms spent: 75 ms owed, repaid
        // at half a core in 150 ms.
        assert_eq!(ask(&spinner), Admission::After(150 * MS));
        clock.advance(151 * MS);
        assert_eq!(ask(&spinner), Admission::Now);
    }
}
