//! A CPU budget (a tenant's `quotas.cpu`, or a subscriber's share, in
//! cores): the time guests actually run is metered per poll of their
//! futures (not epoch ticks, which would count time a parked guest did not
//! run) and drawn from a token bucket that refills at `cores` seconds per
//! second. Before every poll a guest must be admitted, which reserves a
//! tick from the bucket for as long as the poll lasts (at most a tick: the
//! guest yields at every epoch tick), after which the metered time is
//! charged instead. A guest over budget joins a line, first come first
//! served: the guest at its head sleeps until the bucket has refilled (or
//! is woken sooner when a reservation comes back unused), the others until
//! they reach the head. So guests spinning cannot take more than their
//! budget of the cores from the others — nor from the NATS I/O of the
//! process — a guest waiting for the host (a PubAck, an HTTP answer) holds
//! nothing, and the budget is never left unused while a guest waits.

use crate::wasm::clock::{Clock, SystemClock};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::Waker;
use std::time::{Duration, Instant};

/// How much unused budget may accumulate, per core: a short burst, never
/// a backlog.
const BURST: Duration = Duration::from_millis(50);

/// The shortest sleep of the guest at the head of the line.
const SHORTEST_WAIT: Duration = Duration::from_millis(1);

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
    /// Guests waiting to be admitted, in the order they came.
    line: VecDeque<Place>,
    /// The ticket the next guest to join the line gets.
    next_ticket: u64,
}

/// A guest's place in the line: its ticket, and how to wake it.
#[derive(Debug)]
struct Place {
    ticket: u64,
    waker: Waker,
}

/// What a guest asking to run is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Run now: a tick is reserved for the poll.
    Now,
    /// First in line: ask again after this long, or when woken.
    After(Duration),
    /// In line behind others: ask again when woken.
    Queued,
}

/// A guest's ticket in a budget's line, `None` while it is not in it.
pub type Ticket = Option<u64>;

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
                line: VecDeque::new(),
                next_ticket: 0,
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

    /// How long the head of the line sleeps before the bucket holds
    /// something again.
    fn until_refilled(&self, b: &Bucket) -> Duration {
        let owed = (-b.tokens).max(0) as f64;
        Duration::from_nanos((owed / self.cores()).ceil() as u64).max(SHORTEST_WAIT)
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

    /// Admits a guest for its next `tick`, reserving it from the bucket, or
    /// puts it in line (`ticket` keeps its place; `waker` wakes it when it
    /// should ask again). A guest not in line runs only when nobody waits.
    pub fn admit(&self, tick: Duration, ticket: &mut Ticket, waker: &Waker) -> Admission {
        let mut b = self.state.lock().expect("cpu budget lock");
        self.refill(&mut b, self.clock.now());
        let Some(mine) = *ticket else {
            if b.line.is_empty() && b.tokens > 0 {
                b.tokens = b.tokens.saturating_sub(nanos(tick));
                return Admission::Now;
            }
            let mine = b.next_ticket;
            b.next_ticket += 1;
            b.line.push_back(Place {
                ticket: mine,
                waker: waker.clone(),
            });
            *ticket = Some(mine);
            self.parked.fetch_add(1, Ordering::Relaxed);
            return match b.line.len() {
                1 => Admission::After(self.until_refilled(&b)),
                _ => Admission::Queued,
            };
        };
        let Some(at) = b.line.iter().position(|p| p.ticket == mine) else {
            // Not in this line any more (cannot happen while the guest
            // keeps its ticket): it asks again from the back.
            *ticket = None;
            drop(b);
            return self.admit(tick, ticket, waker);
        };
        if at > 0 {
            let place = &mut b.line[at];
            if !place.waker.will_wake(waker) {
                place.waker = waker.clone();
            }
            return Admission::Queued;
        }
        if b.tokens <= 0 {
            b.line[0].waker.clone_from(waker);
            return Admission::After(self.until_refilled(&b));
        }
        b.tokens = b.tokens.saturating_sub(nanos(tick));
        b.line.pop_front();
        *ticket = None;
        let next = b.line.front().map(|p| p.waker.clone());
        drop(b);
        // The next guest starts timing its own wait.
        if let Some(next) = next {
            next.wake();
        }
        Admission::Now
    }

    /// Admits work that never waits in line for its next `tick`: only when
    /// nobody waits and the bucket holds something.
    pub fn try_admit(&self, tick: Duration) -> bool {
        let mut b = self.state.lock().expect("cpu budget lock");
        self.refill(&mut b, self.clock.now());
        if !b.line.is_empty() || b.tokens <= 0 {
            return false;
        }
        b.tokens = b.tokens.saturating_sub(nanos(tick));
        true
    }

    /// Takes a guest out of the line (it is dropped, or admitted elsewhere
    /// no longer matters): the one behind it may be at the head now.
    pub fn leave(&self, ticket: &mut Ticket) {
        let Some(mine) = ticket.take() else { return };
        let mut b = self.state.lock().expect("cpu budget lock");
        let Some(at) = b.line.iter().position(|p| p.ticket == mine) else {
            return;
        };
        b.line.remove(at);
        let next = (at == 0).then(|| b.line.front().map(|p| p.waker.clone()));
        drop(b);
        if let Some(Some(next)) = next {
            next.wake();
        }
    }

    /// Returns a reservation made by [`admit`](Self::admit): the time the
    /// guest actually ran was charged by the metering. The head of the
    /// line is woken when what came back lets it run.
    pub fn release(&self, tick: Duration) {
        let mut b = self.state.lock().expect("cpu budget lock");
        b.tokens = b.tokens.saturating_add(nanos(tick));
        self.wake_head_if_runnable(b);
    }

    fn wake_head_if_runnable(&self, b: std::sync::MutexGuard<'_, Bucket>) {
        let head = (b.tokens > 0).then(|| b.line.front().map(|p| p.waker.clone()));
        drop(b);
        if let Some(Some(head)) = head {
            head.wake();
        }
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
    /// earned at the old rate); the head of the line times its wait anew.
    pub fn set_cores(&self, cores: f64) {
        if self.cores.load(Ordering::Relaxed) == cores.to_bits() {
            return;
        }
        let mut b = self.state.lock().expect("cpu budget lock");
        self.refill(&mut b, self.clock.now());
        self.cores.store(cores.to_bits(), Ordering::Relaxed);
        let head = b.line.front().map(|p| p.waker.clone());
        drop(b);
        if let Some(head) = head {
            head.wake();
        }
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
pub(crate) mod tests {
    use super::*;
    use crate::wasm::clock::ManualClock;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    const TICK: Duration = Duration::from_millis(10);
    const MS: Duration = Duration::from_millis(1);

    /// A waker that counts its wakes.
    #[derive(Default)]
    pub(crate) struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A guest asking a budget to run: its ticket and its waker.
    pub(crate) struct Guest {
        pub(crate) ticket: Ticket,
        pub(crate) woken: Arc<Counted>,
        waker: Waker,
    }

    impl Guest {
        pub(crate) fn new() -> Guest {
            let woken = Arc::new(Counted::default());
            Guest {
                ticket: None,
                waker: Waker::from(woken.clone()),
                woken,
            }
        }

        pub(crate) fn waker(&self) -> &Waker {
            &self.waker
        }

        fn ask<C: Clock>(&mut self, b: &CpuBudget<C>) -> Admission {
            b.admit(TICK, &mut self.ticket, &self.waker)
        }

        pub(crate) fn wakes(&self) -> usize {
            self.woken.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn spending_past_the_budget_parks_for_the_deficit() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(0.5, clock.clone());
        let mut g = Guest::new();
        assert_eq!(g.ask(&b), Admission::Now, "a fresh budget has its burst");
        b.charge(120 * MS);
        b.release(TICK);
        // 25 ms of burst, 120 ms spent: 95 ms owed, repaid at half a core
        // in 190 ms.
        assert_eq!(g.ask(&b), Admission::After(190 * MS));
        clock.advance(190 * MS);
        assert_eq!(
            g.ask(&b),
            Admission::After(MS),
            "a budget exactly repaid holds nothing yet: the shortest park"
        );
        clock.advance(MS);
        assert_eq!(g.ask(&b), Admission::Now);
        assert_eq!(g.ticket, None, "out of the line");
        assert_eq!((b.parked(), b.spent()), (1, 120 * MS));
    }

    #[test]
    fn work_made_ahead_runs_only_when_nobody_waits_and_never_joins_the_line() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(0.5, clock.clone());
        assert!(b.try_admit(TICK), "a fresh budget has its burst");
        b.charge(60 * MS);
        b.release(TICK);
        assert!(!b.try_admit(TICK), "over budget: refused");
        let mut g = Guest::new();
        assert!(
            matches!(g.ask(&b), Admission::After(_)),
            "a guest waits at the head"
        );
        clock.advance(200 * MS);
        assert!(
            !b.try_admit(TICK),
            "refilled, but a guest waits: it goes first"
        );
        assert_eq!(g.ask(&b), Admission::Now, "the guest was not put behind it");
        b.release(TICK);
        assert!(b.try_admit(TICK), "nobody waits: admitted");
        assert_eq!(b.parked(), 1, "only the guest was parked");
    }

    #[test]
    fn reservations_keep_waking_guests_from_all_running_at_once() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(1.0, clock.clone());
        let mut guests: Vec<Guest> = (0..16).map(|_| Guest::new()).collect();
        let admitted = guests
            .iter_mut()
            .map(|g| g.ask(&b))
            .filter(|a| *a == Admission::Now)
            .count();
        assert_eq!(admitted, 5, "50 ms of burst admits five 10 ms ticks");
        assert_eq!(
            guests[5].ask(&b),
            Admission::After(MS),
            "the head times its wait"
        );
        assert_eq!(
            guests[6].ask(&b),
            Admission::Queued,
            "the rest wait their turn"
        );
        clock.advance(Duration::from_nanos(1));
        assert_eq!(
            guests[6].ask(&b),
            Admission::Queued,
            "a nanosecond earned is the head's"
        );
        assert_eq!(guests[5].ask(&b), Admission::Now);
        assert_eq!(
            guests[6].wakes(),
            1,
            "the next in line is woken to time its wait"
        );
        assert_eq!(
            guests[6].ask(&b),
            Admission::After(TICK - Duration::from_nanos(1))
        );
    }

    #[test]
    fn guests_are_admitted_in_the_order_they_came_and_a_running_one_waits_behind() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(1.0, clock.clone());
        b.charge(60 * MS);
        let (mut first, mut second, mut runner) = (Guest::new(), Guest::new(), Guest::new());
        assert_eq!(first.ask(&b), Admission::After(10 * MS), "10 ms owed");
        assert_eq!(second.ask(&b), Admission::Queued);
        clock.advance(11 * MS);
        assert_eq!(
            runner.ask(&b),
            Admission::Queued,
            "a guest that did not wait goes behind those that did"
        );
        assert_eq!(second.ask(&b), Admission::Queued, "not its turn yet");
        assert_eq!(first.ask(&b), Admission::Now);
        assert_eq!(second.ask(&b), Admission::After(9 * MS));
        clock.advance(9 * MS);
        assert_eq!(second.ask(&b), Admission::After(MS), "nothing earned yet");
        clock.advance(MS);
        assert_eq!(second.ask(&b), Admission::Now);
        assert_eq!(runner.wakes(), 1, "its turn came");
        b.release(TICK);
        b.release(TICK);
        assert_eq!(runner.ask(&b), Admission::Now, "the reservations came back");
        let mut newcomer = Guest::new();
        b.release(TICK);
        assert_eq!(newcomer.ask(&b), Admission::Now, "nobody waits: first come");
    }

    #[test]
    fn a_reservation_returned_unused_wakes_the_head_at_once() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(0.1, clock.clone());
        let (mut io, mut waiting) = (Guest::new(), Guest::new());
        assert_eq!(io.ask(&b), Admission::Now);
        assert_eq!(
            waiting.ask(&b),
            Admission::After(50 * MS),
            "5 ms of burst less a 10 ms tick reserved: 5 ms owed at 0.1 cores"
        );
        // The running guest waited on the host: a poll of 0.1 ms.
        b.charge(Duration::from_micros(100));
        b.release(TICK);
        assert_eq!(waiting.wakes(), 1, "woken before its timer");
        assert_eq!(waiting.ask(&b), Admission::Now);
    }

    #[test]
    fn a_guest_leaving_the_head_of_the_line_hands_it_on() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(1.0, clock.clone());
        b.charge(60 * MS);
        let (mut dropped, mut next) = (Guest::new(), Guest::new());
        assert!(matches!(dropped.ask(&b), Admission::After(_)));
        assert_eq!(next.ask(&b), Admission::Queued);
        b.leave(&mut dropped.ticket);
        assert_eq!(next.wakes(), 1);
        assert_eq!(next.ask(&b), Admission::After(10 * MS));
        b.leave(&mut dropped.ticket);
        assert_eq!(next.wakes(), 1, "leaving twice is leaving once");
    }

    #[test]
    fn the_budget_refills_at_its_rate_up_to_a_burst() {
        let clock = ManualClock::new();
        let b = CpuBudget::with_clock(2.0, clock.clone());
        b.charge(150 * MS);
        clock.advance(26 * MS);
        let mut g = Guest::new();
        assert_eq!(
            g.ask(&b),
            Admission::Now,
            "26 ms at two cores repays the 50 ms owed, and a little more"
        );
        b.release(TICK);
        clock.advance(Duration::from_secs(10));
        let admitted = (0..100)
            .filter(|_| Guest::new().ask(&b) == Admission::Now)
            .count();
        assert_eq!(
            admitted, 10,
            "ten idle seconds save up the burst (50 ms per core), no more"
        );
        let used = b.cores_used();
        assert!((used - 0.150 / 10.026).abs() < 1e-9, "{used}");
    }
}
