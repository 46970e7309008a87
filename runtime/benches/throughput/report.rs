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

/// One throughput measurement.
pub(crate) struct Sample {
    pub(crate) case: String,
    pub(crate) rate: f64,
    pub(crate) peak_rss_mib: Option<f64>,
}

impl Sample {
    pub(crate) fn new(case: &str, rate: f64, peak_rss_mib: Option<f64>) -> Sample {
        eprintln!("{case}: {rate:.0} msgs/s");
        Sample {
            case: case.into(),
            rate,
            peak_rss_mib,
        }
    }
}

/// One row per case, in first-seen order: the median rate of its rounds
/// (the spread in the note), its ratio to the median of `raw_case`, and
/// the highest peak RSS.
pub(crate) fn medians(samples: &[Sample], raw_case: &str) -> Vec<Row> {
    let mut cases: Vec<&str> = Vec::new();
    for s in samples {
        if !cases.contains(&s.case.as_str()) {
            cases.push(&s.case);
        }
    }
    let median_of = |case: &str| {
        let mut rates: Vec<f64> = samples
            .iter()
            .filter(|s| s.case == case)
            .map(|s| s.rate)
            .collect();
        rates.sort_by(f64::total_cmp);
        (
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1],
            rates.len(),
        )
    };
    let (raw, ..) = median_of(raw_case);
    cases
        .into_iter()
        .map(|case| {
            let (median, lo, hi, rounds) = median_of(case);
            let peak = samples
                .iter()
                .filter(|s| s.case == case)
                .filter_map(|s| s.peak_rss_mib)
                .reduce(f64::max);
            Row {
                case: case.into(),
                msgs_per_s: Some(median),
                ratio: Some(median / raw),
                peak_rss_mib: peak,
                note: if rounds > 1 {
                    format!("median of {rounds}: {lo:.0}–{hi:.0}")
                } else {
                    String::new()
                },
                ..Default::default()
            }
        })
        .collect()
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
    std::fs::write(path, serde_json::to_string_pretty(&json!({"messages": n, "payload_bytes": PAYLOAD, "batch": BATCH, "concurrency": CONCURRENCY, "rows": value})).unwrap()).unwrap();
    eprintln!("wrote {}", path.display());
}
