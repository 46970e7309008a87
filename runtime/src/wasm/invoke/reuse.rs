//! The idle instances of a handler with `instances = "reuse"`: the last
//! one back is the first one out, so the ones in use stay hot in the
//! caches.

use super::Warm;
use crate::counters::SubscriberStats;
use std::sync::{Arc, Mutex, Weak};

/// Idle instances kept for reuse.
pub(super) struct ReusePool {
    idle: Arc<Mutex<Vec<Warm>>>,
    stats: Arc<SubscriberStats>,
}

impl ReusePool {
    /// An empty pool, counting its idle instances in `stats`.
    pub(super) fn new(stats: Arc<SubscriberStats>) -> Self {
        ReusePool {
            idle: Arc::default(),
            stats,
        }
    }

    /// The idle instances, for a tenant's memory pool to drop when one of
    /// its running instances needs the room.
    pub(super) fn idle(&self) -> Weak<Mutex<Vec<Warm>>> {
        Arc::downgrade(&self.idle)
    }

    /// An idle instance, if one is.
    pub(super) fn take(&self) -> Option<Warm> {
        let mut idle = self.idle.lock().expect("pool lock");
        let warm = idle.pop();
        self.stats.set_warm_instances(idle.len());
        warm
    }

    /// Keeps `warm` for the next message.
    pub(super) fn put(&self, warm: Warm) {
        let mut idle = self.idle.lock().expect("pool lock");
        idle.push(warm);
        self.stats.set_warm_instances(idle.len());
    }
}
