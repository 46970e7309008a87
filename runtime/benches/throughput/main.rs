//! Throughput, latency, start-up and memory of natsapp-wasm against raw
//! async-nats on the same nats-server, in one run:
//!
//!   cargo bench -p natsapp-wasm --bench throughput -- [--messages N] [--json PATH] [--rate R]
//!       [--seconds S] [--rounds R] [--only SECTION,…] [--case TEXT …]
//!
//! Sections: throughput, noisy, tenants, calls, python, latency, endpoints, startup, deploy, idle
//! (all by default).
//! Throughput cases run in R rounds (default 3), each round every case once,
//! and report the median.
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
mod deploy;
mod endpoints;
mod instance;
mod noisy;
mod prepared;
mod python;
mod report;
mod service;
mod tenants;

use broker::*;
use instance::*;
use python::*;
use report::*;
use service::*;

const BATCH: usize = 100;
const CONCURRENCY: usize = 100;
const PAYLOAD: usize = 128;
/// Calls of the in-process Python per-message case.
const PYTHON_PER_MESSAGE_CALLS: usize = 2_000;

const RAW: &str = "raw async-nats (batch ≤ free permits, 100 at once, ack each)";
const RAW_RELAY: &str = "raw async-nats relay (publish + PubAck, then ack)";
const RAW_RELAY_IDS: &str = "raw async-nats relay (publish with Nats-Msg-Id + PubAck, then ack)";
const WRAPPER_DEFAULTS: &str = "(the Python wrapper's defaults)";
const RELAY_REUSED: &str =
    "natsapp-wasm, Rust relay (publish + PubAck, then ack), reused instances";
const NOOP_REUSED: &str = "natsapp-wasm, Rust no-op, reused instances";
const NOOP_TRACED: &str = "natsapp-wasm, Rust no-op, reused instances, traces exported over OTLP";
const RELAY_PER_MESSAGE: &str = "natsapp-wasm, Rust relay (publish + PubAck, then ack)";
const RELAY_TRACED: &str =
    "natsapp-wasm, Rust relay (publish + PubAck, then ack), traces exported over OTLP";
const RELAY_ATOMIC: &str =
    "natsapp-wasm, Rust relay, reused instances, atomic outputs (one batch per message, committed before the ack)";
const RELAY_PIPELINED: &str =
    "natsapp-wasm, Rust relay, reused instances, pipelined outputs (PubAcks awaited after the call, before the ack)";
const RELAY_REUSED_MEMORY: &str =
    "natsapp-wasm, Rust relay (publish + PubAck, then ack), reused instances, to a memory stream";
const RELAY_ATOMIC_MEMORY: &str =
    "natsapp-wasm, Rust relay, reused instances, atomic outputs, to a memory stream";
/// Messages of the atomic relay to a file stream: the server syncs each
/// batch to disk, a few hundred a second.
const ATOMIC_FILE_MESSAGES: usize = 2_000;
const NATS_PY_FETCH1: &str = "nats-py 2.16 fetch(1), ack each (the Python wrapper's defaults)";
const SECTIONS: [&str; 11] = [
    "throughput",
    "noisy",
    "tenants",
    "calls",
    "python",
    "latency",
    "endpoints",
    "prepared",
    "startup",
    "deploy",
    "idle",
];

/// Throughput, latency, start-up and memory of natsapp-wasm against raw
/// async-nats on the same nats-server, in one run.
#[derive(clap::Parser)]
#[command(
    name = "throughput",
    bin_name = "cargo bench -p natsapp-wasm --bench throughput --"
)]
struct Args {
    /// Messages per throughput case (the noisy-neighbour section drains five times as many).
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    messages: usize,
    /// Also write the results as JSON here (relative to the repository root).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Messages per second of the latency section.
    #[arg(long, default_value_t = 1000, value_name = "R")]
    rate: u32,
    /// How long the latency section sends, in seconds.
    #[arg(long, default_value_t = 5, value_name = "S")]
    seconds: u64,
    /// Interleaved rounds of the throughput cases; each reports its median.
    #[arg(long, default_value_t = 3, value_name = "R", value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Only these sections (all by default).
    #[arg(long, value_name = "SECTION,…", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(SECTIONS))]
    only: Vec<String>,
    /// Only the throughput section's natsapp-wasm cases whose name holds
    /// one of these texts (the raw baselines always run).
    #[arg(long = "case", value_name = "TEXT")]
    cases: Vec<String>,
    /// What `cargo bench` passes to every benchmark.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

/// The command line; `--help` describes it, a bad argument ends the run
/// with a one-line error.
fn args() -> Args {
    let mut a = match <Args as clap::Parser>::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("{first} (--help lists the options)");
            std::process::exit(2);
        }
    };
    // cargo runs benchmarks from the package folder: a relative path
    // means the repository root, where the command is typed.
    a.json = a.json.map(|p| root().join(p));
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

/// What every section shares: one nats-server, the guests, a scratch folder.
struct Bench {
    server: NatsServer,
    client: async_nats::Client,
    js: jetstream::Context,
    dir: tempfile::TempDir,
    warm_cache: PathBuf,
    noop: PathBuf,
    relay: PathBuf,
    testkit: PathBuf,
    responder: PathBuf,
    py_noop: PathBuf,
    js_noop: PathBuf,
    n: usize,
    cases: Vec<String>,
}

/// The runtime's allocator, set up as the binary sets it, so that the raw
/// baselines run in this process compare like with like.
#[path = "../../src/cli/allocator.rs"]
mod allocator;

#[global_allocator]
static ALLOCATOR: allocator::Allocator = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    if let Ok(url) = std::env::var(endpoints::RAW_RESPONDER) {
        return endpoints::raw_responder_process(&url).await;
    }
    let a = args();
    let server = NatsServer::start();
    let client = server.client().await;
    let b = Bench {
        js: jetstream::new(client.clone()),
        client,
        server,
        dir: tempfile::tempdir().unwrap(),
        warm_cache: root().join("target/natsapp-bench-cache"),
        noop: guest("wasm32-wasip2/release/noop.wasm"),
        relay: guest("wasm32-wasip2/release/relay.wasm"),
        testkit: guest("wasm32-wasip2/release/testkit.wasm"),
        responder: guest("wasm32-wasip2/release/responder.wasm"),
        py_noop: guest("python/noop.wasm"),
        js_noop: guest("js/noop.wasm"),
        n: a.messages,
        cases: a.cases.clone(),
    };
    let mut rows = Vec::new();
    if a.runs("throughput") || a.runs("python") {
        let python = if a.runs("python") {
            python_baselines()
        } else {
            None
        };
        if a.runs("python") && python.is_none() {
            eprintln!(
                "python3 with pip is not available: the nats-py and FastStream baselines are left out"
            );
        }
        let mut samples = Vec::new();
        for round in 1..=usize::from(a.rounds) {
            eprintln!("round {round} of {}", a.rounds);
            samples.push(Sample::new(RAW, raw_throughput(&b.js, b.n).await, None));
            if a.runs("throughput") {
                for (case, ids) in [(RAW_RELAY, false), (RAW_RELAY_IDS, true)] {
                    let rate = raw_relay_throughput(&b.js, b.n, ids).await;
                    samples.push(Sample::new(case, rate, None));
                }
                samples.extend(b.throughput().await);
            }
            if let Some(python) = &python {
                samples.extend(b.python(python).await);
            }
        }
        rows.extend(medians(&samples, RAW, |case| {
            // Tracing is measured against the same case without it.
            if case == NOOP_TRACED {
                Some(NOOP_REUSED)
            } else if case == RELAY_TRACED {
                Some(RELAY_PER_MESSAGE)
            } else if case == RELAY_ATOMIC {
                Some(RELAY_REUSED)
            } else if case == RELAY_ATOMIC_MEMORY {
                Some(RELAY_REUSED_MEMORY)
            } else if case == RELAY_REUSED_MEMORY {
                // The raw relays write to a file stream.
                None
            } else if case.starts_with("natsapp-wasm, Rust relay") {
                Some(RAW_RELAY_IDS)
            } else if case.ends_with(WRAPPER_DEFAULTS) && case.starts_with("natsapp-wasm") {
                Some(NATS_PY_FETCH1)
            } else {
                None
            }
        }));
    }
    if a.runs("calls") {
        rows.extend(b.calls().await);
    }
    if a.runs("noisy") {
        rows.extend(b.noisy(usize::from(a.rounds)).await);
    }
    if a.runs("tenants") {
        rows.extend(b.tenants().await);
    }
    if a.runs("latency") {
        rows.extend(b.latency(a.rate, a.seconds).await);
    }
    if a.runs("endpoints") {
        rows.extend(b.endpoints(usize::from(a.rounds), a.seconds).await);
    }
    if a.runs("prepared") {
        rows.extend(b.prepared(usize::from(a.rounds), a.seconds).await);
    }
    if a.runs("startup") {
        rows.extend(b.startup().await);
    }
    if a.runs("deploy") {
        rows.extend(b.deploy().await);
    }
    if a.runs("idle") {
        rows.extend(b.idle().await);
    }
    print_table(&rows, b.n);
    if let Some(path) = a.json {
        write_json(&rows, b.n, &path);
    }
}

impl Bench {
    /// natsapp-wasm draining a preloaded stream, per guest and instance mode.
    async fn throughput(&self) -> Vec<Sample> {
        let cases: [(&str, &Path, &str, bool); 16] = [
            (
                "natsapp-wasm, Rust no-op, per-message instances",
                &self.noop,
                "per-message",
                false,
            ),
            (
                "natsapp-wasm, Rust no-op, per-message instances, none prepared",
                &self.noop,
                "per-message",
                false,
            ),
            (NOOP_REUSED, &self.noop, "reuse", false),
            (
                "natsapp-wasm, Rust no-op, reused instances, /metrics scraped every 100 ms",
                &self.noop,
                "reuse",
                false,
            ),
            (NOOP_TRACED, &self.noop, "reuse", false),
            (RELAY_PER_MESSAGE, &self.relay, "per-message", true),
            (RELAY_REUSED, &self.relay, "reuse", true),
            (RELAY_PIPELINED, &self.relay, "reuse", true),
            (RELAY_ATOMIC, &self.relay, "reuse", true),
            (RELAY_REUSED_MEMORY, &self.relay, "reuse", true),
            (RELAY_ATOMIC_MEMORY, &self.relay, "reuse", true),
            (RELAY_TRACED, &self.relay, "per-message", true),
            (
                "natsapp-wasm, Python no-op, reused instances",
                &self.py_noop,
                "reuse",
                false,
            ),
            (
                "natsapp-wasm, JavaScript no-op, reused instances",
                &self.js_noop,
                "reuse",
                false,
            ),
            (
                "natsapp-wasm, Python no-op, per-message instances",
                &self.py_noop,
                "per-message",
                false,
            ),
            (
                "natsapp-wasm, Python no-op, per-message instances, none prepared",
                &self.py_noop,
                "per-message",
                false,
            ),
        ];
        let mut rows = Vec::new();
        for (i, (case, component, instances, relays)) in cases.into_iter().enumerate() {
            if !self.cases.is_empty() && !self.cases.iter().any(|c| case.contains(c.as_str())) {
                continue;
            }
            // A fresh Python interpreter per message is slow: fewer messages.
            let n = if component == self.py_noop && instances == "per-message" {
                self.n.min(2000)
            } else if case == RELAY_ATOMIC {
                self.n.min(ATOMIC_FILE_MESSAGES)
            } else {
                self.n
            };
            let observed = if case.contains("/metrics") {
                Observed::Scraped
            } else if case.contains("traces") {
                Observed::Traced
            } else {
                Observed::Not
            };
            // The compiled-component cache is warm, so start-up is not in the figure.
            let case_of = Case {
                component,
                instances,
                relay: relays,
                observed,
                one_at_a_time: false,
                outputs: if case == RELAY_ATOMIC || case == RELAY_ATOMIC_MEMORY {
                    "atomic"
                } else if case == RELAY_PIPELINED {
                    "pipelined"
                } else {
                    "immediate"
                },
                output_in_memory: case.ends_with("to a memory stream"),
                none_prepared: case.ends_with("none prepared"),
            };
            let (rate, peak) = natsapp_throughput(self, i, &case_of, n).await;
            rows.push(Sample::new(case, rate, Some(peak)));
        }
        rows
    }

    /// One handler call with NATS off the path: what an instance costs, and
    /// what a call costs in each language.
    async fn calls(&self) -> Vec<Row> {
        // A fresh Python instance costs milliseconds: fewer calls suffice.
        let python_fresh = self.n.min(PYTHON_PER_MESSAGE_CALLS);
        let cases: [(&str, &Path, &str, usize); 5] = [
            ("Rust", &self.noop, "per-message", self.n),
            ("Rust", &self.noop, "reuse", self.n),
            ("Python", &self.py_noop, "per-message", python_fresh),
            ("Python", &self.py_noop, "reuse", self.n),
            ("JavaScript", &self.js_noop, "reuse", self.n),
        ];
        let mut rows = Vec::new();
        for (language, component, instances, calls) in cases {
            if under_callgrind().is_some_and(|l| l != language || instances != "reuse") {
                continue;
            }
            let cost = handler_cost(
                &self.server,
                &self.client,
                self.dir.path(),
                &self.warm_cache,
                component,
                instances,
                calls,
            )
            .await;
            let case = format!("handler call in-process, {language} no-op, {instances} instances");
            eprintln!(
                "{case}: {:.1} µs one at a time, {:.1} µs with {CONCURRENCY} at once",
                cost.sequential_us, cost.concurrent_us
            );
            rows.push(Row {
                case,
                msgs_per_s: Some(1e6 / cost.concurrent_us),
                note: format!(
                    "{:.1} µs per call one at a time; {:.1} µs with {CONCURRENCY} at once",
                    cost.sequential_us, cost.concurrent_us
                ),
                ..Default::default()
            });
        }
        rows
    }

    /// The stack natsapp-wasm replaces: nats-py and FastStream consumers.
    async fn python(&self, python: &Path) -> Vec<Sample> {
        let mut rows = Vec::new();
        for (kind, case) in [
            ("nats-py", "nats-py 2.16 fetch(100), ack each"),
            ("faststream", "FastStream 0.7.8 PullSub(100), logging off"),
            ("nats-py-fetch1", NATS_PY_FETCH1),
        ] {
            let (rate, peak) =
                python_throughput(&self.server, &self.js, python, kind, self.n).await;
            rows.push(Sample::new(case, rate, Some(peak)));
        }
        // What a service ported from the wrapper without tuning gets.
        let defaults = Case {
            component: &self.py_noop,
            instances: "reuse",
            relay: false,
            observed: Observed::Not,
            one_at_a_time: true,
            outputs: "immediate",
            output_in_memory: false,
            none_prepared: false,
        };
        let (rate, peak) = natsapp_throughput(self, 90, &defaults, self.n).await;
        rows.push(Sample::new(
            &format!("natsapp-wasm, Python no-op, reused instances, batch 1 and one at a time {WRAPPER_DEFAULTS}"),
            rate,
            Some(peak),
        ));
        rows
    }

    /// Latency of a request-like flow at a fixed rate: publish → handler
    /// publishes an output (PubAck awaited) → ack; measured publish → output.
    async fn latency(&self, rate: u32, seconds: u64) -> Vec<Row> {
        let js = &self.js;
        create_stream(js, "LAT_RAW", &["latraw.in"]).await;
        create_stream(js, "LAT_RAW_OUT", &["latraw.out"]).await;
        let consumer = pull_consumer(js, "LAT_RAW", "lat").await;
        let stop_raw = Arc::new(tokio::sync::Notify::new());
        let raw_task = tokio::spawn(raw_consume(
            consumer,
            Some(Relay {
                js: js.clone(),
                subject: "latraw.out".into(),
                ids: false,
            }),
            stop_raw.clone(),
        ));
        let (raw_p50, raw_p99) =
            latency(js, &self.client, "latraw.in", "latraw.out", rate, seconds).await;
        raw_task.abort();
        create_stream(js, "LAT", &["lat.in"]).await;
        let mut rows = vec![Row {
            case: format!("latency, raw async-nats relay at {rate} msgs/s"),
            p50_ms: Some(raw_p50),
            p99_ms: Some(raw_p99),
            ..Default::default()
        }];
        for (observed, how) in [
            (Observed::Not, ""),
            (Observed::Scraped, ", /metrics scraped every 100 ms"),
            (Observed::Traced, ", traces exported over OTLP"),
        ] {
            let mut toml = service_toml(
                self.server.url(),
                "LAT",
                "lat.in",
                &[Sub {
                    name: "bench",
                    component: &self.relay,
                    subject: "lat.in".into(),
                    instances: "per-message",
                    output: Some("LAT.out"),
                }],
            );
            let observer = Observer::attach(observed, &mut toml).await;
            let child = spawn(&toml, self.dir.path(), &self.warm_cache);
            let observer = observer.watching();
            consumer_exists(js, "LAT", "bench").await;
            let (p50, p99) = latency(js, &self.client, "lat.in", "LAT.out", rate, seconds).await;
            let (peak, _) = rss_mib(child.id());
            observer.finish(child);
            rows.push(Row {
                case: format!("latency, natsapp-wasm Rust relay at {rate} msgs/s{how}"),
                p50_ms: Some(p50),
                p99_ms: Some(p99),
                peak_rss_mib: Some(peak),
                note: format!("p50 added over raw: {:.2} ms", p50 - raw_p50),
                ..Default::default()
            });
        }
        rows
    }

    /// Start-up: run → every subscriber has handled one message, with an
    /// empty compiled-component cache and then with the one it filled.
    async fn startup(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for subscribers in [1usize, 10, 100] {
            let cache = tempfile::tempdir().unwrap();
            let mut took = [0.0; 2];
            for (t, tag) in took.iter_mut().zip(["c", "w"]) {
                *t = startup(
                    &self.server,
                    &self.js,
                    self.dir.path(),
                    cache.path(),
                    subscribers,
                    &self.noop,
                    tag,
                )
                .await;
            }
            rows.push(Row {
                case: format!("start-up, {subscribers} Rust subscriber(s)"),
                note: format!("cold {:.2} s, warm {:.2} s", took[0], took[1]),
                ..Default::default()
            });
        }
        rows
    }

    /// Resident memory of a runtime with 10 Rust handlers and no messages.
    async fn idle(&self) -> Vec<Row> {
        create_stream(&self.js, "IDLE", &["idle.>"]).await;
        let names: Vec<String> = (0..10).map(|i| format!("idle{i}")).collect();
        let subs: Vec<Sub> = names
            .iter()
            .map(|nm| Sub {
                name: nm,
                component: &self.noop,
                subject: format!("idle.{nm}"),
                instances: "per-message",
                output: None,
            })
            .collect();
        let child = spawn(
            &service_toml(self.server.url(), "IDLE", "idle.>", &subs),
            self.dir.path(),
            &self.warm_cache,
        );
        for nm in &names {
            consumer_exists(&self.js, "IDLE", nm).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, idle) = rss_mib(child.id());
        stop(child);
        vec![Row {
            case: "idle, 10 Rust handlers".into(),
            note: format!("RSS {idle:.1} MiB"),
            ..Default::default()
        }]
    }
}
