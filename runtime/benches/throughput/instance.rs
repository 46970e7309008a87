//! The cost of one handler call inside this process, with NATS off the
//! path: `Handler::invoke` on a prepared delivery, the runtime's real call
//! path (store, limits, instance from the pool or fresh, `handle`, verdict).

use super::*;
use natsapp_wasm::config::Config;
use natsapp_wasm::message::{InFlight, Outcome};
use natsapp_wasm::nats::publish::PublishRoutes;
use natsapp_wasm::nats::wire::Wire;
use natsapp_wasm::wasm::cache::ComponentCache;
use natsapp_wasm::wasm::host::SubscriberHost;
use natsapp_wasm::wasm::invoke::Handler;
use natsapp_wasm::wasm::{PoolSize, WasmRuntime};

/// Microseconds per call: one call at a time, then `CONCURRENCY` tasks
/// calling at once on this process's worker threads (wall time per call).
pub(crate) struct CallCost {
    pub(crate) sequential_us: f64,
    pub(crate) concurrent_us: f64,
}

/// The language whose reused-instance call runs under callgrind
/// (`NATSAPP_BENCH_CALLGRIND=Rust`, `Python` or `JavaScript`), if any:
/// instances then come from on-demand allocation, as valgrind cannot map
/// the pooling allocator's reservation (terabytes of address space), and
/// only one call at a time runs (10 to warm up, then `--messages`).
/// Collect with `--collect-atstart=no --toggle-collect='*Handler::invoke*'`.
pub(crate) fn under_callgrind() -> Option<String> {
    std::env::var("NATSAPP_BENCH_CALLGRIND").ok()
}

pub(crate) async fn handler_cost(
    server: &NatsServer,
    client: &async_nats::Client,
    dir: &Path,
    cache: &Path,
    component: &Path,
    instances: &str,
    calls: usize,
) -> CallCost {
    let toml = service_toml(
        server.url(),
        "CALL",
        "call.in",
        &[Sub {
            name: "bench",
            component,
            subject: "call.in".into(),
            instances,
            output: None,
        }],
    );
    let stem = component.file_stem().unwrap().to_string_lossy();
    let file = dir.join(format!("call-{stem}-{instances}.toml"));
    std::fs::write(&file, toml).unwrap();
    let config = Config::load(&file).unwrap();
    let sub = &config.subscribers[0];
    let pool = if under_callgrind().is_some() {
        // More slots than the pooling allocator is set up for: on demand.
        PoolSize {
            instances: 10_000,
            ..PoolSize::for_config(&config)
        }
    } else {
        PoolSize::for_config(&config)
    };
    let wasm = WasmRuntime::new(ComponentCache::at(Some(cache.to_path_buf())), pool).unwrap();
    let pre = wasm
        .load(sub.component.file().unwrap(), "bench")
        .unwrap()
        .pre;
    // One context for every delivery, as a pull consumer's messages share theirs.
    let js = jetstream::new(client.clone());
    let host = Arc::new(SubscriberHost::new(
        sub,
        Wire::server(
            client.clone(),
            js.clone(),
            Default::default(),
            Default::default(),
        ),
        Arc::new(PublishRoutes::new(&config, &None)),
        Vec::new(),
        None,
    ));
    let handler = Arc::new(Handler::new(
        pre,
        host,
        sub.timeout,
        sub.progress_every(),
        sub.instances,
    ));
    let deliveries = |n: usize| -> Vec<Arc<InFlight>> {
        (0..n)
            .map(|i| {
                let message = async_nats::Message {
                    subject: "call.in".into(),
                    reply: Some(
                        format!("$JS.ACK.CALL.bench.1.{i}.{i}.1700000000000000000.0").into(),
                    ),
                    payload: vec![b'x'; PAYLOAD].into(),
                    headers: None,
                    status: None,
                    description: None,
                    length: PAYLOAD,
                };
                let message = jetstream::Message {
                    message,
                    context: js.clone(),
                };
                Arc::new(InFlight::new(message).map_err(|(_, e)| e).unwrap())
            })
            .collect()
    };
    let call = |handler: Arc<Handler>, msg: Arc<InFlight>| async move {
        match handler.invoke(msg).await {
            Outcome::Ok => {}
            other => panic!("the no-op handler did not succeed: {other:?}"),
        }
    };

    // `tasks` tasks calling at once, each through its own deliveries:
    // microseconds of wall time per call.
    let concurrently = |tasks: usize, per_task: usize| {
        let handler = handler.clone();
        let batches: Vec<_> = (0..tasks).map(|_| deliveries(per_task)).collect();
        async move {
            let t0 = Instant::now();
            let running: Vec<_> = batches
                .into_iter()
                .map(|batch| {
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        for msg in batch {
                            call(handler.clone(), msg).await;
                        }
                    })
                })
                .collect();
            for t in running {
                t.await.unwrap();
            }
            t0.elapsed().as_secs_f64() * 1e6 / (tasks * per_task) as f64
        }
    };

    // Warm up: compiled code paged in, pool slots touched and, for reuse,
    // as many warm instances as calls at once.
    if under_callgrind().is_some() {
        concurrently(1, 10).await;
        return CallCost {
            sequential_us: concurrently(1, calls).await,
            concurrent_us: f64::NAN,
        };
    }
    concurrently(CONCURRENCY, 2).await;
    let sequential_us = concurrently(1, calls).await;
    let concurrent_us = concurrently(CONCURRENCY, calls.div_ceil(CONCURRENCY)).await;
    CallCost {
        sequential_us,
        concurrent_us,
    }
}
