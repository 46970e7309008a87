//! Steps 4–5 of the data flow: the WebAssembly side. One [`WasmRuntime`]
//! (engine, linker, epoch ticker) per service; each subscriber's component is
//! compiled once and pre-instantiated at start-up (`component`); each
//! message runs in a fresh store with its limits (`invoke`).

pub mod cache;
pub mod component;
pub mod guest_log;
pub mod host;
pub mod invoke;

use host::HostState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A running guest yields to the scheduler at
/// every tick, so the wall-clock limit and in-progress heartbeats stay
/// responsive even while a guest loops.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

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
    /// The pool a service needs: one slot per handler that can run at once.
    pub fn for_config(config: &crate::config::Config) -> Self {
        let instances = config
            .subscribers
            .iter()
            .map(|s| s.concurrency as u64)
            .sum::<u64>()
            .clamp(1, 10_000) as u32;
        let max_memory = config
            .subscribers
            .iter()
            .map(|s| s.memory)
            .max()
            .unwrap_or(crate::config::defaults::MEMORY);
        PoolSize {
            instances,
            max_memory,
        }
    }
}

/// Core instances, memories and tables one component may have (a Python or
/// JavaScript component has many more than a Rust one).
const CORE_INSTANCES_PER_COMPONENT: u32 = 50;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 50;
/// Most memory slots the pool reserves. Each slot reserves a 4 GiB region
/// of address space (not memory); 2048 of them are 8 TiB of the 128 TiB a
/// process has. A service that could need more uses on-demand allocation.
const MAX_POOLED_MEMORIES: u32 = 2048;
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
}

impl WasmRuntime {
    /// A runtime with the settings every store relies on, instances from a
    /// pool of `pool` slots (copy-on-write memory initialisation, so a fresh
    /// instance costs little), caching compiled components in `cache`.
    pub fn new(cache: cache::ComponentCache, pool: PoolSize) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        let n = pool.instances;
        if (n + decommit_queue()).saturating_mul(MEMORIES_PER_COMPONENT) <= MAX_POOLED_MEMORIES {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(Self::pooling(pool)));
        } else {
            tracing::info!(
                "{n} handlers can run at once, more than the pooling allocator is set up for: instances are allocated on demand"
            );
        }

        // Memory images stay copy-on-write (wasmtime's default). Copying
        // them instead made per-message Rust instances faster (44–51k
        // against 30–37k msgs/s with 100 handlers on 2 cores: a first write
        // to a mapped page costs a TLB shootdown) but gave every reused
        // Python or JavaScript instance its own copy of a large image: peak
        // RSS at concurrency 100 went from 57 to 375 MiB (Python) and 63 to
        // 498 MiB (JavaScript). Reuse is the default, so sharing wins.
        config.epoch_interruption(true);
        // Handlers are synchronous WIT functions; the concurrent call path
        // roughly doubles per-call overhead and buys nothing here.
        config.concurrency_support(false);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker)?;
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
            .map_err(wasmtime::Error::from)?;
        Ok(WasmRuntime {
            engine,
            cache,
            linker,
            ticker_stop,
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
            // Reset small guests by zeroing in place rather than returning
            // pages to the kernel after every message.
            .linear_memory_keep_resident(1 << 16)
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
