//! Prepared instances: the latency of a handler at a steady rate, with
//! reused instances, with per-message instances made as messages arrive
//! (`prepared_instances = 0`), and with per-message instances made ahead
//! (the default) — Rust at 1,000 and Python at 100 requests a second.
//! Each is an endpoint of one service (the kits' `respond`, concurrency 4),
//! asked at that rate for a few seconds per round, rounds interleaving the
//! three; the latency is the requester's, request sent to answer read.
//! The throughput section's per-message rows measure the same choice at
//! saturation.

use super::*;
use crate::endpoints::{answered, ask};

/// The modes compared, each an endpoint of its own.
const MODES: [(&str, &str); 3] = [
    ("reuse", "instances = \"reuse\""),
    (
        "fresh",
        "instances = \"per-message\"\nprepared_instances = 0",
    ),
    ("prepared", "instances = \"per-message\""),
];

impl Bench {
    pub(crate) async fn prepared(&self, rounds: usize, seconds: u64) -> Vec<Row> {
        let python_kit = guest("python/kit.wasm");
        let mut rows = Vec::new();
        for (language, component, rate) in [
            ("Rust", &self.testkit, 1000u32),
            ("Python", &python_kit, 100),
        ] {
            let mut toml = format!(
                "[service]\nname = \"prep\"\ngraceful_timeout = \"2s\"\n[nats]\nservers = [\"{}\"]\n",
                self.server.url()
            );
            for (mode, settings) in MODES {
                toml += &format!(
                    "[[endpoints]]\nname = \"{mode}\"\nsubject = \"prep.{mode}\"\ncomponent = \"{}\"\nconcurrency = 4\n{settings}\n",
                    component.display()
                );
            }
            let child = spawn(&toml, self.dir.path(), &self.warm_cache);
            let payload = r#"{"op":"respond","data":"x"}"#;
            for (mode, _) in MODES {
                answered(&self.client, &format!("prep.{mode}"), payload).await;
            }
            let mut latencies: [Vec<f64>; 3] = Default::default();
            for round in 1..=rounds {
                eprintln!("prepared, {language}: round {round} of {rounds}");
                for ((mode, _), into) in MODES.iter().zip(&mut latencies) {
                    let subject = format!("prep.{mode}");
                    into.extend(paced(&self.client, &subject, payload, rate, seconds).await);
                }
            }
            let (peak, _) = rss_mib(child.id());
            stop(child);
            let pct = |v: &mut Vec<f64>, p: f64| {
                v.sort_by(f64::total_cmp);
                v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
            };
            let reused_p50 = pct(&mut latencies[0], 0.5);
            for ((mode, _), mut v) in MODES.iter().zip(latencies) {
                let (p50, p99) = (pct(&mut v, 0.5), pct(&mut v, 0.99));
                let what = match *mode {
                    "reuse" => "reused instances",
                    "fresh" => "per-message instances, none prepared",
                    _ => "per-message instances, prepared ahead",
                };
                rows.push(Row {
                    case: format!(
                        "latency, natsapp-wasm {language} endpoint at {rate} requests/s, {what}"
                    ),
                    p50_ms: Some(p50),
                    p99_ms: Some(p99),
                    peak_rss_mib: Some(peak),
                    note: format!(
                        "{} requests over {rounds} rounds of {seconds} s; p50 added over reused: {:.3} ms",
                        v.len(),
                        p50 - reused_p50
                    ),
                    ..Default::default()
                });
            }
        }
        rows
    }
}

/// Requests to `subject` at `rate` a second for `seconds`, each sent on
/// time whether or not the one before is answered: their latencies in ms.
async fn paced(
    client: &async_nats::Client,
    subject: &str,
    payload: &str,
    rate: u32,
    seconds: u64,
) -> Vec<f64> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut asked = Vec::new();
    for _ in 0..u64::from(rate) * seconds {
        tick.tick().await;
        let (client, subject, payload) = (client.clone(), subject.to_string(), payload.to_string());
        asked.push(tokio::spawn(async move {
            ask(&client, &subject, &payload).await
        }));
    }
    let mut latencies = Vec::with_capacity(asked.len());
    for a in asked {
        latencies.push(a.await.expect("a request task"));
    }
    latencies
}
