//! Guest CPU: what a subscriber's guests are admitted against before they
//! run and at every epoch tick after — the subscriber's share of its group
//! ([`share`]) and, for a tenant's subscriber, the tenant's `quotas.cpu`
//! ([`budget`]) — and where the time they run is charged.

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
    pub fn admit(&self, tick: Duration) -> Option<Duration> {
        let parked = match self.share.admit(tick) {
            Some(wait) => {
                if let Some(t) = &self.tenant {
                    t.count_parked();
                }
                Some(wait)
            }
            None => {
                let wait = self.tenant.as_ref().and_then(|t| t.admit(tick));
                if wait.is_some() {
                    self.share.release(tick);
                }
                wait
            }
        };
        if parked.is_some() {
            self.stats.cpu_parked();
        }
        parked
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

    /// Admits a guest for its next `tick`, parking it first as long as
    /// its share and its tenant's quota require.
    pub async fn reserve(&self, tick: Duration) {
        if let Some(wait) = self.admit(tick) {
            self.admitted(tick, wait).await;
        }
    }

    /// Parks until a guest can be admitted, then admits it.
    pub async fn admitted(&self, tick: Duration, mut wait: Duration) {
        loop {
            tokio::time::sleep(wait).await;
            match self.admit(tick) {
                None => return,
                Some(w) => wait = w,
            }
        }
    }
}
