//! One scenario's world: its servers, its service.toml, the natsapp-wasm
//! processes it started and stopped, and the measurement that ends it
//! (wait for the load and the durable, stop gracefully, count).

use crate::artifacts::Artifacts;
use crate::load::Load;
use crate::poll::eventually;
use crate::process::{RuntimeProcess, Stop};
use crate::report::{Row, StopRecord};
use crate::scenarios::Timing;
use crate::servers::Servers;
use crate::service::ServiceSpec;
use crate::verify;
use anyhow::Context as _;
use async_nats::jetstream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a new process may take to declare the streams and durable
/// (compiling the component on a cold cache included).
const START_WITHIN: Duration = Duration::from_secs(120);

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
        let mut service = ServiceSpec {
            servers: servers.urls(),
            replicas: servers.replicas(),
            component: artifacts.component.clone(),
            concurrency: 4,
            max_deliver: 5,
            work: Duration::ZERO,
            slow_every: 0,
            slow: Duration::ZERO,
            graceful_timeout: timing.graceful,
            atomic: false,
        };
        spec(&mut service);
        let service = service.write(dir.path())?;
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
            started: Instant::now(),
        })
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
        let (process, stopped) = &mut self.runtimes[index];
        let exit = process.stop(stop, within).await?;
        *stopped = true;
        eprintln!("  {} stopped by {stop:?}: exit {exit}", process.name());
        self.stops.push(StopRecord {
            runtime: process.name().to_string(),
            stop,
            exit,
        });
        Ok(())
    }

    /// Adds a line to the row's notes (and shows it as the run goes).
    pub fn note(&mut self, note: String) {
        eprintln!("  {note}");
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
        let mut row = Row {
            scenario,
            label: None,
            planned: self.timing.messages,
            counts: Some(counts),
            end: Some(end),
            stops: self.stops,
            processed,
            notes: self.notes,
            elapsed: self.started.elapsed(),
            error: None,
        };
        if !row.failures().is_empty() {
            // What it takes to find out why: the runtimes' logs.
            let kept = self.dir.keep();
            row.notes.push(format!(
                "its service.toml and the runtimes' logs are kept in {}",
                kept.display()
            ));
        }
        Ok(row)
    }
}
