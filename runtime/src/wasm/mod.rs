//! Steps 4–5 of the data flow: the WebAssembly side. One [`WasmRuntime`]
//! (engines, linkers, epoch ticker) per service; each subscriber's component
//! is compiled once and pre-instantiated at start-up (`component`); each
//! message runs in a store with its limits, fresh or reused (`invoke`).

pub mod cache;
pub mod component;
pub mod guest_log;
pub mod host;
pub mod invoke;

use crate::config::Instances;
use host::HostState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
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

/// How a fresh instance's linear memory receives the component's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryInit {
    /// Mapped copy-on-write from one image that every instance shares; a
    /// page becomes the instance's own only when written. Large images, and
    /// reused instances, which live long and should share what they can.
    CopyOnWrite,
    /// Copied into the instance's memory slot. For a small image this is
    /// cheaper than mapping: no page fault and no TLB shootdown across the
    /// runtime's threads at the first write of each page.
    Copy,
}

/// Per-message instances of components with at most this much initial
/// data get it copied. A Rust handler has tens of KiB; an interpreter
/// (Python, JavaScript) has tens of MiB, which copying per message makes
/// twice as slow as mapping.
pub const COPY_IMAGE_LIMIT: u64 = 1 << 20;

impl MemoryInit {
    /// The initialisation for a component with `image_bytes` of initial
    /// data whose instances live as `instances` says.
    pub fn choose(instances: Instances, image_bytes: u64) -> Self {
        match instances {
            Instances::PerMessage if image_bytes <= COPY_IMAGE_LIMIT => MemoryInit::Copy,
            _ => MemoryInit::CopyOnWrite,
        }
    }
}

/// An engine and the linker with every host import, for one [`MemoryInit`].
struct Flavor {
    engine: Engine,
    linker: Linker<HostState>,
}

/// The engines a service uses, created on first use, shared with the epoch ticker.
#[derive(Default)]
struct Engines {
    copy_on_write: OnceLock<Flavor>,
    copy: OnceLock<Flavor>,
}

impl Engines {
    fn slot(&self, init: MemoryInit) -> &OnceLock<Flavor> {
        match init {
            MemoryInit::CopyOnWrite => &self.copy_on_write,
            MemoryInit::Copy => &self.copy,
        }
    }

    fn each(&self) -> impl Iterator<Item = &Flavor> {
        [&self.copy_on_write, &self.copy]
            .into_iter()
            .filter_map(|f| f.get())
    }
}

/// The engines (one per [`MemoryInit`] in use), their linkers, the
/// compiled-component cache and the epoch ticker.
pub struct WasmRuntime {
    engines: Arc<Engines>,
    pool: PoolSize,
    cache: cache::ComponentCache,
    ticker_stop: Arc<AtomicBool>,
}

impl WasmRuntime {
    /// A runtime whose instances come from pools of `pool` slots (one pool
    /// per [`MemoryInit`] in use), caching compiled components in `cache`.
    pub fn new(cache: cache::ComponentCache, pool: PoolSize) -> wasmtime::Result<Self> {
        let engines = Arc::new(Engines::default());
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, ticking) = (ticker_stop.clone(), engines.clone());
        std::thread::Builder::new()
            .name("natsapp-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for flavor in ticking.each() {
                        flavor.engine.increment_epoch();
                    }
                }
            })
            .map_err(wasmtime::Error::from)?;
        Ok(WasmRuntime {
            engines,
            pool,
            cache,
            ticker_stop,
        })
    }

    /// The engine and linker for `init`, created on first use.
    fn flavor(&self, init: MemoryInit) -> wasmtime::Result<&Flavor> {
        let slot = self.engines.slot(init);
        if let Some(flavor) = slot.get() {
            return Ok(flavor);
        }
        let engine = Self::engine(self.pool, init)?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker)?;
        Ok(slot.get_or_init(|| Flavor { engine, linker }))
    }

    /// An engine with the settings every store relies on, instances from a
    /// pool of `pool` slots, memories initialised as `init` says.
    fn engine(pool: PoolSize, init: MemoryInit) -> wasmtime::Result<Engine> {
        let mut config = Config::new();
        let n = pool.instances;
        if (n + decommit_queue()).saturating_mul(MEMORIES_PER_COMPONENT) <= MAX_POOLED_MEMORIES {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(Self::pooling(pool)));
        } else {
            tracing::info!(
                "{n} handlers can run at once, more than the pooling allocator is set up for: instances are allocated on demand"
            );
        }
        // Measured with 100 handlers at once on 2 cores: copying made
        // per-message Rust instances 1.5–1.8× faster than mapping, made
        // per-message Python instances 2× slower, and gave every reused
        // Python or JavaScript instance its own copy of a large image (peak
        // RSS at concurrency 100 from 57 to 375 MiB): see `MemoryInit::choose`.
        config.memory_init_cow(init == MemoryInit::CopyOnWrite);
        config.epoch_interruption(true);
        // Handlers are synchronous WIT functions; the concurrent call path
        // roughly doubles per-call overhead and buys nothing here.
        config.concurrency_support(false);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        Engine::new(&config)
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
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
