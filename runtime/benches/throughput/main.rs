//! Throughput, latency, start-up and memory of natsapp-wasm against raw
//! async-nats on the same nats-server, in one run:
//!
//!   cargo bench -p natsapp-wasm --bench throughput -- [--messages N] [--json PATH] [--rate R]
//!
//! Every throughput case preloads N 128-byte messages into its own stream
//! and times from the first delivery until its durable consumer has nothing
//! pending and nothing awaiting ack. natsapp-wasm runs as the real binary
//! (so each case has its own peak RSS); the raw async-nats baseline runs in
//! this process with the same pull shape (batch ≤ free permits, one task per
//! message, ack each). Needs the guests built by the test crate
//! (`cargo build -p natsapp-wasm-tests`, done by ./scripts/test.sh). Asserts
//! no timings: it measures and prints.

use async_nats::jetstream::{self, consumer::PullConsumer, stream};
use futures::StreamExt;
use nats_test_server::NatsServer;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod broker;
mod python;
mod report;
mod service;

use broker::*;
use python::*;
use report::*;
use service::*;

const BATCH: usize = 100;
const CONCURRENCY: usize = 100;
const PAYLOAD: usize = 128;

struct Args {
    messages: usize,
    json: Option<PathBuf>,
    rate: u32,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        messages: 20_000,
        json: None,
        rate: 1000,
        seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--messages" => {
                a.messages = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--messages N")
            }
            // cargo runs benchmarks from the package folder: a relative
            // path means the repository root, where the command is typed.
            "--json" => a.json = it.next().map(|p| root().join(p)),
            "--rate" => a.rate = it.next().and_then(|v| v.parse().ok()).expect("--rate R"),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--bench" => {}
            other => panic!(
                "unknown argument {other:?}: use --messages N, --json PATH, --rate R, --seconds S"
            ),
        }
    }
    a
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn guest(rel: &str) -> PathBuf {
    let p = root().join("guests/target").join(rel);
    assert!(p.exists(), "{} is missing: build the guests with `cargo build -p natsapp-wasm-tests` (./scripts/test.sh does)", p.display());
    p
}

#[tokio::main]
async fn main() {
    let a = args();
    let n = a.messages;
    let server = NatsServer::start();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    let dir = tempfile::tempdir().unwrap();
    let warm_cache = root().join("target/natsapp-bench-cache");
    let noop = guest("wasm32-wasip2/release/noop.wasm");
    let relay = guest("wasm32-wasip2/release/relay.wasm");
    let py_noop = guest("python/noop.wasm");
    let js_noop = guest("js/noop.wasm");
    let mut rows = Vec::new();

    let raw = raw_throughput(&js, n).await;
    rows.push(Row {
        case: "raw async-nats (batch ≤ free permits, 100 at once, ack each)".into(),
        msgs_per_s: Some(raw),
        ratio: Some(1.0),
        ..Default::default()
    });
    let cases: [(&str, &Path, &str, bool); 6] = [
        (
            "natsapp-wasm, Rust no-op, per-message instances",
            &noop,
            "per-message",
            false,
        ),
        (
            "natsapp-wasm, Rust no-op, reused instances",
            &noop,
            "reuse",
            false,
        ),
        (
            "natsapp-wasm, Rust relay (publish + PubAck, then ack)",
            &relay,
            "per-message",
            true,
        ),
        (
            "natsapp-wasm, Python no-op, reused instances",
            &py_noop,
            "reuse",
            false,
        ),
        (
            "natsapp-wasm, JavaScript no-op, reused instances",
            &js_noop,
            "reuse",
            false,
        ),
        (
            "natsapp-wasm, Python no-op, per-message instances",
            &py_noop,
            "per-message",
            false,
        ),
    ];
    for (i, (case, component, instances, relays)) in cases.into_iter().enumerate() {
        // Warm the compiled-component cache so start-up is not in the figure.
        let (rate, peak) = natsapp_throughput(
            &server,
            &js,
            dir.path(),
            &warm_cache,
            i,
            component,
            instances,
            relays,
            n.min(
                if component == py_noop.as_path() && instances == "per-message" {
                    2000
                } else {
                    n
                },
            ),
        )
        .await;
        rows.push(Row {
            case: case.into(),
            msgs_per_s: Some(rate),
            ratio: Some(rate / raw),
            peak_rss_mib: Some(peak),
            ..Default::default()
        });
        eprintln!("{case}: {rate:.0} msgs/s");
    }

    match python_baselines() {
        Some(python) => {
            for (kind, case) in [
                ("nats-py", "nats-py 2.16 fetch(100), ack each"),
                ("faststream", "FastStream 0.7.8 PullSub(100), logging off"),
            ] {
                let (rate, peak) = python_throughput(&server, &js, &python, kind, n).await;
                rows.push(Row {
                    case: case.into(),
                    msgs_per_s: Some(rate),
                    ratio: Some(rate / raw),
                    peak_rss_mib: Some(peak),
                    ..Default::default()
                });
                eprintln!("{case}: {rate:.0} msgs/s");
            }
        }
        None => eprintln!(
            "python3 with pip is not available: the nats-py and FastStream baselines are left out"
        ),
    }

    // Latency of a request-like flow at a fixed rate: publish → handler
    // publishes an output (PubAck awaited) → ack; measured publish → output.
    create_stream(&js, "LAT_RAW", &["latraw.in"]).await;
    create_stream(&js, "LAT_RAW_OUT", &["latraw.out"]).await;
    let consumer = js
        .get_stream("LAT_RAW")
        .await
        .unwrap()
        .create_consumer(pull_consumer_config("lat"))
        .await
        .unwrap();
    let stop_raw = Arc::new(tokio::sync::Notify::new());
    let raw_task = tokio::spawn(raw_consume(
        consumer,
        Some((js.clone(), "latraw.out".into())),
        stop_raw.clone(),
    ));
    let (raw_p50, raw_p99) =
        latency(&js, &client, "latraw.in", "latraw.out", a.rate, a.seconds).await;
    raw_task.abort();
    rows.push(Row {
        case: format!("latency, raw async-nats relay at {} msgs/s", a.rate),
        p50_ms: Some(raw_p50),
        p99_ms: Some(raw_p99),
        ..Default::default()
    });
    create_stream(&js, "LAT", &["lat.in"]).await;
    let toml = service_toml(
        server.url(),
        "LAT",
        "lat.in",
        &[Sub {
            name: "bench",
            component: &relay,
            subject: "lat.in".into(),
            instances: "per-message",
            output: Some("LAT.out"),
        }],
    );
    let child = spawn(&toml, dir.path(), &warm_cache);
    consumer_exists(&js, "LAT", "bench").await;
    let (p50, p99) = latency(&js, &client, "lat.in", "LAT.out", a.rate, a.seconds).await;
    let (peak, _) = rss_mib(child.id());
    stop(child);
    rows.push(Row {
        case: format!("latency, natsapp-wasm Rust relay at {} msgs/s", a.rate),
        p50_ms: Some(p50),
        p99_ms: Some(p99),
        peak_rss_mib: Some(peak),
        note: format!("p50 added over raw: {:.2} ms", p50 - raw_p50),
        ..Default::default()
    });

    // Start-up: run → every subscriber has handled one message.
    for subscribers in [1usize, 10, 100] {
        let cold_cache = tempfile::tempdir().unwrap();
        let cold = startup(
            &server,
            &js,
            dir.path(),
            cold_cache.path(),
            subscribers,
            &noop,
            "c",
        )
        .await;
        let warm = startup(
            &server,
            &js,
            dir.path(),
            cold_cache.path(),
            subscribers,
            &noop,
            "w",
        )
        .await;
        rows.push(Row {
            case: format!("start-up, {subscribers} Rust subscriber(s)"),
            note: format!("cold {cold:.2} s, warm {warm:.2} s"),
            ..Default::default()
        });
    }

    // Idle memory with 10 Rust handlers.
    create_stream(&js, "IDLE", &["idle.>"]).await;
    let names: Vec<String> = (0..10).map(|i| format!("idle{i}")).collect();
    let subs: Vec<Sub> = names
        .iter()
        .map(|nm| Sub {
            name: nm,
            component: &noop,
            subject: format!("idle.{nm}"),
            instances: "per-message",
            output: None,
        })
        .collect();
    let child = spawn(
        &service_toml(server.url(), "IDLE", "idle.>", &subs),
        dir.path(),
        &warm_cache,
    );
    for nm in &names {
        consumer_exists(&js, "IDLE", nm).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, idle) = rss_mib(child.id());
    stop(child);
    rows.push(Row {
        case: "idle, 10 Rust handlers".into(),
        peak_rss_mib: None,
        note: format!("RSS {idle:.1} MiB"),
        ..Default::default()
    });

    print_table(&rows, n);
    if let Some(path) = a.json {
        write_json(&rows, n, &path);
    }
}
