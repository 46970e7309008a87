//! The noisy-neighbour figure: tenant "quiet" (the Rust no-op, 100 at once)
//! drains a preloaded stream while tenant "noisy", in the same process,
//! runs 16 guests that (a) spin until their 5 s time limit, (b) flood
//! publishes, or (c) allocate past their memory limit. The quiet tenant's
//! throughput is reported as a ratio of its throughput alone, as medians of
//! interleaved rounds, with the noisy subscriber's guest CPU during the
//! drain as the runtime metered it (`natsapp_guest_cpu_seconds_total`,
//! read before and after) next to its share. The service's-own rows run
//! both subscribers without tenants, against the quiet one alone without a
//! tenant.
//!
//! Every case starts the quiet tenant's durable paused, waits until the
//! noisy tenant has taken 16 messages, then resumes it and times the
//! drain, so the noise is under way for the whole measurement. The drain
//! is five times `--messages` (at 20,000 the quiet tenant alone would be
//! done in a quarter of a second, noisy to measure); the short-drain rows
//! take `--messages` on purpose, against the quiet tenant alone on the
//! same short drain, to show what the first fraction of a second costs.
//! Each row also gives the CPU the runtime and nats-server used during the
//! drain; `NATSAPP_BENCH_PERF=DIR` records a perf profile of the runtime
//! for each drain into DIR.

use super::*;

/// Guests of the noisy tenant at once.
const SPINNERS: usize = 16;
/// Messages preloaded for the noisy tenant: enough to outlast the quiet drain.
const NOISY_MESSAGES: usize = 5_000;
/// The quiet drain, in multiples of `--messages`.
const DRAIN_FACTOR: usize = 5;

/// How the noisy subscriber runs in each case.
#[derive(Clone, Copy, PartialEq)]
enum Noise {
    /// No noisy subscriber; the quiet one in its tenant.
    None,
    /// No noisy subscriber; the quiet one the service's own.
    OwnAlone,
    /// Both the service's own subscribers, with default settings: the
    /// spinner has half of every core but one while the quiet one is busy.
    Sibling,
    /// A tenant with this CPU quota (cores; `None`: the default) and this
    /// `publish_rate` (`None`: the default).
    Tenant(Option<f64>, Option<&'static str>),
}

impl Noise {
    /// Whether the quiet subscriber is the service's own (no tenant).
    fn quiet_is_own(self) -> bool {
        matches!(self, Noise::OwnAlone | Noise::Sibling)
    }

    /// The noisy subscriber's share of guest CPU while the quiet one is
    /// busy, in cores.
    fn share(self) -> Option<f64> {
        match self {
            Noise::None | Noise::OwnAlone => None,
            Noise::Sibling => Some(natsapp_wasm::wasm::cpu::share::service_pool() / 2.0),
            Noise::Tenant(cpu, _) => {
                Some(cpu.unwrap_or(natsapp_wasm::config::defaults::TENANT_CPU))
            }
        }
    }
}

/// How many messages a case's quiet drain takes.
#[derive(Clone, Copy, PartialEq)]
enum Size {
    /// `DRAIN_FACTOR` times `--messages`: a drain of a second or two.
    Long,
    /// `--messages`: a drain of a fraction of a second (about 0.3 s at
    /// 20,000), where a burst past a quota shows.
    Short,
}

impl Bench {
    pub(crate) async fn noisy(&self, rounds: usize) -> Vec<Row> {
        let testkit = guest("wasm32-wasip2/release/testkit.wasm");
        const SPIN: &str = r#"{"op":"spin"}"#;
        const FLOOD: &str = r#"{"op":"publish_flood","n":1000000}"#;
        const BOMB: &str = r#"{"op":"alloc","mib":256}"#;
        let cases = [
            ("quiet tenant alone", Noise::None, SPIN, Size::Long),
            (
                "quiet tenant alone, short drain",
                Noise::None,
                SPIN,
                Size::Short,
            ),
            (
                "the service's own quiet subscriber alone (no tenants)",
                Noise::OwnAlone,
                SPIN,
                Size::Long,
            ),
            (
                "(a) spinning, both the service's own subscribers (no tenants, default settings)",
                Noise::Sibling,
                SPIN,
                Size::Long,
            ),
            (
                "(a) spinning, noisy tenant at the default quotas (cpu 1)",
                Noise::Tenant(None, None),
                SPIN,
                Size::Long,
            ),
            (
                "(a) spinning, noisy tenant with cpu = 0.1",
                Noise::Tenant(Some(0.1), None),
                SPIN,
                Size::Long,
            ),
            (
                "(a) spinning, noisy tenant with cpu = 0.1, short drain",
                Noise::Tenant(Some(0.1), None),
                SPIN,
                Size::Short,
            ),
            (
                "(b) publish flood, noisy tenant at the default quotas",
                Noise::Tenant(None, None),
                FLOOD,
                Size::Long,
            ),
            (
                "(b) publish flood, noisy tenant with cpu = 0.1",
                Noise::Tenant(Some(0.1), None),
                FLOOD,
                Size::Long,
            ),
            (
                "(b) publish flood, noisy tenant with cpu = 0.1 and publish_rate = 1000/s",
                Noise::Tenant(Some(0.1), Some("1000/s")),
                FLOOD,
                Size::Long,
            ),
            (
                "(c) memory bombs, noisy tenant at the default quotas",
                Noise::Tenant(None, None),
                BOMB,
                Size::Long,
            ),
            (
                "(c) memory bombs, noisy tenant with cpu = 0.1",
                Noise::Tenant(Some(0.1), None),
                BOMB,
                Size::Long,
            ),
        ];
        let mut samples: Vec<(usize, Drain)> = Vec::new();
        for round in 1..=rounds {
            eprintln!("noisy neighbour: round {round} of {rounds}");
            for (i, (case, noise, op, size)) in cases.iter().enumerate() {
                let n = match size {
                    Size::Long => self.n * DRAIN_FACTOR,
                    Size::Short => self.n,
                };
                let drain = self.noisy_case(i, *noise, op, &testkit, n).await;
                eprintln!(
                    "{case}: {:.0} msgs/s, {}",
                    drain.rate,
                    drain.cpu_note(drain.noisy_guest_cpu)
                );
                samples.push((i, drain));
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let of = |i: usize, field: fn(&Drain) -> Option<f64>| {
            samples
                .iter()
                .filter(|s| s.0 == i)
                .filter_map(|s| field(&s.1))
                .collect::<Vec<_>>()
        };
        let rates_of = |i: usize| of(i, |d| Some(d.rate));
        // A short drain is compared with the quiet tenant alone on a short
        // drain: a drain's start-up weighs more in it; the service's own
        // subscribers with the quiet one alone without a tenant.
        let (alone_long, ..) = median(rates_of(0));
        let (alone_short, ..) = median(rates_of(1));
        let (alone_own, ..) = median(rates_of(2));
        cases
            .iter()
            .enumerate()
            .map(|(i, (case, noise, _, size))| {
                let (alone, baseline) = match (size, noise.quiet_is_own()) {
                    (_, true) => (alone_own, "the service's own quiet subscriber alone"),
                    (Size::Short, false) => {
                        (alone_short, "the quiet tenant alone on a short drain")
                    }
                    (Size::Long, false) => (alone_long, "the quiet tenant alone"),
                };
                let rates = rates_of(i);
                let runs = rates.len();
                let (rate, lo, hi) = median(rates);
                let ratios = if runs > 1 {
                    format!(" (median of {runs}: {:.2}–{:.2}×)", lo / alone, hi / alone)
                } else {
                    String::new()
                };
                let processes = Drain {
                    rate,
                    noisy_guest_cpu: None,
                    runtime_cores: median(of(i, |d| Some(d.runtime_cores))).0,
                    server_cores: median(of(i, |d| Some(d.server_cores))).0,
                };
                let guest = of(i, |d| d.noisy_guest_cpu);
                let share = match noise.share() {
                    Some(share) if !guest.is_empty() => format!(", share {share}"),
                    _ => String::new(),
                };
                let cpu = format!(
                    "; {}{share}",
                    processes.cpu_note((!guest.is_empty()).then(|| median(guest).0))
                );
                Row {
                    case: format!("noisy neighbour: {case}"),
                    msgs_per_s: Some(rate),
                    note: format!("{:.2}× {baseline}{ratios}{cpu}", rate / alone),
                    ..Default::default()
                }
            })
            .collect()
    }

    async fn noisy_case(
        &self,
        case: usize,
        noise: Noise,
        op: &str,
        testkit: &Path,
        n: usize,
    ) -> Drain {
        let (quiet, noisy) = (format!("QUIET{case}"), format!("NOISY{case}"));
        let quiet_subject = format!("quiet{case}.in");
        let noisy_subject = format!("noisy{case}.in");
        preload(&self.js, &quiet, &quiet_subject, n).await;
        create_stream(&self.js, &noisy, &[&noisy_subject]).await;
        // Enough noise to outlast the quiet tenant's drain.
        let mut acks = Vec::new();
        for _ in 0..NOISY_MESSAGES {
            acks.push(
                self.js
                    .publish(noisy_subject.clone(), op.to_string().into())
                    .await
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap();
        }
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (quiet_tenant, quiet_in_tenant) = if noise.quiet_is_own() {
            (String::new(), "")
        } else {
            (
                format!(
                    "[[tenants]]\nname = \"quiet\"\nquotas = {{ concurrency = {CONCURRENCY} }}\n"
                ),
                "tenant = \"quiet\"\n",
            )
        };
        let mut toml = format!(
            "[service]\nname = \"noisy-bench\"\ngraceful_timeout = \"1s\"\nadmin = \"{admin}\"\n\
             [nats]\nservers = [\"{}\"]\n\
             [[streams]]\nname = \"{quiet}\"\nsubjects = [\"{quiet_subject}\"]\ndeclare = false\n\
             [[streams]]\nname = \"{noisy}\"\nsubjects = [\"{noisy_subject}\"]\ndeclare = false\n\
             {quiet_tenant}\
             [[subscribers]]\nname = \"quiet\"\n{quiet_in_tenant}component = \"{}\"\nsubject = \"{quiet_subject}\"\n\
             stream = \"{quiet}\"\ndurable = \"quiet\"\nconcurrency = {CONCURRENCY}\n\
             pull = {{ batch_size = {BATCH}, timeout = \"1s\" }}\n",
            self.server.url(),
            self.noop.display()
        );
        let noisy_tenant = match noise {
            Noise::None | Noise::OwnAlone => None,
            Noise::Sibling => Some(String::new()),
            Noise::Tenant(cpu, publish_rate) => {
                let mut quotas = cpu.map_or(String::new(), |c| format!(", cpu = \"{c}\""));
                if let Some(rate) = publish_rate {
                    quotas += &format!(", publish_rate = \"{rate}\"");
                }
                toml += &format!(
                    "[[tenants]]\nname = \"noisy\"\nquotas = {{ concurrency = {SPINNERS}{quotas} }}\n"
                );
                Some("tenant = \"noisy\"\n".to_string())
            }
        };
        if let Some(tenant) = &noisy_tenant {
            toml += &format!(
                "[[subscribers]]\nname = \"noisy\"\n{tenant}component = \"{}\"\nsubject = \"{noisy_subject}\"\n\
                 stream = \"{noisy}\"\ndurable = \"noisy\"\nconcurrency = {SPINNERS}\nlimits = {{ timeout = \"5s\" }}\n\
                 publish = [\"testkit.out.>\"]\n",
                testkit.display()
            );
        }
        self.create_paused_durable(&toml, &quiet).await;
        let log = self.dir.path().join(format!("noisy-{case}.log"));
        let child = spawn_logging_quotas(&toml, self.dir.path(), &self.warm_cache, &log);
        if noisy_tenant.is_some() {
            let s = self.js.get_stream(&noisy).await.unwrap();
            let t0 = Instant::now();
            loop {
                within(t0, "the noisy tenant to take its messages");
                if let Ok(info) = s.consumer_info("noisy").await {
                    if info.delivered.stream_sequence >= SPINNERS as u64 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            consumer_exists(&self.js, &quiet, "quiet").await;
        }
        let profile = std::env::var_os("NATSAPP_BENCH_PERF").map(|dir| {
            perf_record(
                child.id(),
                &Path::new(&dir).join(format!("noisy-{case}.data")),
            )
        });
        let stream = self.js.get_stream(&quiet).await.unwrap();
        stream.resume_consumer("quiet").await.unwrap();
        // The drain, and the noisy side's guest CPU (while the quiet side
        // is busy, the noisy one has only its share), are timed from the
        // first delivery; the processes' CPU over the whole wait, from the
        // resume.
        let watched = Instant::now();
        let cpu_before = (cpu_seconds(child.id()), cpu_seconds(self.server.pid()));
        let start = first_delivery(&self.js, &quiet, "quiet").await;
        let noisy_guest_before = match noisy_tenant {
            Some(_) => noisy_guest_seconds(admin).await,
            None => None,
        };
        let took = drained_since(&self.js, &quiet, "quiet", n, start).await;
        let (runtime_cpu, server_cpu) = (
            cpu_seconds(child.id()) - cpu_before.0,
            cpu_seconds(self.server.pid()) - cpu_before.1,
        );
        let noisy_guest_after = match noisy_tenant {
            Some(_) => noisy_guest_seconds(admin).await,
            None => None,
        };
        let (watched, busy) = (
            watched.elapsed().as_secs_f64(),
            start.elapsed().as_secs_f64(),
        );
        if let Some(perf) = profile {
            interrupt(perf);
        }
        stop(child);
        delete_streams(&self.js, &[&quiet, &noisy]).await;
        Drain {
            rate: n as f64 / took.as_secs_f64(),
            noisy_guest_cpu: noisy_guest_before
                .zip(noisy_guest_after)
                .map(|(before, after)| (after - before) / busy),
            runtime_cores: runtime_cpu / watched,
            server_cores: server_cpu / watched,
        }
    }

    /// Creates the quiet subscriber's durable as the runtime would, paused
    /// for a minute: the runtime waits on a paused consumer.
    async fn create_paused_durable(&self, toml: &str, stream: &str) {
        let file = self.dir.path().join("noisy-check.toml");
        let config = natsapp_wasm::config::Config::parse(&file, toml, |_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let sub = config.subscriber("quiet").unwrap();
        let mut want = natsapp_wasm::nats::setup::consumer_config(
            sub,
            natsapp_wasm::nats::setup::StartAt::First,
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        want.pause_until = Some(
            async_nats::datetime::DateTime::from_unix_timestamp_nanos(
                (now + Duration::from_secs(60)).as_nanos() as i128,
            )
            .unwrap(),
        );
        self.js
            .get_stream(stream)
            .await
            .unwrap()
            .create_consumer(want)
            .await
            .unwrap();
    }
}

/// One quiet drain: its rate and where the CPU went meanwhile.
struct Drain {
    rate: f64,
    /// The noisy subscriber's guest CPU during the drain, in cores.
    noisy_guest_cpu: Option<f64>,
    /// The runtime process's CPU during the drain, in cores.
    runtime_cores: f64,
    /// nats-server's CPU during the drain, in cores.
    server_cores: f64,
}

impl Drain {
    fn cpu_note(&self, noisy_guest_cpu: Option<f64>) -> String {
        let guest =
            noisy_guest_cpu.map_or(String::new(), |c| format!("noisy guest CPU {c:.3} cores, "));
        format!(
            "{guest}runtime {:.2} cores, nats-server {:.2} cores",
            self.runtime_cores, self.server_cores
        )
    }
}

/// Samples the runtime `pid` (cpu-clock, call graphs) into `data` until
/// interrupted: `NATSAPP_BENCH_PERF=DIR` profiles each case's drain. Call
/// graphs are unwound from DWARF: release builds keep no frame pointers,
/// and wasmtime's fibers end frame-pointer chains (read the data with
/// `perf report --no-inline`, which is quick).
pub(crate) fn perf_record(pid: u32, data: &Path) -> std::process::Child {
    let perf = Command::new("perf")
        .args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "999",
            "--call-graph",
            "dwarf,16384",
            "-q",
            "-o",
        ])
        .arg(data)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("perf is not installed (apt-get install linux-perf)");
    std::thread::sleep(Duration::from_millis(300));
    perf
}

pub(crate) fn interrupt(mut perf: std::process::Child) {
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    let _ = perf.wait();
}

/// The noisy subscriber's guest CPU so far, in seconds, from the
/// runtime's `/metrics` at `admin` (which opens once the service runs).
async fn noisy_guest_seconds(admin: std::net::SocketAddr) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t0 = Instant::now();
    let mut conn = loop {
        match tokio::net::TcpStream::connect(admin).await {
            Ok(conn) => break conn,
            Err(_) => {
                within(t0, "the runtime's admin endpoint");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    response
        .lines()
        .find(|l| {
            l.starts_with("natsapp_guest_cpu_seconds_total{") && l.contains("subscriber=\"noisy\"")
        })?
        .rsplit_once(' ')?
        .1
        .parse()
        .ok()
}
