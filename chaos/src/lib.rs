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
}

/// Runs the scenarios one after another, prints the table and writes the
/// JSON. `Ok(false)` when any scenario failed its checks.
pub async fn run(options: Options) -> anyhow::Result<bool> {
    let artifacts = artifacts::Artifacts::locate()?;
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
        return soak::run(runs, &chosen, &artifacts, &timing, options.json.as_deref()).await;
    }
    let timing = scenarios::Timing::new(options.short, options.messages, options.consumer);
    let chosen = if options.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        options.scenarios
    };
    eprintln!(
        "natsapp-chaos: {} scenario(s), {} orders each, natsapp-wasm {}, component {}",
        chosen.len(),
        timing.messages,
        artifacts.natsapp.display(),
        artifacts.component.display()
    );
    let mut rows = Vec::new();
    for scenario in chosen {
        eprintln!("── {} ──", scenario.name());
        let row = scenarios::run(scenario, &artifacts, &timing).await;
        if let Some(e) = &row.error {
            eprintln!("{}: {e}", scenario.name());
        }
        rows.push(row);
    }
    report::print_table(&rows);
    if let Some(path) = &options.json {
        report::write_json(path, &rows)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(rows.iter().all(|r| r.failures().is_empty()))
}
