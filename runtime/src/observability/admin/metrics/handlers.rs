//! What a handler did — a subscriber's or an endpoint's, each kind under
//! a prefix of its own so that a query over one never mixes in the other:
//! call durations and outcomes, instances, guest CPU, and the guest's
//! key-value and HTTP calls.

use super::{counter, counter_f64, gauge, histogram, Families, Family, Labels};
use crate::observability::stats::SubscriberSnapshot;
use prometheus::proto::MetricType;

/// A handler's labels and figures.
pub(super) type Handler<'a> = (Labels, &'a SubscriberSnapshot);

/// The handler families of `handlers`, named `prefix` + their name.
pub(super) fn families(m: &mut Families, prefix: &str, handlers: &[Handler]) {
    let one_each: [Family<SubscriberSnapshot>; 10] = [
        (
            "handler_duration_seconds",
            "Handler call duration",
            MetricType::HISTOGRAM,
            |s| histogram(&s.latency),
        ),
        (
            "handler_retries_total",
            "Handlers that returned retry",
            MetricType::COUNTER,
            |s| counter(s.retried),
        ),
        (
            "handler_rejects_total",
            "Handlers that returned reject",
            MetricType::COUNTER,
            |s| counter(s.rejected),
        ),
        (
            "handlers_in_flight",
            "Handlers running now",
            MetricType::GAUGE,
            |s| gauge(s.in_flight as f64),
        ),
        (
            "quota_refused_total",
            "Publishes and requests refused by a tenant quota",
            MetricType::COUNTER,
            |s| counter(s.quota_refused),
        ),
        (
            "warm_instances",
            "Idle instances kept for reuse",
            MetricType::GAUGE,
            |s| gauge(s.warm_instances as f64),
        ),
        (
            "prepared_instances",
            "Fresh instances made ahead of need, ready now",
            MetricType::GAUGE,
            |s| gauge(s.prepared_instances as f64),
        ),
        (
            "prepared_instances_used_total",
            "Messages or requests that took an instance made ahead of need",
            MetricType::COUNTER,
            |s| counter(s.prepared_instances_used),
        ),
        (
            "guest_cpu_seconds_total",
            "Guest execution metered, and work on the guests' behalf",
            MetricType::COUNTER,
            |s| counter_f64(s.guest_cpu_us as f64 / 1e6),
        ),
        (
            "cpu_parked_total",
            "Times one of its guests was parked over its share of guest CPU or its tenant's cpu quota",
            MetricType::COUNTER,
            |s| counter(s.cpu_parked),
        ),
    ];
    for (name, help, kind, value) in one_each {
        let series = (handlers.iter())
            .map(|(labels, s)| (labels.clone(), value(s)))
            .collect();
        m.family(&format!("{prefix}{name}"), help, kind, series);
    }
    m.family(
        &format!("{prefix}handler_failures_total"),
        "Handler invocations that failed, by cause",
        MetricType::COUNTER,
        (handlers.iter())
            .flat_map(|(labels, s)| {
                (s.failed.iter()).map(|(cause, n)| (with(labels, &[("cause", cause)]), counter(*n)))
            })
            .collect(),
    );
    m.family(
        &format!("{prefix}kv_operations_total"),
        "Guest key-value calls, by operation and outcome (ok, conflict, denied, failed)",
        MetricType::COUNTER,
        (handlers.iter())
            .flat_map(|(labels, s)| {
                (s.kv.iter()).map(|(op, outcome, n)| {
                    (
                        with(labels, &[("op", op), ("outcome", outcome)]),
                        counter(*n),
                    )
                })
            })
            .collect(),
    );
    m.family(
        &format!("{prefix}http_requests_total"),
        "Guest outbound HTTP requests, by outcome (ok, denied, timeout, too_large, failed)",
        MetricType::COUNTER,
        (handlers.iter())
            .flat_map(|(labels, s)| {
                (s.http.iter())
                    .map(|(outcome, n)| (with(labels, &[("outcome", outcome)]), counter(*n)))
            })
            .collect(),
    );
}

/// `labels` and `extra`.
fn with(labels: &Labels, extra: &[(&'static str, &str)]) -> Labels {
    let mut all = labels.clone();
    all.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    all
}
