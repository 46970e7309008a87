//! `--soak N`: short runs of the chosen scenarios, round-robin, N in all —
//! long enough to catch what happens once in dozens of runs (a stall after
//! a leader change). Every failed run keeps its service.toml, the
//! runtimes' and servers' logs, the servers' stores and the durable's
//! info; the summary gives, per scenario, how many runs passed, the
//! longest wait seen and how often the runtimes recovered a pull by
//! themselves.

use crate::report::{self, Row};
use crate::scenarios::Scenario;
use anyhow::Context as _;
use futures::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// What the runs of one scenario came to.
#[derive(Default)]
struct Tally {
    runs: u32,
    passed: u32,
    /// Runs whose durable did not settle: a stall.
    unsettled: u32,
    longest_wait: Duration,
    pull_recoveries: usize,
    failures: Vec<String>,
}

/// Tallies `runs` short runs as `results` yields them; `Ok(false)` when
/// any failed.
pub async fn run(
    runs: u32,
    results: impl Stream<Item = (Scenario, Row)>,
    json: Option<&Path>,
) -> anyhow::Result<bool> {
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut results = std::pin::pin!(results);
    let mut n = 0;
    while let Some((scenario, row)) = results.next().await {
        let failures = row.failures();
        let tally = tallies.entry(scenario.name()).or_default();
        tally.runs += 1;
        tally.pull_recoveries += row.pull_recoveries;
        if let Some((wait, _)) = row.waits.as_ref().and_then(|w| w.longest.as_ref()) {
            tally.longest_wait = tally.longest_wait.max(*wait);
        }
        if row.end.is_some_and(|e| !e.settled()) {
            tally.unsettled += 1;
        }
        if failures.is_empty() {
            tally.passed += 1;
        } else {
            let kept = row
                .kept
                .as_ref()
                .map_or(String::new(), |k| format!(" (kept in {})", k.display()));
            tally
                .failures
                .push(format!("run {}: {}{kept}", n + 1, failures.join("; ")));
        }
        eprintln!(
            "soak {}/{runs} {}: {}",
            n + 1,
            scenario.name(),
            if failures.is_empty() {
                "ok".to_string()
            } else {
                format!("FAIL: {}", failures.join("; "))
            }
        );
        rows.push(row);
        n += 1;
    }
    print_summary(&tallies);
    if let Some(path) = json {
        report::write_json(path, &rows)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(rows.iter().all(|r: &Row| r.failures().is_empty()))
}

fn print_summary(tallies: &BTreeMap<&'static str, Tally>) {
    println!();
    println!(
        "{:<20} {:>5} {:>7} {:>7} {:>10} {:>10}",
        "scenario", "runs", "passed", "stalls", "max wait", "recovered"
    );
    for (name, t) in tallies {
        println!(
            "{:<20} {:>5} {:>7} {:>7} {:>9.1}s {:>10}",
            name,
            t.runs,
            t.passed,
            t.unsettled,
            t.longest_wait.as_secs_f64(),
            t.pull_recoveries
        );
    }
    println!();
    for (name, t) in tallies {
        for f in &t.failures {
            println!("{name}: {f}");
        }
    }
}
