//! `natsapp-chaos`: runs the chaos scenarios against the natsapp-wasm
//! binary and exits non-zero when any of them lost a message, stored a
//! duplicate, did not settle or stopped badly. See the crate documentation.

use clap::Parser;
use natsapp_chaos::{ConsumerSettings, Options, Scenario};
use std::path::PathBuf;
use std::process::ExitCode;

/// Chaos suite for natsapp-wasm: faults under load, then count what was stored.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Orders published per scenario [default: 250 with --short, else 20000].
    #[arg(long)]
    messages: Option<u64>,
    /// Scenarios to run, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// Few messages and the shortest timings that still exercise each fault (for CI).
    #[arg(long)]
    short: bool,
    /// Also write the rows as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Run N short runs in all, round-robin over the scenarios [default: the
    /// cluster ones], keeping every failed run's logs, stores and consumer
    /// info; prints a summary.
    #[arg(long, value_name = "N")]
    soak: Option<u32>,
    /// The durable's settings: the suite's own, or the order-processor
    /// example's (max_deliver 3, backoff 1s, 10s).
    #[arg(long, value_enum, default_value = "chaos")]
    consumer: ConsumerSettings,
    /// Scenarios run side by side, each with its own servers and
    /// processes (faster; the waits then include the other's load).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        messages: args.messages,
        scenarios: args.scenario,
        short: args.short,
        json: args.json,
        soak: args.soak,
        consumer: args.consumer,
        jobs: args.jobs.into(),
    };
    match natsapp_chaos::run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
