//! Guest CPU: what a subscriber's guests are admitted against before each
//! poll — the subscriber's share of its group ([`share`]) and, for a
//! tenant's subscriber, the tenant's `quotas.cpu` ([`budget`]) — and where
//! the time they run is charged.

pub mod budget;
pub mod share;

pub use budget::{Admission, CpuBudget, Ticket};
pub use share::{Busy, CpuGroup, CpuShare};

use crate::counters::SubscriberStats;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

/// A subscriber's guest CPU: its share, its tenant's quota, and its counters.
pub struct GuestCpu {
    share: CpuShare,
    tenant: Option<Arc<CpuBudget>>,
    stats: Arc<SubscriberStats>,
}

impl GuestCpu {
    /// A share of `group`, within `tenant`'s quota when there is one,
    /// counted in `stats`.
    pub fn new(
        group: &Arc<CpuGroup>,
        tenant: Option<Arc<CpuBudget>>,
        stats: Arc<SubscriberStats>,
    ) -> GuestCpu {
        GuestCpu {
            share: group.join(),
            tenant,
            stats,
        }
    }

    /// Marks the subscriber busy while a handler runs.
    pub fn busy(&self) -> Busy {
        self.share.busy()
    }

    /// Admits a guest for its next `tick` by its share, then by its
    /// tenant's quota, or puts it in the line of the first that cannot
    /// admit it now (counting the parking); `waiting` keeps its places.
    /// A share's admission is held while the guest waits for its tenant:
    /// each line is waited in once.
    pub fn admit(&self, tick: Duration, waiting: &mut Waiting<'_>, waker: &Waker) -> Admission {
        if waiting.share_held.is_none() {
            let queued = waiting.share.is_some();
            match self.share.admit(tick, &mut waiting.share, waker) {
                Admission::Now => waiting.share_held = Some(tick),
                parked => {
                    if !queued {
                        self.count_parked();
                    }
                    return parked;
                }
            }
        }
        if let Some(t) = &self.tenant {
            let queued = waiting.tenant.is_some();
            match t.admit(tick, &mut waiting.tenant, waker) {
                Admission::Now => {}
                parked => {
                    if !queued {
                        self.stats.cpu_parked();
                    }
                    return parked;
                }
            }
        }
        waiting.share_held = None;
        Admission::Now
    }

    /// Admits work no message waits for (an instance made ahead of need)
    /// for its next `tick` when its share and its tenant's quota can run it
    /// now and nobody waits in their lines. It never joins a line, so no
    /// guest ever waits behind it; refused, it asks again later.
    pub fn try_admit(&self, tick: Duration) -> bool {
        if !self.share.try_admit(tick) {
            return false;
        }
        if let Some(t) = &self.tenant {
            if !t.try_admit(tick) {
                self.share.release(tick);
                return false;
            }
        }
        true
    }

    /// Counts a guest parked by its share.
    fn count_parked(&self) {
        if let Some(t) = &self.tenant {
            t.count_parked();
        }
        self.stats.cpu_parked();
    }

    /// What a guest of this subscriber waits on: nothing yet.
    pub fn waiting(&self) -> Waiting<'_> {
        Waiting {
            cpu: self,
            share: None,
            tenant: None,
            share_held: None,
        }
    }

    /// Returns a reservation made by [`admit`](Self::admit): the time the
    /// guest actually ran was charged by the metering.
    pub fn release(&self, tick: Duration) {
        self.share.release(tick);
        if let Some(t) = &self.tenant {
            t.release(tick);
        }
    }

    /// Charges `spent` of guest execution (or of work on the guest's behalf).
    pub fn charge(&self, spent: Duration) {
        self.share.charge(spent);
        if let Some(t) = &self.tenant {
            t.charge(spent);
        }
        self.stats.guest_cpu(spent);
    }
}

/// The lines a guest waits in (see [`GuestCpu::admit`]); dropping it
/// leaves them, and returns a share's admission held.
pub struct Waiting<'a> {
    cpu: &'a GuestCpu,
    share: Ticket,
    tenant: Ticket,
    /// The tick its share admitted it for, while it waits for its tenant.
    share_held: Option<Duration>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.cpu.share.leave(&mut self.share);
        if let Some(t) = &self.cpu.tenant {
            t.leave(&mut self.tenant);
        }
        if let Some(tick) = self.share_held {
            self.cpu.share.release(tick);
        }
    }
}
