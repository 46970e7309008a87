//! Does a call of the `warm` export, made on a fresh instance before its
//! message, take the first call's one-time cost off the message's `run`?
//! Instances come from a pooling allocator set up like the runtime's
//! (`runtime/src/wasm/mod.rs`). Per iteration: `run` as a fresh
//! instance's first call, `warm` then `run` on another fresh one (in
//! alternating order), and `run` on one reused instance. Prints the
//! medians.

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
    // The runtime's settings for 64 handlers at once on two cores: a slot
    // per handler, room for the slots queued for decommit, batches of 16.
    let slots = 64 + 2 * 15;
    let mut pooling = PoolingAllocationConfig::new();
    pooling
        .total_component_instances(slots)
        .total_core_instances(slots * 50)
        .max_core_instances_per_component(50)
        .total_memories(slots * 4)
        .max_memories_per_component(4)
        .total_tables(slots * 50)
        .max_tables_per_component(50)
        .total_stacks(slots)
        .max_memory_size(64 << 20)
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 16)
        .async_stack_keep_resident(1 << 16)
        .decommit_batch_size(16);
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
    // Epoch checks are compiled in, as in the runtime; nothing ticks here.
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
    let n: usize = args.next().map_or(Ok(300), |s| s.parse())?;
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

    let (mut instantiate, mut first_run, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
    let (mut warm, mut run_after_warm, mut run_reused) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        // Which fresh instance is warmed alternates, so neither kind always
        // takes the pool slot the other just left.
        for warm_up in [i % 2 == 0, i % 2 == 1] {
            let mut fresh = store(&engine);
            let started = Instant::now();
            let instance = pre.instantiate_async(&mut fresh).await?;
            instantiate.push(started.elapsed());
            let run: Run = instance.get_typed_func(&mut fresh, "run")?;
            if warm_up {
                let warm_fn: Warm = instance.get_typed_func(&mut fresh, "warm")?;
                warm.push(timed(&warm_fn, &mut fresh, ()).await?);
                run_after_warm.push(timed(&run, &mut fresh, (data.clone(),)).await?);
            } else {
                first_run.push(timed(&run, &mut fresh, (data.clone(),)).await?);
            }
            let started = Instant::now();
            drop(fresh);
            dropped.push(started.elapsed());
        }
        run_reused.push(timed(&reused_run, &mut reused, (data.clone(),)).await?);
    }
    println!("{n} iterations, medians in µs:");
    println!("  dropping a used instance      {:8.1}", median_us(dropped));
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
