//! The result of each scenario: one table row (and one JSON object), and
//! the checks that decide the exit code — nothing lost, nothing stored
//! twice, no valid order dead-lettered, the durable settled, every SIGTERM
//! answered with exit 0, no order waiting longer than the scenario's bound
//! and no message handled twice at once.

use crate::process::{Exit, Stop};
use crate::verify::{ConsumerState, Counts};
use anyhow::Context as _;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How many lost order ids a note or the JSON lists.
const LOST_IDS_SHOWN: usize = 20;

/// One natsapp-wasm process the scenario stopped.
pub struct StopRecord {
    /// Its name (`r0`, …).
    pub runtime: String,
    /// The signal sent.
    pub stop: Stop,
    /// How it ended.
    pub exit: Exit,
}

/// How long orders waited from their first publish to their status output.
pub struct Waits {
    /// The longest wait, and the order that waited it.
    pub longest: Option<(Duration, String)>,
    /// What no order may wait longer than.
    pub bound: Duration,
    /// How the bound is made up.
    pub why: String,
    /// Orders in flight on a killed process: how many, and the longest
    /// time from the kill to their status output.
    pub killed_in_flight: Option<(usize, Duration)>,
    /// What those may take: ack_wait, the longest fault (a replacement's
    /// start) and 5 s.
    pub killed_bound: Duration,
}

/// One scenario's outcome.
pub struct Row {
    /// The scenario's name.
    pub scenario: &'static str,
    /// What kind of figure this is, when that needs saying.
    pub label: Option<String>,
    /// Orders the load generator was to store.
    pub planned: u64,
    /// Dead letters are the scenario's point (every order is valid, so
    /// elsewhere a dead letter is a failure).
    pub dead_letters_expected: bool,
    /// What the streams held (none when the scenario failed to run).
    pub counts: Option<Counts>,
    /// The durable at the end, after the processes stopped.
    pub end: Option<ConsumerState>,
    /// Every process stopped, in order.
    pub stops: Vec<StopRecord>,
    /// Per process: "processed order" lines in its log.
    pub processed: Vec<(String, usize)>,
    /// Deliveries of a message while its handler still ran, as the
    /// runtimes logged them.
    pub twice_at_once: usize,
    /// Messages running in a runtime that the server delivered again as a
    /// first delivery, having lost its record of the earlier one: the
    /// runtime waited for the running handler. Expected when a server is
    /// SIGKILLed, so a note rather than a failure.
    pub anew_while_running: usize,
    /// Messages running in a runtime that the server delivered again soon
    /// after that runtime's connection was made anew (a restarted server,
    /// an outage longer than ack_wait): expected, so a note; the runtime
    /// waited for the running handler.
    pub again_after_lost_connection: usize,
    /// Stalled or silent pulls the runtimes logged recovering from.
    pub pull_recoveries: usize,
    /// How long orders waited.
    pub waits: Option<Waits>,
    /// What happened along the way.
    pub notes: Vec<String>,
    /// Wall time of the scenario.
    pub elapsed: Duration,
    /// Why the scenario could not be run to the end.
    pub error: Option<String>,
    /// Where what explains a failure was kept.
    pub kept: Option<PathBuf>,
}

impl Row {
    /// A scenario that could not be run to the end.
    pub fn failed(
        scenario: &'static str,
        planned: u64,
        error: &anyhow::Error,
        elapsed: Duration,
    ) -> Row {
        Row {
            scenario,
            label: None,
            planned,
            dead_letters_expected: false,
            counts: None,
            end: None,
            stops: Vec::new(),
            processed: Vec::new(),
            twice_at_once: 0,
            anew_while_running: 0,
            again_after_lost_connection: 0,
            pull_recoveries: 0,
            waits: None,
            notes: Vec::new(),
            elapsed,
            error: Some(format!("{error:#}")),
            kept: None,
        }
    }

    /// Every check this row fails; empty when it passes.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(format!("did not run to the end: {e}"));
        }
        if let Some(c) = &self.counts {
            if c.inputs != self.planned {
                out.push(format!(
                    "{} orders stored, {} planned",
                    c.inputs, self.planned
                ));
            }
            if !c.lost.is_empty() {
                out.push(format!("{} lost", c.lost.len()));
            }
            if c.duplicate_status + c.duplicate_inventory + c.duplicate_inputs > 0 {
                out.push(format!(
                    "duplicates: {} status, {} inventory, {} inputs",
                    c.duplicate_status, c.duplicate_inventory, c.duplicate_inputs
                ));
            }
            if c.dead_lettered > 0 && !self.dead_letters_expected {
                out.push(format!(
                    "{} valid orders dead-lettered ({})",
                    c.dead_lettered,
                    causes(c)
                ));
            }
        }
        if self.twice_at_once > 0 {
            out.push(format!(
                "{} deliveries came while the message's handler still ran",
                self.twice_at_once
            ));
        }
        if let Some(w) = &self.waits {
            if let Some((longest, order)) = &w.longest {
                if longest > &w.bound {
                    out.push(format!(
                        "order {order} waited {:.1}s, above the bound {:.1}s ({})",
                        longest.as_secs_f64(),
                        w.bound.as_secs_f64(),
                        w.why
                    ));
                }
            }
            if let Some((n, longest)) = w.killed_in_flight {
                if longest > w.killed_bound {
                    out.push(format!(
                        "of {n} orders in flight at the kill, one was handled {:.1}s after it, above ack_wait + fault + 5s = {:.1}s",
                        longest.as_secs_f64(),
                        w.killed_bound.as_secs_f64()
                    ));
                }
            }
        }
        if let Some(end) = &self.end {
            if !end.settled() {
                out.push(format!(
                    "not settled: {} pending, {} awaiting ack",
                    end.pending, end.ack_pending
                ));
            }
        }
        for s in &self.stops {
            if s.stop == Stop::Term && s.exit != Exit::Code(0) {
                out.push(format!("{} exited {} after SIGTERM", s.runtime, s.exit));
            }
        }
        out
    }

    fn exits(&self) -> String {
        let exits: Vec<String> = self
            .stops
            .iter()
            .map(|s| {
                let signal = match s.stop {
                    Stop::Term => "term",
                    Stop::Kill => "kill",
                };
                format!("{}:{signal}={}", s.runtime, s.exit)
            })
            .collect();
        exits.join(" ")
    }
}

/// Prints the table, then each row's label, notes and failures.
pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<20} {:>6} {:>7} {:>9} {:>5} {:>5} {:>4} {:>8} {:>9} {:>6} {:>6}  {:<8} exits",
        "scenario",
        "in",
        "status",
        "inventory",
        "dlq",
        "lost",
        "dup",
        "settled",
        "max wait",
        "bound",
        "secs",
        "result"
    );
    for row in rows {
        let cell = |f: fn(&Counts) -> u64| {
            row.counts
                .as_ref()
                .map_or("-".to_string(), |c| f(c).to_string())
        };
        let (max_wait, bound) =
            row.waits
                .as_ref()
                .map_or(("-".to_string(), "-".to_string()), |w| {
                    (
                        w.longest
                            .as_ref()
                            .map_or("-".to_string(), |(d, _)| format!("{:.1}s", d.as_secs_f64())),
                        format!("{:.1}s", w.bound.as_secs_f64()),
                    )
                });
        println!(
            "{:<20} {:>6} {:>7} {:>9} {:>5} {:>5} {:>4} {:>8} {:>9} {:>6} {:>6.0}  {:<8} {}",
            row.scenario,
            cell(|c| c.inputs),
            cell(|c| c.status),
            cell(|c| c.inventory),
            cell(|c| c.dead_lettered),
            cell(|c| c.lost.len() as u64),
            cell(|c| c.duplicate_status + c.duplicate_inventory),
            row.end
                .map_or("-", |e| if e.settled() { "yes" } else { "no" }),
            max_wait,
            bound,
            row.elapsed.as_secs_f64(),
            if row.failures().is_empty() {
                "ok"
            } else {
                "FAIL"
            },
            row.exits()
        );
    }
    println!();
    for row in rows {
        let mut lines: Vec<String> = row.label.iter().cloned().collect();
        lines.extend(row.notes.iter().cloned());
        if let Some(w) = &row.waits {
            if let Some((longest, order)) = &w.longest {
                lines.push(format!(
                    "longest wait {:.1}s (order {order}); bound {:.1}s = {}",
                    longest.as_secs_f64(),
                    w.bound.as_secs_f64(),
                    w.why
                ));
            }
            if let Some((n, longest)) = w.killed_in_flight {
                lines.push(format!(
                    "{n} orders in flight at the kill: the last handled {:.1}s after it (bound ack_wait + fault + 5s = {:.1}s)",
                    longest.as_secs_f64(),
                    w.killed_bound.as_secs_f64()
                ));
            }
        }
        if row.anew_while_running > 0 {
            lines.push(format!(
                "{} orders came as a first delivery again while their handler still ran (the server lost its record of the delivery); the runtime waited for the handler",
                row.anew_while_running
            ));
        }
        if row.again_after_lost_connection > 0 {
            lines.push(format!(
                "{} orders came again while their handler still ran, soon after that runtime's connection was made anew (the server restarted, or the outage outlasted ack_wait); the runtime waited for the handler",
                row.again_after_lost_connection
            ));
        }
        if row.pull_recoveries > 0 {
            lines.push(format!(
                "the runtimes recovered {} stalled or silent pulls (their logs say how)",
                row.pull_recoveries
            ));
        }
        if let Some(c) = &row.counts {
            if c.dead_lettered > 0 {
                lines.push(format!("dead letters by cause: {}", causes(c)));
            }
        }
        if let Some(c) = &row.counts {
            if !c.lost.is_empty() {
                let ids: Vec<&str> = c
                    .lost
                    .iter()
                    .take(LOST_IDS_SHOWN)
                    .map(String::as_str)
                    .collect();
                lines.push(format!(
                    "lost: {}{}",
                    ids.join(" "),
                    if c.lost.len() > LOST_IDS_SHOWN {
                        " …"
                    } else {
                        ""
                    }
                ));
            }
        }
        lines.extend(row.failures().into_iter().map(|f| format!("FAIL: {f}")));
        if let Some(kept) = &row.kept {
            lines.push(format!(
                "its service.toml, the runtimes' and servers' logs, the servers' stores and the durable's info are kept in {}",
                kept.display()
            ));
        }
        for line in lines {
            println!("{}: {line}", row.scenario);
        }
    }
}

/// Writes the rows as a JSON array.
pub fn write_json(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let counts = row.counts.as_ref().map(|c| {
                json!({
                    "messages_in": c.inputs,
                    "status": c.status,
                    "inventory": c.inventory,
                    "dead_lettered": c.dead_lettered,
                    "lost": c.lost.len(),
                    "lost_ids": c.lost.iter().take(LOST_IDS_SHOWN).collect::<Vec<_>>(),
                    "duplicates": {
                        "status": c.duplicate_status,
                        "inventory": c.duplicate_inventory,
                        "inputs": c.duplicate_inputs,
                    },
                })
            });
            json!({
                "scenario": row.scenario,
                "label": row.label,
                "planned": row.planned,
                "counts": counts,
                "settled": row.end.map(|e| e.settled()),
                "pending": row.end.map(|e| e.pending),
                "ack_pending": row.end.map(|e| e.ack_pending),
                "stops": row.stops.iter().map(|s| json!({
                    "runtime": s.runtime,
                    "signal": match s.stop { Stop::Term => "SIGTERM", Stop::Kill => "SIGKILL" },
                    "exit": s.exit.to_string(),
                })).collect::<Vec<_>>(),
                "processed_log_lines": row.processed.iter().map(|(r, n)| json!({"runtime": r, "processed": n})).collect::<Vec<_>>(),
                "delivered_while_running": row.twice_at_once,
                "delivered_anew_while_running": row.anew_while_running,
                "delivered_again_after_lost_connection": row.again_after_lost_connection,
                "pull_recoveries": row.pull_recoveries,
                "dead_letter_causes": row.counts.as_ref().map(|c| &c.dead_letter_causes),
                "waits": row.waits.as_ref().map(|w| json!({
                    "longest_secs": w.longest.as_ref().map(|(d, _)| d.as_secs_f64()),
                    "longest_order": w.longest.as_ref().map(|(_, o)| o),
                    "bound_secs": w.bound.as_secs_f64(),
                    "bound": w.why,
                    "killed_in_flight": w.killed_in_flight.map(|(n, _)| n),
                    "killed_in_flight_longest_secs": w.killed_in_flight.map(|(_, d)| d.as_secs_f64()),
                    "killed_in_flight_bound_secs": w.killed_bound.as_secs_f64(),
                })),
                "kept": row.kept.as_ref().map(|p| p.display().to_string()),
                "notes": row.notes,
                "elapsed_secs": row.elapsed.as_secs_f64(),
                "error": row.error,
                "failures": row.failures(),
                "passed": row.failures().is_empty(),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&rows).context("cannot encode the rows")?;
    std::fs::write(path, text + "\n")?;
    Ok(())
}

/// The dead letters by cause, as `cause count` pairs.
fn causes(c: &Counts) -> String {
    c.dead_letter_causes
        .iter()
        .map(|(cause, n)| format!("{cause} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
