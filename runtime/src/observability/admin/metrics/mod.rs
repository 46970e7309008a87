//! `/metrics`: the statistics as Prometheus metrics (text format 0.0.4),
//! built from a snapshot at each scrape, so the message path keeps its
//! relaxed counters and nothing is counted twice. Names follow Prometheus
//! conventions: a `natsapp_` prefix, `_total` counters, base units in the
//! name; every series carries `service`, a subscriber's also `subscriber`
//! and `tenant` (empty for the service's own identity).

use crate::observability::stats::{
    ConnectionSnapshot, DeploySnapshot, EndpointSnapshot, LatencySnapshot, StatsSnapshot,
    SubscriberSnapshot, TenantSnapshot,
};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::TextEncoder;

mod handlers;
mod subscribers;

use handlers::Handler;

/// The content type of what [`render`] returns.
pub(super) const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Duration buckets exposed: the statistics' powers of two from 2^4 µs
/// (16 µs) to 2^24 µs (about 16.8 s), then +Inf.
const FIRST_BUCKET: usize = 4;
const LAST_BUCKET: usize = 24;

/// The exposition of `snap` for `service`.
pub(super) fn render(service: &str, snap: &StatsSnapshot) -> prometheus::Result<String> {
    let mut m = Families {
        service: service.to_string(),
        out: Vec::new(),
    };
    m.one(
        "natsapp_nats_connected",
        "1 while the service's own NATS connection is up",
        MetricType::GAUGE,
        gauge(f64::from(u8::from(snap.connection_status == "connected"))),
    );
    let subs = &snap.subscribers;
    subscribers::families(&mut m, subs);
    let handlers: Vec<Handler> = subs.iter().map(|s| (subscriber(s, &[]), s)).collect();
    handlers::families(&mut m, "natsapp_", &handlers);

    let connections: [(&str, &str, Count<ConnectionSnapshot>); 5] = [
        (
            "natsapp_nats_connects_total",
            "Times the connection connected: the first time, then every reconnect",
            |c| c.connects,
        ),
        (
            "natsapp_nats_in_messages_total",
            "Messages the connection received",
            |c| c.in_messages,
        ),
        (
            "natsapp_nats_out_messages_total",
            "Messages the connection sent",
            |c| c.out_messages,
        ),
        (
            "natsapp_nats_in_bytes_total",
            "Bytes the connection received",
            |c| c.in_bytes,
        ),
        (
            "natsapp_nats_out_bytes_total",
            "Bytes the connection sent",
            |c| c.out_bytes,
        ),
    ];
    for (name, help, value) in connections {
        let series = snap
            .connections
            .iter()
            .map(|c| {
                (
                    vec![("tenant", c.tenant.clone().unwrap_or_default())],
                    counter(value(c)),
                )
            })
            .collect();
        m.family(name, help, MetricType::COUNTER, series);
    }
    m.family(
        "natsapp_components_loaded_total",
        "Components loaded (at start and by reloads), from the compiled-component cache or compiled",
        MetricType::COUNTER,
        vec![
            (
                vec![("cache", "hit".to_string())],
                counter(snap.components_from_cache),
            ),
            (
                vec![("cache", "miss".to_string())],
                counter(snap.components_compiled),
            ),
            (
                vec![("cache", "off".to_string())],
                counter(snap.components_compiled_uncached),
            ),
        ],
    );
    m.family(
        "natsapp_reloads_total",
        "Reloads of the configuration (SIGHUP, natsapp-wasm reload), applied or refused",
        MetricType::COUNTER,
        vec![
            (
                vec![("outcome", "applied".to_string())],
                counter(snap.reloads_applied),
            ),
            (
                vec![("outcome", "refused".to_string())],
                counter(snap.reloads_refused),
            ),
        ],
    );

    let tenants = &snap.tenants;
    let with_cpu: Vec<&TenantSnapshot> = tenants.iter().filter(|t| t.cpu_quota.is_some()).collect();
    let with_memory: Vec<&TenantSnapshot> = tenants
        .iter()
        .filter(|t| t.memory_quota.is_some())
        .collect();
    m.per_tenant(
        &with_cpu,
        "natsapp_tenant_cpu_quota_cores",
        "The tenant's cpu quota, in cores",
        MetricType::GAUGE,
        |t| gauge(t.cpu_quota.unwrap_or(0.0)),
    );
    m.per_tenant(
        &with_cpu,
        "natsapp_tenant_guest_cpu_seconds_total",
        "Guest execution metered against the tenant's cpu quota",
        MetricType::COUNTER,
        |t| counter_f64(t.guest_cpu_seconds),
    );
    m.per_tenant(
        &with_cpu,
        "natsapp_tenant_cpu_parked_total",
        "Times one of the tenant's guests was parked over its cpu quota or its subscriber's share of it",
        MetricType::COUNTER,
        |t| counter(t.cpu_parked),
    );
    m.per_tenant(
        &with_memory,
        "natsapp_tenant_memory_quota_bytes",
        "The tenant's memory quota",
        MetricType::GAUGE,
        |t| gauge(t.memory_quota.unwrap_or(0) as f64),
    );
    m.per_tenant(
        &with_memory,
        "natsapp_tenant_memory_held_bytes",
        "Guest memory the tenant's live instances hold",
        MetricType::GAUGE,
        |t| gauge(t.memory_held as f64),
    );
    m.per_tenant(
        &with_memory,
        "natsapp_tenant_idle_instances_reclaimed_total",
        "Idle warm instances dropped to make room under the tenant's memory quota",
        MetricType::COUNTER,
        |t| counter(t.idle_instances_reclaimed),
    );

    let endpoint = |e: &EndpointSnapshot| {
        vec![
            ("endpoint", e.name.clone()),
            ("tenant", e.tenant.clone().unwrap_or_default()),
        ]
    };
    m.family(
        "natsapp_endpoint_requests_total",
        "Core NATS requests an endpoint handled or refused",
        MetricType::COUNTER,
        (snap.endpoints.iter())
            .map(|e| (endpoint(e), counter(e.requests)))
            .collect(),
    );
    m.family(
        "natsapp_endpoint_errors_total",
        "Requests an endpoint answered with a micro-service error",
        MetricType::COUNTER,
        (snap.endpoints.iter())
            .map(|e| (endpoint(e), counter(e.errors)))
            .collect(),
    );
    m.family(
        "natsapp_endpoint_processing_seconds_total",
        "Time from receiving an endpoint's requests to their outcome",
        MetricType::COUNTER,
        (snap.endpoints.iter())
            .map(|e| (endpoint(e), counter_f64(e.processing_us as f64 / 1e6)))
            .collect(),
    );
    let handlers: Vec<Handler> = (snap.endpoints.iter())
        .map(|e| (endpoint(e), &e.handler))
        .collect();
    handlers::families(&mut m, "natsapp_endpoint_", &handlers);
    m.family(
        "natsapp_deploy_revision",
        "The revision of a key of fragments deployed over NATS this replica runs",
        MetricType::GAUGE,
        snap.deploys
            .iter()
            .filter_map(|d| Some((deployed(d), gauge(d.revision? as f64))))
            .collect(),
    );
    m.family(
        "natsapp_deploy_refusals_total",
        "Revisions of a key of fragments this replica refused, each naming its tenant, key and revision in the log and in status answers",
        MetricType::COUNTER,
        snap.deploys
            .iter()
            .map(|d| (deployed(d), counter(d.refusals)))
            .collect(),
    );
    m.family(
        "natsapp_deploy_refused_revision",
        "The last revision of a key refused since one was applied",
        MetricType::GAUGE,
        snap.deploys
            .iter()
            .filter_map(|d| Some((deployed(d), gauge(d.refused? as f64))))
            .collect(),
    );

    TextEncoder::new().encode_to_string(&m.out)
}

/// Reads one count off a snapshot.
type Count<T> = fn(&T) -> u64;

/// A family of one series per member: its name, help, type and value.
type Family<T> = (&'static str, &'static str, MetricType, fn(&T) -> Metric);

/// A series' labels, besides `service`.
type Labels = Vec<(&'static str, String)>;

/// The families of one scrape, every series labelled with the service.
struct Families {
    service: String,
    out: Vec<MetricFamily>,
}

/// A series' labels (besides `service`) and its value.
type Series = (Labels, Metric);

impl Families {
    fn family(&mut self, name: &str, help: &str, kind: MetricType, series: Vec<Series>) {
        if series.is_empty() {
            return;
        }
        let mut f = MetricFamily::default();
        f.set_name(name.to_string());
        f.set_help(help.to_string());
        f.set_field_type(kind);
        f.set_metric(
            series
                .into_iter()
                .map(|(labels, mut metric)| {
                    let mut pairs = vec![pair("service", &self.service)];
                    pairs.extend(labels.iter().map(|(k, v)| pair(k, v)));
                    metric.set_label(pairs);
                    metric
                })
                .collect(),
        );
        self.out.push(f);
    }

    fn one(&mut self, name: &str, help: &str, kind: MetricType, metric: Metric) {
        self.family(name, help, kind, vec![(Vec::new(), metric)]);
    }

    fn per_subscriber(
        &mut self,
        subs: &[SubscriberSnapshot],
        name: &str,
        help: &str,
        kind: MetricType,
        value: fn(&SubscriberSnapshot) -> Metric,
    ) {
        let series = subs
            .iter()
            .map(|s| (subscriber(s, &[]), value(s)))
            .collect();
        self.family(name, help, kind, series);
    }

    fn per_tenant(
        &mut self,
        tenants: &[&TenantSnapshot],
        name: &str,
        help: &str,
        kind: MetricType,
        value: fn(&TenantSnapshot) -> Metric,
    ) {
        let series = tenants
            .iter()
            .map(|t| (vec![("tenant", t.name.clone())], value(t)))
            .collect();
        self.family(name, help, kind, series);
    }
}

/// A subscriber's labels, plus `extra`.
fn subscriber(
    s: &SubscriberSnapshot,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut labels = vec![
        ("subscriber", s.name.clone()),
        ("tenant", s.tenant.clone().unwrap_or_default()),
    ];
    labels.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    labels
}

/// The labels of a deployed key's series.
fn deployed(d: &DeploySnapshot) -> Vec<(&'static str, String)> {
    vec![
        ("tenant", d.tenant.clone().unwrap_or_default()),
        ("bucket", d.bucket.clone()),
        ("key", d.key.clone()),
    ]
}

fn pair(name: &str, value: &str) -> LabelPair {
    let mut p = LabelPair::default();
    p.set_name(name.to_string());
    p.set_value(value.to_string());
    p
}

fn counter(v: u64) -> Metric {
    counter_f64(v as f64)
}

fn counter_f64(v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::default();
    m.set_counter(c);
    m
}

fn gauge(v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    Metric::from_gauge(g)
}

/// A duration histogram from the statistics' power-of-two buckets.
fn histogram(d: &LatencySnapshot) -> Metric {
    let counts = &d.buckets;
    let mut cumulative = 0;
    let buckets = (0..=LAST_BUCKET)
        .filter_map(|i| {
            cumulative += counts.get(i).copied().unwrap_or(0);
            (i >= FIRST_BUCKET).then(|| {
                let mut b = Bucket::default();
                b.set_upper_bound((1u64 << i) as f64 / 1e6);
                b.set_cumulative_count(cumulative);
                b
            })
        })
        .collect();
    let mut h = Histogram::default();
    h.set_sample_count(d.count);
    h.set_sample_sum(d.sum_us as f64 / 1e6);
    h.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_histogram(h);
    m
}
