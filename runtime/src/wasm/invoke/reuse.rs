//! The idle instances of a handler with `instances = "reuse"`: the last
//! one back is the first one out, so the ones in use stay hot in the
//! caches.

use super::Warm;
use crate::counters::SubscriberStats;
use crate::wasm::memory::MemoryPool;
use std::sync::{Arc, Mutex};

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

    /// Lets `memory`, its tenant's pool, drop the idle instances when one
    /// of its running instances needs the room.
    pub(super) fn give_way_to(&self, memory: &MemoryPool) {
        let (idle, stats) = (Arc::downgrade(&self.idle), self.stats.clone());
        memory.reclaim_with(Box::new(move || {
            let Some(idle) = idle.upgrade() else { return 0 };
            let dropped = {
                let mut idle = idle.lock().expect("pool lock");
                stats.set_warm_instances(0);
                std::mem::take(&mut *idle)
            };
            dropped.len()
        }));
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
