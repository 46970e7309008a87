//! Does a call of the `warm` export, made on a fresh instance before its
//! message, take the first call's one-time cost off the message's `run`?
//! Instances come from a pooling allocator set up like the runtime's
//! (`runtime/src/wasm/mod.rs`). Per iteration, interleaved: `run` as a
//! fresh instance's first call; `warm` then `run` on another fresh one;
//! `run` on one reused instance. Prints the medians.

use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable, TypedFunc};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, Result,
    Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

type Run = TypedFunc<(Vec<u8>,), (u32,)>;
type Warm = TypedFunc<(), ()>;

fn engine() -> Result<Engine> {
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(8)
        .total_core_instances(8 * 16)
        .max_core_instances_per_component(16)
        .total_memories(8 * 4)
        .max_memories_per_component(4)
        .total_tables(8 * 8)
        .max_tables_per_component(8)
        .total_stacks(8)
        .max_memory_size(256 << 20)
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 16)
        .async_stack_keep_resident(1 << 16);
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling))
        .epoch_interruption(true)
        .concurrency_support(false)
        .cranelift_opt_level(OptLevel::Speed);
    Engine::new(&config)
}

fn store(engine: &Engine) -> Store<State> {
    let state = State {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
    };
    let mut store = Store::new(engine, state);
    store.set_epoch_deadline(u64::MAX / 2);
    store
}

/// Times one call of `f`.
async fn timed<P, R>(f: &TypedFunc<P, R>, store: &mut Store<State>, params: P) -> Result<Duration>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower + Send + Sync + 'static,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift + Send + Sync + 'static,
{
    let started = Instant::now();
    f.call_async(&mut *store, params).await?;
    Ok(started.elapsed())
}

fn median_us(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: warm-up COMPONENT.wasm [ITERATIONS]");
    let n: usize = args.next().map_or(Ok(200), |s| s.parse())?;
    let engine = engine()?;
    let component = Component::from_file(&engine, &path)?;
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    let pre = linker.instantiate_pre(&component)?;
    let data = br#"{"order": 17, "items": [1, 2, 3], "note": "hello"}"#.to_vec();

    let mut reused = store(&engine);
    let instance = pre.instantiate_async(&mut reused).await?;
    let reused_run: Run = instance.get_typed_func(&mut reused, "run")?;
    timed(&reused_run, &mut reused, (data.clone(),)).await?;

    let (mut instantiate, mut first_run) = (Vec::new(), Vec::new());
    let (mut warm, mut run_after_warm, mut run_reused) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let mut fresh = store(&engine);
        let started = Instant::now();
        let instance = pre.instantiate_async(&mut fresh).await?;
        instantiate.push(started.elapsed());
        let run: Run = instance.get_typed_func(&mut fresh, "run")?;
        first_run.push(timed(&run, &mut fresh, (data.clone(),)).await?);
        drop(fresh);

        let mut warmed = store(&engine);
        let instance = pre.instantiate_async(&mut warmed).await?;
        let warm_fn: Warm = instance.get_typed_func(&mut warmed, "warm")?;
        let run: Run = instance.get_typed_func(&mut warmed, "run")?;
        warm.push(timed(&warm_fn, &mut warmed, ()).await?);
        run_after_warm.push(timed(&run, &mut warmed, (data.clone(),)).await?);
        drop(warmed);

        run_reused.push(timed(&reused_run, &mut reused, (data.clone(),)).await?);
    }
    println!("{n} iterations, medians in µs:");
    println!(
        "  instantiation                 {:8.1}",
        median_us(instantiate)
    );
    println!(
        "  run, as the first call        {:8.1}",
        median_us(first_run)
    );
    println!("  warm, as the first call       {:8.1}", median_us(warm));
    println!(
        "  run after warm                {:8.1}",
        median_us(run_after_warm)
    );
    println!(
        "  run on a reused instance      {:8.1}",
        median_us(run_reused)
    );
    Ok(())
}
