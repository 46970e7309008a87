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
use wasmtime::{Config, Engine};

/// How often the epoch advances. A running guest yields to the scheduler at
/// every tick, so the wall-clock limit and in-progress heartbeats stay
/// responsive even while a guest loops.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine, the linker with every host import, and the epoch ticker.
pub struct WasmRuntime {
    engine: Engine,
    cache: cache::ComponentCache,
    linker: Linker<HostState>,
    ticker_stop: Arc<AtomicBool>,
}

impl WasmRuntime {
    /// A runtime with the settings every store relies on, caching compiled
    /// components in `cache`.
    pub fn new(cache: cache::ComponentCache) -> wasmtime::Result<Self> {
        let mut config = Config::new();
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
