//! The table and the JSON the benchmark writes.

use super::*;

#[derive(Default, Clone)]
pub(crate) struct Row {
    pub(crate) case: String,
    pub(crate) msgs_per_s: Option<f64>,
    pub(crate) ratio: Option<f64>,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) peak_rss_mib: Option<f64>,
    pub(crate) note: String,
}

impl Row {
    /// A throughput case: its rate, the ratio to `raw` and the peak RSS.
    pub(crate) fn throughput(case: &str, rate: f64, raw: f64, peak_rss_mib: f64) -> Row {
        eprintln!("{case}: {rate:.0} msgs/s");
        Row {
            case: case.into(),
            msgs_per_s: Some(rate),
            ratio: Some(rate / raw),
            peak_rss_mib: Some(peak_rss_mib),
            ..Default::default()
        }
    }
}

pub(crate) fn print_table(rows: &[Row], n: usize) {
    let f = |v: Option<f64>, d: usize| v.map_or(String::new(), |v| format!("{v:.d$}"));
    println!("\n{n} messages of {PAYLOAD} B, batch {BATCH}, concurrency {CONCURRENCY}, one nats-server\n");
    println!("| case | msgs/s | × raw | p50 ms | p99 ms | peak RSS MiB | |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.case,
            f(r.msgs_per_s, 0),
            f(r.ratio, 2),
            f(r.p50_ms, 2),
            f(r.p99_ms, 2),
            f(r.peak_rss_mib, 1),
            r.note
        );
    }
}

/// Writes the rows and the run's shape as JSON to `path`.
pub(crate) fn write_json(rows: &[Row], n: usize, path: &Path) {
    let value: Vec<_> = rows
            .iter()
            .map(|r| json!({"case": r.case, "msgs_per_s": r.msgs_per_s, "ratio_to_raw": r.ratio, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "peak_rss_mib": r.peak_rss_mib, "note": r.note}))
            .collect();
    std::fs::write(&path, serde_json::to_string_pretty(&json!({"messages": n, "payload_bytes": PAYLOAD, "batch": BATCH, "concurrency": CONCURRENCY, "rows": value})).unwrap()).unwrap();
    eprintln!("wrote {}", path.display());
}
