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
/// (the spread in the note), its ratio to `raw_case` and the highest peak
/// RSS. Ratios are taken round by round — each case against the baseline
/// that ran in the same round — and the median is shown: the machine's
/// speed drifts between rounds more than the cases differ. A case with a
/// closer baseline (`closer_baseline`) also shows its ratio to that one.
pub(crate) fn medians(
    samples: &[Sample],
    raw_case: &str,
    closer_baseline: impl Fn(&str) -> Option<&'static str>,
) -> Vec<Row> {
    let mut cases: Vec<&str> = Vec::new();
    for s in samples {
        if !cases.contains(&s.case.as_str()) {
            cases.push(&s.case);
        }
    }
    let rates = |case: &str| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.case == case)
            .map(|s| s.rate)
            .collect()
    };
    cases
        .into_iter()
        .map(|case| {
            let own = rates(case);
            let rounds = own.len();
            let (median, lo, hi) = spread(own.clone());
            let ratios = |baseline: &str| {
                spread(own.iter().zip(rates(baseline)).map(|(r, b)| r / b).collect())
            };
            let peak = samples
                .iter()
                .filter(|s| s.case == case)
                .filter_map(|s| s.peak_rss_mib)
                .reduce(f64::max);
            let (ratio, ratio_lo, ratio_hi) = ratios(raw_case);
            let mut note = String::new();
            if rounds > 1 {
                note = format!(
                    "median of {rounds}: {lo:.0}–{hi:.0}; × raw per round {ratio_lo:.2}–{ratio_hi:.2}"
                );
            }
            if let Some(baseline) = closer_baseline(case).filter(|b| !rates(b).is_empty()) {
                let (r, r_lo, r_hi) = ratios(baseline);
                if !note.is_empty() {
                    note.push_str("; ");
                }
                note.push_str(&format!("× {baseline}: {r:.2} ({r_lo:.2}–{r_hi:.2})"));
            }
            Row {
                case: case.into(),
                msgs_per_s: Some(median),
                ratio: Some(ratio),
                peak_rss_mib: peak,
                note,
                ..Default::default()
            }
        })
        .collect()
}

/// Median, lowest and highest of `values`.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
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
