//! One scenario's world: its servers, its service.toml, the natsapp-wasm
//! processes it started and stopped, the faults it caused (how long each
//! kept NATS or the runtime away, which states the bound on any order's
//! wait), and the measurement that ends it (wait for the load and the
//! durable, stop gracefully, count, and keep what explains a failure).

use crate::artifacts::Artifacts;
use crate::load::Load;
use crate::poll::eventually;
use crate::process::{RuntimeProcess, Stop};
use crate::report::{Row, StopRecord, Waits};
use crate::scenarios::Timing;
use crate::servers::Servers;
use crate::service::ServiceSpec;
use crate::verify;
use anyhow::Context as _;
use async_nats::jetstream;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a new process may take to declare the streams and durable
/// (compiling the component on a cold cache included).
const START_WITHIN: Duration = Duration::from_secs(120);

/// Where every scenario's bound on an order's wait starts: the largest
/// backoff step, one pull timeout, and 5 s.
pub fn base_bound(spec: &ServiceSpec) -> Duration {
    spec.backoff.iter().copied().max().unwrap_or_default()
        + spec.pull_timeout
        + Duration::from_secs(5)
}

/// A fault the scenario caused.
pub struct Fault {
    /// What it was, for the notes.
    pub what: String,
    /// How long it kept NATS (or the only runtime) away.
    pub lasted: Duration,
    /// A process or its connection died with messages in flight: those
    /// wait out `ack_wait` before the server delivers them again.
    pub in_flight_lost: bool,
}

/// A scenario in progress.
pub struct Harness {
    /// The servers, for scenarios that break them.
    pub servers: Servers,
    /// A JetStream context that rides through server failures.
    pub js: jetstream::Context,
    /// The sizes and timings it runs with.
    pub timing: Timing,
    dir: tempfile::TempDir,
    service: PathBuf,
    bin: PathBuf,
    runtimes: Vec<(RuntimeProcess, bool)>,
    stops: Vec<StopRecord>,
    notes: Vec<String>,
    faults: Vec<Fault>,
    /// Added to the bound for work the scenario queues on purpose.
    backlog: Duration,
    /// Per killed process: the stream sequences delivered and not yet
    /// acknowledged just before the kill, and when it was killed.
    killed_in_flight: Vec<(RangeInclusive<u64>, SystemTime)>,
    spec: ServiceSpec,
    started: Instant,
}

impl Harness {
    /// Writes the service.toml for `servers` (as `spec` adjusts it).
    pub async fn new(
        servers: Servers,
        artifacts: &Artifacts,
        timing: &Timing,
        spec: impl FnOnce(&mut ServiceSpec),
    ) -> anyhow::Result<Harness> {
        let dir = tempfile::tempdir().context("cannot create a working directory")?;
        let mut spec_ = ServiceSpec::new(
            servers.urls(),
            servers.replicas(),
            artifacts.component.clone(),
            timing.graceful,
            timing.consumer,
        );
        spec(&mut spec_);
        let service = spec_.write(dir.path())?;
        let js = servers.jetstream().await?;
        Ok(Harness {
            servers,
            js,
            timing: timing.clone(),
            dir,
            service,
            bin: artifacts.natsapp.clone(),
            runtimes: Vec::new(),
            stops: Vec::new(),
            notes: Vec::new(),
            faults: Vec::new(),
            backlog: Duration::ZERO,
            killed_in_flight: Vec::new(),
            spec: spec_,
            started: Instant::now(),
        })
    }

    /// The service the scenario runs.
    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    /// Records a fault, noted with how long it lasted.
    pub fn fault(&mut self, fault: Fault) {
        self.note(format!(
            "{} ({:.1}s{})",
            fault.what,
            fault.lasted.as_secs_f64(),
            if fault.in_flight_lost {
                ", messages in flight lost with it"
            } else {
                ""
            }
        ));
        self.faults.push(fault);
    }

    /// Adds `work` the scenario queues on purpose to the bound.
    pub fn backlog(&mut self, work: Duration) {
        self.backlog += work;
    }

    /// Starts a natsapp-wasm process (with NATS_SERVERS = `servers` when
    /// given) and waits until the durable exists and the process still
    /// runs. Returns its index.
    pub async fn start_runtime(&mut self, servers: Option<&str>) -> anyhow::Result<usize> {
        let index = self.runtimes.len();
        let name = format!("r{index}");
        let log = self.dir.path().join(format!("{name}.log"));
        let process = RuntimeProcess::spawn(&name, &self.bin, &self.service, log, servers)?;
        self.runtimes.push((process, false));
        verify::wait_durable(&self.js, START_WITHIN)
            .await
            .with_context(|| format!("natsapp-wasm {name} did not start"))?;
        let process = &mut self.runtimes[index].0;
        eventually(&format!("natsapp-wasm {name} to run"), START_WITHIN, || {
            let running = process.ensure_running().and_then(|()| process.is_running());
            async move { Ok(running?.then_some(())) }
        })
        .await?;
        Ok(index)
    }

    /// Stops process `index` with `stop` and records how it exited.
    pub async fn stop_runtime(&mut self, index: usize, stop: Stop) -> anyhow::Result<()> {
        let within = self.timing.graceful + Duration::from_secs(10);
        if stop == Stop::Kill {
            let unacknowledged = verify::unacknowledged(&self.js).await?;
            self.killed_in_flight
                .push((unacknowledged, SystemTime::now()));
        }
        let (process, stopped) = &mut self.runtimes[index];
        let exit = process.stop(stop, within).await?;
        *stopped = true;
        crate::progress(format!(
            "{} stopped by {stop:?}: exit {exit}",
            process.name()
        ));
        self.stops.push(StopRecord {
            runtime: process.name().to_string(),
            stop,
            exit,
        });
        Ok(())
    }

    /// Adds a line to the row's notes (and shows it as the run goes).
    pub fn note(&mut self, note: String) {
        crate::progress(&note);
        self.notes.push(note);
    }

    /// Starts the load generator with the scenario's message count,
    /// spread over `spread`.
    pub fn start_load(&self, spread: Duration) -> Load {
        Load::start(self.js.clone(), self.timing.messages, spread)
    }

    /// Waits for every order to be stored and the durable to settle (up to
    /// `settle_within`), stops the running processes with SIGTERM, and
    /// counts.
    pub async fn finish(
        mut self,
        scenario: &'static str,
        load: Load,
        settle_within: Duration,
    ) -> anyhow::Result<Row> {
        let summary = load.finish().await?;
        if summary.retries > 0 {
            self.note(format!(
                "{} publish attempts retried while storing {} orders",
                summary.retries, summary.stored
            ));
        }
        let before_stop = verify::wait_settled(&self.js, settle_within).await?;
        if !before_stop.settled() {
            self.note(format!(
                "not settled after {settle_within:?}: {} pending, {} awaiting ack",
                before_stop.pending, before_stop.ack_pending
            ));
        }
        for index in 0..self.runtimes.len() {
            if !self.runtimes[index].1 {
                self.stop_runtime(index, Stop::Term).await?;
            }
        }
        let end = eventually(
            "the durable's final state",
            Duration::from_secs(30),
            || async { verify::consumer_state(&self.js).await.map(Some) },
        )
        .await?;
        let counts = verify::count(&self.js).await?;
        let processed = self
            .runtimes
            .iter()
            .map(|(p, _)| Ok((p.name().to_string(), p.processed()?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let twice_at_once = self.logged(RuntimeProcess::delivered_twice_at_once)?;
        let anew_while_running = self.logged(RuntimeProcess::delivered_anew_while_running)?;
        let again_after_lost_connection =
            self.logged(RuntimeProcess::delivered_again_after_lost_connection)?;
        let pull_recoveries = self.logged(RuntimeProcess::pull_recoveries)?;
        let waits = self.waits(&counts, &summary.first_sent);
        let mut row = Row {
            scenario,
            label: None,
            planned: self.timing.messages,
            // Its point: messages abandoned on their last delivery.
            dead_letters_expected: scenario == crate::Scenario::RollingMaxDeliver.name(),
            counts: Some(counts),
            end: Some(end),
            stops: self.stops,
            processed,
            twice_at_once,
            anew_while_running,
            again_after_lost_connection,
            pull_recoveries,
            waits: Some(waits),
            notes: self.notes,
            elapsed: self.started.elapsed(),
            error: None,
            kept: None,
        };
        if !row.failures().is_empty() {
            row.kept = Some(keep(self.dir, &self.js, &self.servers).await);
        }
        Ok(row)
    }

    /// What `count` finds in the logs of every runtime the scenario ran.
    fn logged(&self, count: fn(&RuntimeProcess) -> anyhow::Result<usize>) -> anyhow::Result<usize> {
        self.runtimes.iter().map(|(p, _)| count(p)).sum()
    }

    /// The longest wait of any order, of those in flight when a process
    /// was killed, and the bound they are held to. In flight: delivered
    /// and unacknowledged just before the kill (on any process; those of
    /// the survivors finish at once) and handled after it.
    fn waits(&self, counts: &verify::Counts, first_sent: &[SystemTime]) -> Waits {
        let status_at = &counts.status_at;
        let waited = |id: &str| -> Option<Duration> {
            let i: usize = id.strip_prefix('o')?.parse().ok()?;
            status_at.get(id)?.duration_since(*first_sent.get(i)?).ok()
        };
        let longest = (0..first_sent.len())
            .filter_map(|i| {
                let id = format!("o{i}");
                waited(&id).map(|w| (w, id))
            })
            .max();
        let mut killed = None::<(usize, Duration)>;
        for (sequences, at) in &self.killed_in_flight {
            for sequence in sequences.clone() {
                let id = usize::try_from(sequence - 1)
                    .ok()
                    .and_then(|i| counts.inputs_by_sequence.get(i));
                let Some(done) = id.and_then(|id| status_at.get(id)) else {
                    continue;
                };
                if let Ok(after) = done.duration_since(*at) {
                    let (n, longest) = killed.unwrap_or_default();
                    killed = Some((n + 1, longest.max(after)));
                }
            }
        }
        let longest_fault = self
            .faults
            .iter()
            .map(|f| f.lasted)
            .max()
            .unwrap_or_default();
        let lost_in_flight = self.faults.iter().any(|f| f.in_flight_lost);
        let mut bound = longest_fault + base_bound(&self.spec) + self.backlog;
        let mut why = format!(
            "longest fault {:.1}s + backoff {:.1}s + pull timeout {:.1}s + 5s",
            longest_fault.as_secs_f64(),
            self.spec
                .backoff
                .iter()
                .copied()
                .max()
                .unwrap_or_default()
                .as_secs_f64(),
            self.spec.pull_timeout.as_secs_f64()
        );
        if lost_in_flight {
            bound += self.spec.ack_wait;
            why += &format!(" + ack_wait {:.0}s", self.spec.ack_wait.as_secs_f64());
        }
        if !self.backlog.is_zero() {
            why += &format!(" + queued work {:.1}s", self.backlog.as_secs_f64());
        }
        Waits {
            longest,
            bound,
            why,
            killed_in_flight: killed,
            // Redelivered after ack_wait, once a runtime is there to take them.
            killed_bound: self.spec.ack_wait + longest_fault + Duration::from_secs(5),
        }
    }
}

/// Keeps what explains a failed scenario, and says where: its
/// service.toml and the runtimes' logs, the servers' stores and logs, and
/// the durable's info as the server last gave it.
async fn keep(
    dir: tempfile::TempDir,
    js: &jetstream::Context,
    servers: &crate::servers::Servers,
) -> PathBuf {
    let kept = dir.keep();
    if let Err(e) = copy_dir(servers.dir(), &kept.join("servers")) {
        crate::progress(format!("cannot keep the servers' stores: {e}"));
    }
    let info = match verify::durable_info(js).await {
        Ok(info) => format!("{info:#?}"),
        Err(e) => format!("{e:#}"),
    };
    let _ = std::fs::write(kept.join("consumer-info.txt"), info);
    kept
}

/// Copies `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
