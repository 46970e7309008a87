//! A black-box chaos suite for natsapp-wasm. It runs the real
//! `natsapp-wasm` binary with the order-processor component, as a user
//! would, and breaks things while orders flow through it:
//!
//! ```text
//!  load ──order.created (Msg-Id order-<i>)──▶ nats-server(s) ◀──pull/ack/publish── natsapp-wasm process(es)
//!   │                                             │  ▲                                  ▲
//!   │ published count                             │  └── kill -9 / restart (servers)     └── SIGTERM / SIGKILL (process)
//!   ▼                                             ▼
//! scenario script ──────────────────────▶ verify: ORDER_EVENTS vs ORDER_STATUS, INVENTORY, DEAD_LETTERS
//!                                                  ▼
//!                                          report: one row per scenario (table, JSON)
//! ```
//!
//! Modules, in the order of that flow: [`artifacts`] finds the binary and
//! the component, [`servers`] runs one nats-server or a three-node cluster,
//! [`service`] writes the service.toml, [`process`] runs and stops a
//! natsapp-wasm process, [`load`] publishes the orders, [`harness`] holds
//! one scenario's world, [`scenarios`] are the fault scripts, [`verify`]
//! counts what was stored and [`report`] prints it; [`soak`] runs
//! scenarios over and over and sums up what went wrong.

pub mod artifacts;
pub mod harness;
pub mod load;
pub mod poll;
pub mod process;
pub mod report;
pub mod scenarios;
pub mod servers;
pub mod service;
pub mod soak;
pub mod verify;

pub use scenarios::Scenario;
pub use service::ConsumerSettings;

use anyhow::Context as _;
use artifacts::Artifacts;
use futures::{Stream, StreamExt};
use report::Row;
use scenarios::Timing;
use std::path::PathBuf;

/// What to run.
pub struct Options {
    /// Orders per scenario; `None`: 250 with `short`, else 20,000.
    pub messages: Option<u64>,
    /// Scenarios in the order given; empty: all of them.
    pub scenarios: Vec<Scenario>,
    /// The short (CI) timings.
    pub short: bool,
    /// Where to write the rows as JSON.
    pub json: Option<PathBuf>,
    /// Run the scenarios (by default the cluster ones) this many times in
    /// all, short, keeping every failed run.
    pub soak: Option<u32>,
    /// The durable's settings.
    pub consumer: ConsumerSettings,
    /// Scenarios run side by side (each with its own servers and processes).
    pub jobs: usize,
}

tokio::task_local! {
    /// The scenario whose progress a task reports, set when several run at once.
    static RUNNING: &'static str;
}

/// Shows a progress line as the run goes, named by its scenario when
/// several run at once.
pub(crate) fn progress(line: impl std::fmt::Display) {
    match RUNNING.try_with(|name| *name) {
        Ok(name) => eprintln!("  {name}: {line}"),
        Err(_) => eprintln!("  {line}"),
    }
}

/// Runs the scenarios `jobs` at a time, starting the next as soon as one
/// ends, and yields their rows as they end.
fn rows<'a>(
    chosen: Vec<Scenario>,
    jobs: usize,
    artifacts: &'a Artifacts,
    timing: &'a Timing,
) -> impl Stream<Item = (Scenario, Row)> + 'a {
    futures::stream::iter(chosen)
        .map(move |scenario| async move {
            let run = scenarios::run(scenario, artifacts, timing);
            let row = if jobs > 1 {
                RUNNING.scope(scenario.name(), run).await
            } else {
                eprintln!("── {} ──", scenario.name());
                run.await
            };
            (scenario, row)
        })
        .buffer_unordered(jobs.max(1))
}

/// Runs the scenarios (`jobs` at a time), prints the table and writes the
/// JSON. `Ok(false)` when any scenario failed its checks.
pub async fn run(options: Options) -> anyhow::Result<bool> {
    let artifacts = Artifacts::locate()?;
    if let Some(runs) = options.soak {
        let timing = scenarios::Timing::new(true, options.messages, options.consumer);
        let chosen = if options.scenarios.is_empty() {
            Scenario::ALL
                .into_iter()
                .filter(|s| s.on_cluster())
                .collect()
        } else {
            options.scenarios
        };
        anyhow::ensure!(!chosen.is_empty(), "no scenario to soak");
        eprintln!(
            "natsapp-chaos --soak {runs}: {} scenario(s) round-robin, {} at a time, {} orders each",
            chosen.len(),
            options.jobs,
            timing.messages
        );
        let order = (0..runs as usize)
            .map(|n| chosen[n % chosen.len()])
            .collect();
        let rows = rows(order, options.jobs, &artifacts, &timing);
        return soak::run(runs, rows, options.json.as_deref()).await;
    }
    let timing = scenarios::Timing::new(options.short, options.messages, options.consumer);
    let chosen = if options.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        options.scenarios
    };
    eprintln!(
        "natsapp-chaos: {} scenario(s), {} at a time, {} orders each, natsapp-wasm {}, component {}",
        chosen.len(),
        options.jobs,
        timing.messages,
        artifacts.natsapp.display(),
        artifacts.component.display()
    );
    let mut ended: Vec<(Scenario, Row)> = rows(chosen.clone(), options.jobs, &artifacts, &timing)
        .inspect(|(scenario, row)| {
            if let Some(e) = &row.error {
                eprintln!("{}: {e}", scenario.name());
            }
        })
        .collect()
        .await;
    // The table follows the order asked for, not the order of ending.
    ended.sort_by_key(|(scenario, _)| chosen.iter().position(|c| c == scenario));
    let rows: Vec<Row> = ended.into_iter().map(|(_, row)| row).collect();
    report::print_table(&rows);
    if let Some(path) = &options.json {
        report::write_json(path, &rows)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(rows.iter().all(|r| r.failures().is_empty()))
}
