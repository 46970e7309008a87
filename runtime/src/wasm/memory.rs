//! Guest memory limits: `limits.memory` caps one instance — all of its
//! linear memories together, not each one — and a tenant's `quotas.memory`
//! caps the memory all its live instances hold at once (a warm instance
//! holds its memory until it is dropped, or until a growth of the same
//! tenant needs it). A growth past either fails with a trap the runtime
//! counts as `memory_limit`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Drops a subscriber's idle warm instances; returns how many it dropped.
pub type Reclaim = Box<dyn Fn() -> usize + Send + Sync>;

/// The memory a tenant's live instances hold, against its quota. When a
/// growth does not fit, the idle warm instances of the tenant's
/// subscribers are dropped to make room before it is refused, so one
/// subscriber's idle instances cannot starve a sibling.
pub struct MemoryPool {
    quota: u64,
    held: AtomicU64,
    reclaimers: Mutex<Vec<Reclaim>>,
    reclaimed: AtomicU64,
}

impl std::fmt::Debug for MemoryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPool")
            .field("quota", &self.quota)
            .field("held", &self.held())
            .field("reclaimed", &self.reclaimed())
            .finish()
    }
}

impl MemoryPool {
    /// A pool of `quota` bytes.
    pub fn new(quota: u64) -> MemoryPool {
        MemoryPool {
            quota,
            held: AtomicU64::new(0),
            reclaimers: Mutex::new(Vec::new()),
            reclaimed: AtomicU64::new(0),
        }
    }

    /// Registers a subscriber's way to drop its idle instances.
    pub fn reclaim_with(&self, reclaim: Reclaim) {
        self.reclaimers
            .lock()
            .expect("reclaimers lock")
            .push(reclaim);
    }

    /// Takes `bytes` from the quota; when they do not fit and `reclaim`,
    /// idle instances are dropped to make room first.
    fn reserve(&self, bytes: u64, reclaim: bool) -> bool {
        let fits = || {
            self.held
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                    held.checked_add(bytes).filter(|total| *total <= self.quota)
                })
                .is_ok()
        };
        if fits() {
            return true;
        }
        if !reclaim {
            return false;
        }
        let dropped: usize = self
            .reclaimers
            .lock()
            .expect("reclaimers lock")
            .iter()
            .map(|reclaim| reclaim())
            .sum();
        self.reclaimed.fetch_add(dropped as u64, Ordering::Relaxed);
        // Also when nothing was dropped here: a sibling's reclaim or a
        // retired instance may have made room meanwhile.
        fits()
    }

    fn release(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// The quota, in bytes.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Idle instances dropped so far to make room for a growth.
    pub fn reclaimed(&self) -> u64 {
        self.reclaimed.load(Ordering::Relaxed)
    }
}

/// One store's memory limiter.
#[derive(Default)]
pub struct MemoryLimiter {
    /// The cap of one instance, in bytes (`limits.memory`).
    pub max: u64,
    /// The tenant's pool, when it has a memory quota.
    pub pool: Option<Arc<MemoryPool>>,
    /// Bytes this store's memories hold.
    held: u64,
    /// Set when a growth was refused.
    pub exceeded: bool,
    /// An instance made ahead of need: its growth never drops other
    /// instances to make room (see `invoke::prepared`).
    pub ahead: bool,
}

/// The error that turns a refused `memory.grow` into a trap.
#[derive(Debug, thiserror::Error)]
pub enum MemoryLimitExceeded {
    /// Past `limits.memory`.
    #[error("memory limit of {limit} bytes exceeded (the instance would hold {desired} bytes)")]
    Instance {
        /// The cap.
        limit: u64,
        /// What the instance would hold.
        desired: u64,
    },
    /// Past the tenant's `quotas.memory`.
    #[error("the tenant's memory quota of {quota} bytes is held by its instances (this one asked for {asked} more)")]
    Tenant {
        /// The quota.
        quota: u64,
        /// The growth refused.
        asked: u64,
    },
}

impl MemoryLimiter {
    /// A limiter of `max` bytes per instance, drawing on `pool`.
    pub fn new(max: u64, pool: Option<Arc<MemoryPool>>) -> MemoryLimiter {
        MemoryLimiter {
            max,
            pool,
            held: 0,
            exceeded: false,
            ahead: false,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = (desired as u64).saturating_sub(current as u64);
        let total = self.held.saturating_add(grow);
        if total > self.max {
            self.exceeded = true;
            return Err(MemoryLimitExceeded::Instance {
                limit: self.max,
                desired: total,
            }
            .into());
        }
        if let Some(pool) = &self.pool {
            if !pool.reserve(grow, !self.ahead) {
                self.exceeded = true;
                return Err(MemoryLimitExceeded::Tenant {
                    quota: pool.quota,
                    asked: grow,
                }
                .into());
            }
        }
        self.held = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.release(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_instance_limit_covers_all_its_memories() {
        let mut l = MemoryLimiter::new(10 * MIB as u64, None);
        assert!(l.memory_growing(0, 6 * MIB, None).unwrap());
        // A second memory of the same instance: 6 + 6 MiB is past 10 MiB.
        assert!(l.memory_growing(0, 6 * MIB, None).is_err());
        assert!(l.exceeded);
    }

    #[test]
    fn the_tenant_pool_is_shared_and_given_back() {
        let pool = Arc::new(MemoryPool::new(10 * MIB as u64));
        let mut a = MemoryLimiter::new(64 * MIB as u64, Some(pool.clone()));
        let mut b = MemoryLimiter::new(64 * MIB as u64, Some(pool.clone()));
        assert!(a.memory_growing(0, 8 * MIB, None).unwrap());
        let refused = b.memory_growing(0, 4 * MIB, None).unwrap_err();
        assert!(refused
            .to_string()
            .starts_with("the tenant's memory quota of 10485760 bytes"));
        drop(a);
        assert_eq!(pool.held(), 0);
        assert!(b.memory_growing(0, 4 * MIB, None).unwrap());
    }

    /// A 10 MiB pool, 8 MiB of it held by an idle instance its reclaimer
    /// drops.
    fn pool_with_an_idle_instance() -> (Arc<MemoryPool>, Arc<Mutex<Vec<MemoryLimiter>>>) {
        let pool = Arc::new(MemoryPool::new(10 * MIB as u64));
        let idle = Arc::new(Mutex::new(vec![MemoryLimiter::new(
            64 * MIB as u64,
            Some(pool.clone()),
        )]));
        assert!(idle.lock().unwrap()[0]
            .memory_growing(0, 8 * MIB, None)
            .unwrap());
        let held = idle.clone();
        pool.reclaim_with(Box::new(move || {
            std::mem::take(&mut *held.lock().unwrap()).len()
        }));
        (pool, idle)
    }

    #[test]
    fn idle_instances_are_dropped_to_make_room() {
        let (pool, idle) = pool_with_an_idle_instance();
        let mut running = MemoryLimiter::new(64 * MIB as u64, Some(pool.clone()));
        assert!(running.memory_growing(0, 4 * MIB, None).unwrap());
        assert_eq!((pool.held(), pool.reclaimed()), (4 * MIB as u64, 1));
        assert!(
            idle.lock().unwrap().is_empty(),
            "the idle instance is dropped"
        );
        // Nothing idle left: past the quota is refused.
        assert!(running.memory_growing(4 * MIB, 12 * MIB, None).is_err());
        assert_eq!(pool.reclaimed(), 1);
    }

    #[test]
    fn an_instance_made_ahead_never_takes_the_room_of_others() {
        let (pool, idle) = pool_with_an_idle_instance();
        let mut ahead = MemoryLimiter::new(64 * MIB as u64, Some(pool.clone()));
        ahead.ahead = true;
        assert!(ahead.memory_growing(0, 4 * MIB, None).is_err());
        assert_eq!((pool.held(), pool.reclaimed()), (8 * MIB as u64, 0));
        assert_eq!(idle.lock().unwrap().len(), 1, "the idle instance is kept");
    }
}
