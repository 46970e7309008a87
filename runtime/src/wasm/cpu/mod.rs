//! Guest CPU: what a subscriber's guests are admitted against before each
//! poll — the subscriber's share of its group ([`share`]) and, for a
//! tenant's subscriber, the tenant's `quotas.cpu` ([`budget`]) — and where
//! the time they run is charged.

pub mod budget;
pub mod share;

pub use budget::CpuBudget;
pub use share::{Busy, CpuGroup, CpuShare};

use crate::counters::SubscriberStats;
use std::sync::Arc;
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

    /// Admits a guest for its next `tick` by its share and its tenant's
    /// quota, or says how long to park it first (counting the parking).
    /// A budget with guests parked on it admits only those (`waiting`
    /// says which budgets this guest waits on, and is kept up to date): a
    /// guest that keeps running cannot starve those parked.
    pub fn admit(&self, tick: Duration, waiting: &mut Waiting<'_>) -> Option<Duration> {
        let parked = match self.share.admit(tick, waiting.share) {
            Some(wait) => {
                if !waiting.share {
                    self.share.wait_begin();
                    waiting.share = true;
                }
                Some(wait)
            }
            None => {
                if waiting.share {
                    self.share.wait_end();
                    waiting.share = false;
                }
                match &self.tenant {
                    None => None,
                    Some(t) => match t.admit(tick, waiting.tenant) {
                        Some(wait) => {
                            self.share.release(tick);
                            if !waiting.tenant {
                                t.wait_begin();
                                waiting.tenant = true;
                            }
                            Some(wait)
                        }
                        None => {
                            if waiting.tenant {
                                t.wait_end();
                                waiting.tenant = false;
                            }
                            None
                        }
                    },
                }
            }
        };
        if parked.is_some() {
            if let (false, Some(t)) = (waiting.tenant, &self.tenant) {
                t.count_parked();
            }
            self.stats.cpu_parked();
        }
        parked
    }

    /// What a guest of this subscriber waits on: nothing yet.
    pub fn waiting(&self) -> Waiting<'_> {
        Waiting {
            cpu: self,
            share: false,
            tenant: false,
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

/// The budgets a guest is parked on (see [`GuestCpu::admit`]); dropping it
/// stops the waiting.
pub struct Waiting<'a> {
    cpu: &'a GuestCpu,
    share: bool,
    tenant: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.share {
            self.cpu.share.wait_end();
        }
        if let (true, Some(t)) = (self.tenant, &self.cpu.tenant) {
            t.wait_end();
        }
    }
}
