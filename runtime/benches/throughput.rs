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

/// Peak and current resident memory of a process, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[derive(Default, Clone)]
struct Row {
    case: String,
    msgs_per_s: Option<f64>,
    ratio: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    peak_rss_mib: Option<f64>,
    note: String,
}

async fn preload(js: &jetstream::Context, stream: &str, subject: &str, n: usize) {
    js.create_stream(stream::Config {
        name: stream.into(),
        subjects: vec![subject.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let mut acks = Vec::with_capacity(1024);
    for _ in 0..n {
        acks.push(
            js.publish(subject.to_string(), payload.clone())
                .await
                .unwrap(),
        );
        if acks.len() == 1024 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// Fails the run when a wait takes longer than a healthy service could
/// (a service that died has logged why above).
fn within(t0: Instant, what: &str) {
    assert!(
        t0.elapsed() < Duration::from_secs(180),
        "gave up after 180s waiting for {what}"
    );
}

/// Times from the first delivery until `durable` is drained.
async fn time_drain(js: &jetstream::Context, stream: &str, durable: &str, n: usize) -> Duration {
    let s = js.get_stream(stream).await.unwrap();
    let t0 = Instant::now();
    let start = loop {
        within(t0, &format!("the first delivery on {stream}"));
        if let Ok(info) = s.consumer_info(durable).await {
            if info.delivered.stream_sequence > 0 {
                break Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    loop {
        within(t0, &format!("{durable} on {stream} to drain"));
        let info = s.consumer_info(durable).await.unwrap();
        if info.ack_floor.stream_sequence >= n as u64 && info.num_ack_pending == 0 {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The raw async-nats consumer the runtime is measured against.
async fn raw_consume(
    consumer: PullConsumer,
    relay: Option<(jetstream::Context, String)>,
    stop: Arc<tokio::sync::Notify>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    loop {
        let first = tokio::select! { p = permits.clone().acquire_owned() => p.unwrap(), _ = stop.notified() => return };
        let mut held = vec![first];
        while held.len() < BATCH {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        let mut batch = consumer
            .batch()
            .max_messages(held.len())
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(m)) = batch.next().await {
            let permit = held.pop().unwrap();
            let relay = relay.clone();
            tokio::spawn(async move {
                if let Some((js, subject)) = relay {
                    let headers = m.headers.clone().unwrap_or_default();
                    js.publish_with_headers(subject, headers, m.payload.clone())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                }
                m.ack().await.unwrap();
                drop(permit);
            });
        }
    }
}

fn pull_consumer_config(durable: &str) -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
        durable_name: Some(durable.into()),
        max_ack_pending: 1000,
        ..Default::default()
    }
}

async fn raw_throughput(js: &jetstream::Context, n: usize) -> f64 {
    preload(js, "RAW", "raw.in", n).await;
    let consumer = js
        .get_stream("RAW")
        .await
        .unwrap()
        .create_consumer(pull_consumer_config("raw"))
        .await
        .unwrap();
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(raw_consume(consumer, None, stop.clone()));
    let took = time_drain(js, "RAW", "raw", n).await;
    stop.notify_waiters();
    task.abort();
    n as f64 / took.as_secs_f64()
}

/// The Python environment with nats-py and FastStream, installed on first use.
fn python_baselines() -> Option<PathBuf> {
    let venv = root().join("target/bench-venv");
    let python = venv.join("bin/python");
    let ok = |p: &Path| {
        Command::new(p)
            .args(["-c", "import nats, faststream"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && ok(&python) {
        return Some(python);
    }
    let created = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    let installed = created
        && Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "nats-py==2.16.0",
                "faststream[nats]==0.7.8",
            ])
            .status()
            .is_ok_and(|s| s.success());
    (installed && ok(&python)).then_some(python)
}

async fn python_throughput(
    server: &NatsServer,
    js: &jetstream::Context,
    python: &Path,
    kind: &str,
    n: usize,
) -> (f64, f64) {
    let stream = format!("PY{}", kind.replace('-', "").to_uppercase());
    let subject = format!("{}.in", stream.to_lowercase());
    preload(js, &stream, &subject, n).await;
    let child = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/py_consumers.py"))
        .args([kind, server.url(), &stream, &subject, "py", &n.to_string()])
        .spawn()
        .unwrap();
    let took = time_drain(js, &stream, "py", n).await;
    let (peak, _) = rss_mib(child.id());
    let mut child = child;
    let _ = child.wait();
    (n as f64 / took.as_secs_f64(), peak)
}

struct Sub<'a> {
    name: &'a str,
    component: &'a Path,
    subject: String,
    instances: &'a str,
    output: Option<&'a str>,
}

fn service_toml(url: &str, stream: &str, subjects: &str, subs: &[Sub]) -> String {
    let mut t = format!(
        "[service]\nname = \"bench\"\ngraceful_timeout = \"2s\"\n[nats]\nservers = [\"{url}\"]\n\
         [[streams]]\nname = \"{stream}\"\nsubjects = [\"{subjects}\"]\ndeclare = false\n\
         [[streams]]\nname = \"{stream}_OUT\"\nsubjects = [\"{stream}.out\"]\n"
    );
    for s in subs {
        t += &format!(
            "[[subscribers]]\nname = \"{}\"\ncomponent = \"{}\"\nsubject = \"{}\"\nstream = \"{stream}\"\ndurable = \"{}\"\n\
             concurrency = {CONCURRENCY}\npull = {{ batch_size = {BATCH}, timeout = \"1s\" }}\ninstances = \"{}\"\n\
             publish = [\"{stream}.out\"]\nconfig = {{ output = \"{}\" }}\n",
            s.name,
            s.component.display(),
            s.subject,
            s.name,
            s.instances,
            s.output.unwrap_or("none")
        );
    }
    t
}

fn spawn(toml: &str, dir: &Path, cache: &Path) -> Child {
    let file = dir.join(format!(
        "service-{}.toml",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&file, toml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_natsapp-wasm"))
        .arg("run")
        .arg(&file)
        .env("NATSAPP_CACHE_DIR", cache)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

async fn natsapp_throughput(
    server: &NatsServer,
    js: &jetstream::Context,
    dir: &Path,
    cache: &Path,
    case: usize,
    component: &Path,
    instances: &str,
    relay: bool,
    n: usize,
) -> (f64, f64) {
    let stream = format!("B{case}");
    let subject = format!("b{case}.in");
    preload(js, &stream, &subject, n).await;
    let output = format!("{stream}.out");
    let toml = service_toml(
        server.url(),
        &stream,
        &subject,
        &[Sub {
            name: "bench",
            component,
            subject: subject.clone(),
            instances,
            output: relay.then_some(output.as_str()),
        }],
    );
    let child = spawn(&toml, dir, cache);
    let took = time_drain(js, &stream, "bench", n).await;
    let (peak, _) = rss_mib(child.id());
    stop(child);
    (n as f64 / took.as_secs_f64(), peak)
}

/// p50 and p99 of end-to-end latency (publish → relayed output) at `rate` msgs/s.
async fn latency(
    js: &jetstream::Context,
    client: &async_nats::Client,
    input: &str,
    output: &str,
    rate: u32,
    seconds: u64,
) -> (f64, f64) {
    let mut sub = client.subscribe(output.to_string()).await.unwrap();
    client.flush().await.unwrap();
    let total = rate as u64 * seconds;
    let collector = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(total as usize);
        while samples.len() < total as usize {
            match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
                Ok(Some(m)) => {
                    let sent: u128 = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Bench-Ts"))
                        .and_then(|v| v.as_str().parse().ok())
                        .unwrap_or(0);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos();
                    samples.push((now - sent) as f64 / 1e6);
                }
                _ => break,
            }
        }
        samples
    });
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        tick.tick().await;
        let mut h = async_nats::HeaderMap::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        h.insert("Bench-Ts", now.to_string().as_str());
        let js = js.clone();
        let input = input.to_string();
        tokio::spawn(async move {
            js.publish_with_headers(input, h, bytes::Bytes::from(vec![b'x'; PAYLOAD]))
                .await
                .unwrap()
                .await
                .unwrap()
        });
    }
    let mut samples = collector.await.unwrap();
    assert!(!samples.is_empty(), "no latency samples");
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (pct(0.50), pct(0.99))
}

/// Waits until the service has created `durable` on `stream`.
async fn consumer_exists(js: &jetstream::Context, stream: &str, durable: &str) {
    let s = js.get_stream(stream).await.unwrap();
    let t0 = Instant::now();
    while s.consumer_info(durable).await.is_err() {
        within(t0, &format!("the service to create {durable} on {stream}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Seconds from `run` to every subscriber having handled one message.
async fn startup(
    server: &NatsServer,
    js: &jetstream::Context,
    dir: &Path,
    cache: &Path,
    subscribers: usize,
    noop: &Path,
    tag: &str,
) -> f64 {
    let stream = format!("S{subscribers}{tag}");
    let prefix = format!("s{subscribers}{tag}");
    js.create_stream(stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    let names: Vec<String> = (0..subscribers).map(|i| format!("h{i}")).collect();
    let subs: Vec<Sub> = names
        .iter()
        .map(|n| Sub {
            name: n,
            component: noop,
            subject: format!("{prefix}.{n}"),
            instances: "per-message",
            output: None,
        })
        .collect();
    for s in &subs {
        js.publish(s.subject.clone(), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let toml = service_toml(server.url(), &stream, &format!("{prefix}.>"), &subs);
    let t0 = Instant::now();
    let child = spawn(&toml, dir, cache);
    let s = js.get_stream(&stream).await.unwrap();
    for n in &names {
        loop {
            if s.consumer_info(n)
                .await
                .is_ok_and(|i| i.ack_floor.stream_sequence > 0)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let took = t0.elapsed().as_secs_f64();
    stop(child);
    took
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
    js.create_stream(stream::Config {
        name: "LAT_RAW".into(),
        subjects: vec!["latraw.in".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.create_stream(stream::Config {
        name: "LAT_RAW_OUT".into(),
        subjects: vec!["latraw.out".into()],
        ..Default::default()
    })
    .await
    .unwrap();
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
    js.create_stream(stream::Config {
        name: "LAT".into(),
        subjects: vec!["lat.in".into()],
        ..Default::default()
    })
    .await
    .unwrap();
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
    js.create_stream(stream::Config {
        name: "IDLE".into(),
        subjects: vec!["idle.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
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
        let value: Vec<_> = rows
            .iter()
            .map(|r| json!({"case": r.case, "msgs_per_s": r.msgs_per_s, "ratio_to_raw": r.ratio, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "peak_rss_mib": r.peak_rss_mib, "note": r.note}))
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&json!({"messages": n, "payload_bytes": PAYLOAD, "batch": BATCH, "concurrency": CONCURRENCY, "rows": value})).unwrap()).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

fn print_table(rows: &[Row], n: usize) {
    let f = |v: Option<f64>, d: usize| v.map_or(String::new(), |v| format!("{v:.d$}"));
    println!("\n{n} messages of {PAYLOAD} B, batch {BATCH}, concurrency {CONCURRENCY}, one nats-server\n");
    println!("| case | msgs/s | × raw | p50 ms | p99 ms | peak RSS MiB | |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.case,
            f(r.msgs_per_s, 0),
            f(r.ratio, 2),
            f(r.p50_ms, 2),
            f(r.p99_ms, 2),
            f(r.peak_rss_mib, 1),
            r.note
        );
    }
}
