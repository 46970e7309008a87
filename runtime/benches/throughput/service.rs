//! natsapp-wasm under test: a service.toml per case, the real binary,
//! its memory, start-up and throughput.

use super::*;

/// Peak and current resident memory of a process, MiB.
pub(crate) fn rss_mib(pid: u32) -> (f64, f64) {
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

/// The CPU time each thread of a process has used so far (as the
/// scheduler counts it, in nanoseconds), summed by thread name.
pub(crate) fn cpu_time(pid: u32) -> std::collections::BTreeMap<String, Duration> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        let name = read("comm").trim().to_string();
        let ran = read("schedstat")
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok())
            .unwrap_or(0);
        *by_name.entry(name).or_insert(Duration::ZERO) += Duration::from_nanos(ran);
    }
    by_name
}

/// The CPU time process `pid` has used so far, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    cpu_time(pid).values().sum::<Duration>().as_secs_f64()
}

/// The CPU time a case's runtime and the benchmark itself used from its
/// first delivery: printed a message, the runtime's by thread name.
pub(crate) struct CpuUse {
    runtime: std::collections::BTreeMap<String, Duration>,
    bench: f64,
}

impl CpuUse {
    /// From now, for the runtime `pid`.
    pub(crate) fn since_now(pid: u32) -> CpuUse {
        CpuUse {
            runtime: cpu_time(pid),
            bench: cpu_seconds(std::process::id()),
        }
    }

    /// Prints what the runtime `pid` and the benchmark used since, for
    /// each of `n` messages.
    pub(crate) fn report(self, pid: u32, n: usize) {
        let after = cpu_time(pid);
        let per_message = |seconds: f64| seconds * 1e6 / n as f64;
        let mut total = 0.0;
        let threads: Vec<String> = (after.iter())
            .map(|(name, used)| {
                let before = self.runtime.get(name).copied().unwrap_or_default();
                let spent = used.saturating_sub(before).as_secs_f64();
                total += spent;
                format!("{name} {:.2}", per_message(spent))
            })
            .collect();
        eprintln!(
            "  runtime CPU: {:.2} µs a message ({}); this benchmark's own: {:.2}",
            per_message(total),
            threads.join(", "),
            per_message(cpu_seconds(std::process::id()) - self.bench)
        );
    }
}

pub(crate) struct Sub<'a> {
    pub(crate) name: &'a str,
    pub(crate) component: &'a Path,
    pub(crate) subject: String,
    pub(crate) instances: &'a str,
    pub(crate) output: Option<&'a str>,
}

pub(crate) fn service_toml(url: &str, stream: &str, subjects: &str, subs: &[Sub]) -> String {
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

pub(crate) fn spawn(toml: &str, dir: &Path, cache: &Path) -> Child {
    runtime_command(toml, dir, cache)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Like [`spawn`], with the runtime's log (warnings and its statistics,
/// which carry each tenant's use of its quotas) written to `log`.
pub(crate) fn spawn_logging_quotas(toml: &str, dir: &Path, cache: &Path, log: &Path) -> Child {
    runtime_command(toml, dir, cache)
        .env("RUST_LOG", "warn,natsapp_wasm::observability::logs=info")
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// `natsapp-wasm run` on `toml`, written to a new file in `dir`.
fn runtime_command(toml: &str, dir: &Path, cache: &Path) -> Command {
    let file = dir.join(format!(
        "service-{}.toml",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&file, toml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_natsapp-wasm"));
    command
        .arg("run")
        .arg(&file)
        .env("NATSAPP_CACHE_DIR", cache)
        .stdout(Stdio::null());
    command
}

pub(crate) fn stop(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

/// One natsapp-wasm throughput case.
pub(crate) struct Case<'a> {
    pub(crate) component: &'a Path,
    /// `per-message` or `reuse`.
    pub(crate) instances: &'a str,
    /// The guest relays each message to `<stream>.out`.
    pub(crate) relay: bool,
    pub(crate) observed: Observed,
    /// The Python wrapper's defaults: one message per pull, one handler at a time.
    pub(crate) one_at_a_time: bool,
    /// `outputs.mode`: `"immediate"` (the default), `"pipelined"` or `"atomic"`.
    pub(crate) outputs: &'a str,
    /// The relay's output stream keeps its messages in memory (else on file).
    pub(crate) output_in_memory: bool,
    /// `prepared_instances = 0`: per-message instances made as messages
    /// arrive, none ahead.
    pub(crate) none_prepared: bool,
}

pub(crate) async fn natsapp_throughput(
    b: &crate::Bench,
    index: usize,
    c: &Case<'_>,
    n: usize,
) -> (f64, f64) {
    let (server, js, dir, cache) = (&b.server, &b.js, b.dir.path(), &b.warm_cache);
    let (component, instances, relay, observed) = (c.component, c.instances, c.relay, c.observed);
    let case = index;
    let stream = crate::broker::fresh(&format!("B{case}"));
    let subject = format!("b{case}.in");
    preload(js, &stream, &subject, n).await;
    let output = format!("{stream}.out");
    let mut toml = service_toml(
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
    if c.outputs != "immediate" {
        toml += &format!("outputs = {{ mode = \"{}\" }}\n", c.outputs);
    }
    if c.output_in_memory {
        let out = format!("subjects = [\"{output}\"]\n");
        toml = toml.replace(&out, &format!("{out}storage = \"memory\"\n"));
    }
    if c.none_prepared {
        toml = toml.replace(
            "instances = \"per-message\"\n",
            "instances = \"per-message\"\nprepared_instances = 0\n",
        );
    }
    if c.one_at_a_time {
        toml = toml.replace(
            &format!("concurrency = {CONCURRENCY}\npull = {{ batch_size = {BATCH},"),
            "concurrency = 1\npull = { batch_size = 1,",
        );
    }
    let observer = Observer::attach(observed, &mut toml).await;
    let child = spawn(&toml, dir, cache);
    let observer = observer.watching();
    let profile = std::env::var_os("NATSAPP_BENCH_PERF").map(|dir| {
        crate::noisy::perf_record(
            child.id(),
            &Path::new(&dir).join(format!("throughput-{case}.data")),
        )
    });
    let start = crate::broker::first_delivery(js, &stream, "bench").await;
    let cpu = CpuUse::since_now(child.id());
    let took = crate::broker::drained_since(js, &stream, "bench", n, start).await;
    cpu.report(child.id(), n);
    if let Some(perf) = profile {
        crate::noisy::interrupt(perf);
    }
    let (peak, _) = rss_mib(child.id());
    observer.finish(child);
    delete_streams(js, &[&stream, &format!("{stream}_OUT")]).await;
    (n as f64 / took.as_secs_f64(), peak)
}

/// What watches the service during a throughput case.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    /// Nothing.
    Not,
    /// A scraper GETs `/metrics` every 100 ms.
    Scraped,
    /// Traces are exported to an OTLP/HTTP collector on loopback.
    Traced,
}

/// The scraper or trace collector of a run.
pub(crate) struct Observer {
    admin: Option<std::net::SocketAddr>,
    scraper: Option<tokio::task::JoinHandle<()>>,
    collector: Option<OtlpSink>,
}

impl Observer {
    /// Sets `toml` up for `observed`: an admin endpoint, or traces to a
    /// collector started here.
    pub(crate) async fn attach(observed: Observed, toml: &mut String) -> Observer {
        let mut observer = Observer {
            admin: None,
            scraper: None,
            collector: None,
        };
        let setting = match observed {
            Observed::Not => return observer,
            Observed::Scraped => {
                let addr = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap();
                observer.admin = Some(addr);
                format!("admin = \"{addr}\"")
            }
            Observed::Traced => {
                let sink = OtlpSink::start().await;
                let setting = format!("traces = \"http://{}\"", sink.addr);
                observer.collector = Some(sink);
                setting
            }
        };
        *toml = toml.replacen("[service]\n", &format!("[service]\n{setting}\n"), 1);
        observer
    }

    /// Starts scraping, once the service runs.
    pub(crate) fn watching(mut self) -> Observer {
        self.scraper = self
            .admin
            .map(|addr| tokio::spawn(scrape_every_100ms(addr)));
        self
    }

    /// Stops scraping, then the service (which exports its last spans as
    /// it stops); checks that spans reached the collector.
    pub(crate) fn finish(self, service: Child) {
        if let Some(scraper) = self.scraper {
            scraper.abort();
        }
        stop(service);
        if let Some(c) = self.collector {
            let (requests, bytes) = c.received();
            assert!(requests > 0, "no spans reached the collector");
            eprintln!("  traces: {requests} OTLP export requests, {bytes} bytes");
        }
    }
}

/// A collector that accepts OTLP/HTTP exports and counts them, decoding nothing.
struct OtlpSink {
    addr: std::net::SocketAddr,
    received: Arc<[std::sync::atomic::AtomicU64; 2]>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpSink {
    async fn start() -> OtlpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received: Arc<[std::sync::atomic::AtomicU64; 2]> = Arc::default();
        let counts = received.clone();
        let router = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                counts[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                counts[1].fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
                axum::http::StatusCode::OK
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        OtlpSink {
            addr,
            received,
            task,
        }
    }

    /// Export requests and bytes received.
    fn received(self) -> (u64, u64) {
        self.task.abort();
        let load = |i: usize| self.received[i].load(std::sync::atomic::Ordering::Relaxed);
        (load(0), load(1))
    }
}

/// GETs `/metrics` from `addr` ten times a second, as a scraper would (if
/// much more often), checking every answer.
async fn scrape_every_100ms(addr: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut response = Vec::new();
        // The service may be stopping: a reset connection is not an answer.
        if conn.write_all(request.as_bytes()).await.is_err()
            || conn.read_to_end(&mut response).await.is_err()
        {
            continue;
        }
        const SERIES: &[u8] = b"natsapp_messages_received_total{";
        assert!(
            response.starts_with(b"HTTP/1.1 200")
                && response.windows(SERIES.len()).any(|w| w == SERIES),
            "/metrics did not answer with the statistics"
        );
    }
}

/// Waits until the service has created `durable` on `stream`.
pub(crate) async fn consumer_exists(js: &jetstream::Context, stream: &str, durable: &str) {
    let s = js.get_stream(stream).await.unwrap();
    let t0 = Instant::now();
    while s.consumer_info(durable).await.is_err() {
        within(t0, &format!("the service to create {durable} on {stream}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Seconds from `run` to every subscriber having handled one message.
pub(crate) async fn startup(
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
    create_stream(js, &stream, &[format!("{prefix}.>").as_str()]).await;
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
