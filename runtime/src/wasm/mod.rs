//! Steps 4–5 of the data flow: the WebAssembly side. One [`WasmRuntime`]
//! (engine, linker, epoch ticker) per service; each subscriber's component is
//! compiled once and pre-instantiated at start-up (`component`); each
//! message runs in a fresh store with its limits (`invoke`).

pub mod cache;
pub mod clock;
pub mod compile;
pub mod component;
pub mod cpu;
pub mod guest_log;
pub mod host;
pub mod invoke;
pub mod memory;
pub mod rate;

use host::HostState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A running guest yields to the scheduler at
/// every tick, so the wall-clock limit and in-progress heartbeats stay
/// responsive even while a guest loops.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why the WebAssembly engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The compiled-component cache folder is not safe to load code from.
    #[error(transparent)]
    Cache(#[from] cache::UntrustedCache),
    /// wasmtime refused the engine's settings or the host's imports.
    #[error("cannot start the WebAssembly engine")]
    Wasmtime(#[source] component::BoxError),
    /// The epoch ticker's thread could not start.
    #[error("cannot start the WebAssembly engine's epoch ticker")]
    Ticker(#[source] std::io::Error),
}

/// Why a changed configuration needs more of the engine than it was
/// started with (a restart makes a new one).
#[derive(Debug, thiserror::Error)]
pub enum PoolTooSmall {
    /// More handlers at once than instance slots.
    #[error("the subscribers' concurrency adds up to {needed}, more than the {slots} instance slots the engine was started with")]
    Instances {
        /// What the configuration needs.
        needed: u32,
        /// What the pool has.
        slots: u32,
    },
    /// A memory limit above the slots' size.
    #[error("a subscriber's memory limit of {needed} MiB is more than the {slots} MiB the engine's instance slots were made with")]
    Memory {
        /// What the configuration needs, in MiB.
        needed: u64,
        /// What the slots hold, in MiB.
        slots: u64,
    },
}

/// How many instances may be live at once, and how large their memories
/// may grow: sizes the pooling allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    /// Component instances live at once (the services' total concurrency).
    pub instances: u32,
    /// The largest memory any subscriber may have, in bytes.
    pub max_memory: u64,
}

impl PoolSize {
    /// The pool a service needs: one slot per handler that can run at
    /// once, its subscribers' and its endpoints'.
    pub fn for_config(config: &crate::config::Config) -> Self {
        let handlers =
            || (config.subscribers.iter()).chain(config.endpoints.iter().map(|e| &e.handler));
        // A handler runs at most `concurrency` instances, and keeps its
        // prepared ones beside them.
        let prepared = |s: &crate::config::SubscriberConfig| match s.instances {
            crate::config::Instances::PerMessage { prepared } => prepared as u64,
            crate::config::Instances::Reuse { .. } => 0,
        };
        let instances = handlers()
            .map(|s| s.concurrency as u64 + prepared(s))
            .sum::<u64>()
            .clamp(1, 10_000) as u32;
        let max_memory = handlers()
            .map(|s| s.memory)
            .max()
            .unwrap_or(crate::config::defaults::MEMORY);
        PoolSize {
            instances,
            max_memory,
        }
    }

    /// The pool to start with for a service that needs `self`: room for a
    /// reload to add subscribers or raise a memory limit to the default
    /// without a restart. Unused slots are address space, not memory.
    pub fn with_headroom(self) -> Self {
        PoolSize {
            instances: self.instances.max(RELOAD_HEADROOM_SLOTS),
            max_memory: self.max_memory.max(crate::config::defaults::MEMORY),
        }
    }
}

/// Instance slots a pool has at least, so reloads can add subscribers.
const RELOAD_HEADROOM_SLOTS: u32 = 64;

/// Core instances, memories and tables one component may have (a Python or
/// JavaScript component has many more than a Rust one).
const CORE_INSTANCES_PER_COMPONENT: u32 = 50;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 50;
/// Most memory slots the pool reserves. Each slot reserves a 4 GiB region
/// of address space (not memory); 2048 of them are 8 TiB of the 128 TiB a
/// process has. A service that could need more uses on-demand allocation.
const MAX_POOLED_MEMORIES: u32 = 2048;
/// Bytes of linear memory a pool slot keeps resident between instances:
/// the pages the last instance touched, up to 1 MiB, where the kernel can
/// say which those are (the PAGEMAP_SCAN ioctl, Linux 6.7+); elsewhere
/// wasmtime resets the whole span with memset, so keep it to 64 KiB.
fn memory_keep_resident() -> usize {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if pagemap_scan_supported(&release) {
        1 << 20
    } else {
        1 << 16
    }
}

/// Whether a Linux release string ("6.18.44-…") is 6.7 or later.
fn pagemap_scan_supported(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}

/// Slots decommitted together.
const DECOMMIT_BATCH: u32 = 16;

/// How many slots may wait for their decommit at once: one queue per CPU
/// (at most 16), each flushed when it holds `DECOMMIT_BATCH` slots.
fn decommit_queue() -> u32 {
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16) as u32;
    cpus * (DECOMMIT_BATCH - 1)
}

/// The engine, the linker with every host import, and the epoch ticker.
pub struct WasmRuntime {
    engine: Engine,
    cache: cache::ComponentCache,
    linker: Linker<HostState>,
    ticker_stop: Arc<AtomicBool>,
    /// Components loaded: from the compiled-component cache, compiled and
    /// stored in it, compiled with caching off.
    loads: Arc<[std::sync::atomic::AtomicU64; 3]>,
    /// The pooling allocator's size, when instances come from a pool.
    pool: Option<PoolSize>,
    /// Where components compile, off the message path.
    compiler: compile::Compiler,
}

impl WasmRuntime {
    /// Components loaded so far: from the compiled-component cache,
    /// compiled and stored in it, compiled with caching off.
    pub fn loads(&self) -> Arc<[std::sync::atomic::AtomicU64; 3]> {
        self.loads.clone()
    }

    /// Whether `config` runs on this engine, or why it needs a restart: its
    /// handlers need more pooled instance slots, or larger memories, than
    /// the pool was made with at start.
    pub fn fits(&self, config: &crate::config::Config) -> Result<(), PoolTooSmall> {
        let Some(pool) = self.pool else {
            return Ok(());
        };
        let needed = PoolSize::for_config(config);
        if needed.instances > pool.instances {
            return Err(PoolTooSmall::Instances {
                needed: needed.instances,
                slots: pool.instances,
            });
        }
        if needed.max_memory > pool.max_memory {
            return Err(PoolTooSmall::Memory {
                needed: needed.max_memory >> 20,
                slots: pool.max_memory >> 20,
            });
        }
        Ok(())
    }

    /// A runtime with the settings every store relies on, instances from a
    /// pool of `pool` slots (copy-on-write memory initialisation, so a fresh
    /// instance costs little), caching compiled components in `cache`.
    pub fn new(cache: cache::ComponentCache, pool: PoolSize) -> Result<Self, EngineError> {
        cache.verify()?;
        let mut config = Config::new();
        let pool = pool.with_headroom();
        let n = pool.instances;
        let pooled =
            (n + decommit_queue()).saturating_mul(MEMORIES_PER_COMPONENT) <= MAX_POOLED_MEMORIES;
        if pooled {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(Self::pooling(pool)));
        } else {
            tracing::info!(
                "{n} handlers can run at once, more than the pooling allocator is set up for: instances are allocated on demand"
            );
        }

        // Memory images stay copy-on-write (wasmtime's default), so reused
        // Python or JavaScript instances share their large images: copying
        // them took peak RSS at concurrency 100 from 57 to 375 MiB (Python)
        // and 63 to 498 MiB (JavaScript). The cost of mapping — a fault and
        // a TLB shootdown across threads at the first write to each page —
        // is paid once per pool slot, not per instance: see `pooling`.
        config.epoch_interruption(true);
        // Handlers are synchronous WIT functions; the concurrent call path
        // roughly doubles per-call overhead and buys nothing here.
        config.concurrency_support(false);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        compile::lower_parallel_compilation();
        let engine = Engine::new(&config).map_err(|e| EngineError::Wasmtime(e.into()))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|e| EngineError::Wasmtime(e.into()))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engine.clone());
        std::thread::Builder::new()
            .name("natsapp-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(EngineError::Ticker)?;
        Ok(WasmRuntime {
            loads: Default::default(),
            pool: pooled.then_some(pool),
            engine,
            cache,
            linker,
            ticker_stop,
            compiler: compile::Compiler::new(),
        })
    }

    /// A pool with one slot per handler that can run at once, plus room for
    /// the slots whose decommit is queued: returning pages to the kernel in
    /// batches saves a TLB shootdown across threads per message.
    fn pooling(pool: PoolSize) -> PoolingAllocationConfig {
        let n = pool.instances + decommit_queue();
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .total_stacks(n)
            .max_memory_size(usize::try_from(pool.max_memory).unwrap_or(usize::MAX))
            // A slot keeps the pages its last instance touched resident and
            // restores only those (see `memory_keep_resident`), so a fresh
            // instance starts without page faults: on Linux 6.18, fresh
            // instance + call went from 15-20 us to 8-11 us and per-message
            // Rust throughput from 0.32-0.45x to 0.59-0.77x raw.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(memory_keep_resident())
            .table_keep_resident(1 << 16)
            .async_stack_keep_resident(1 << 16)
            .decommit_batch_size(DECOMMIT_BATCH as usize);
        pooling
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::pagemap_scan_supported;

    #[test]
    fn pagemap_scan_needs_linux_6_7() {
        for (release, supported) in [
            ("6.18.44-fc-v657", true),
            ("6.7.0", true),
            ("7.0.1-arch1", true),
            ("6.6.58-lts", false),
            ("5.15.0-122-generic", false),
            ("", false),
        ] {
            assert_eq!(pagemap_scan_supported(release), supported, "{release:?}");
        }
    }
}
