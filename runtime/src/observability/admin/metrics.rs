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
    m.per_subscriber(
        subs,
        "natsapp_messages_received_total",
        "Deliveries received from the server",
        MetricType::COUNTER,
        |s| counter(s.received),
    );
    let outcomes: [(&str, Count<SubscriberSnapshot>); 6] = [
        ("acked", |s| s.acked),
        ("naked", |s| s.naked),
        ("termed", |s| s.termed),
        ("dead_lettered", |s| s.dead_lettered),
        ("by_guest", |s| s.settled_by_guest),
        ("replayed", |s| s.replayed),
    ];
    m.family(
        "natsapp_messages_settled_total",
        "Deliveries settled, by outcome (dead_lettered ones are also termed)",
        MetricType::COUNTER,
        subs.iter()
            .flat_map(|s| {
                outcomes.iter().map(move |(outcome, n)| {
                    (subscriber(s, &[("outcome", outcome)]), counter(n(s)))
                })
            })
            .collect(),
    );
    m.family(
        "natsapp_handler_failures_total",
        "Handler invocations that failed, by cause",
        MetricType::COUNTER,
        subs.iter()
            .flat_map(|s| {
                s.failed
                    .iter()
                    .map(move |(cause, n)| (subscriber(s, &[("cause", cause)]), counter(*n)))
            })
            .collect(),
    );
    m.per_subscriber(
        subs,
        "natsapp_handler_retries_total",
        "Handlers that returned retry",
        MetricType::COUNTER,
        |s| counter(s.retried),
    );
    m.per_subscriber(
        subs,
        "natsapp_handler_rejects_total",
        "Handlers that returned reject",
        MetricType::COUNTER,
        |s| counter(s.rejected),
    );
    m.per_subscriber(
        subs,
        "natsapp_settle_errors_total",
        "Acks, naks and terms the server did not take (redelivered after ack_wait)",
        MetricType::COUNTER,
        |s| counter(s.settle_errors),
    );
    m.per_subscriber(
        subs,
        "natsapp_past_max_deliver_total",
        "Deliveries past max_deliver, dead-lettered or termed without the handler",
        MetricType::COUNTER,
        |s| counter(s.past_max_deliver),
    );
    m.per_subscriber(
        subs,
        "natsapp_dead_letters_trimmed_total",
        "Dead-letter copies that left out the payload (or more) to fit",
        MetricType::COUNTER,
        |s| counter(s.dead_letter_trimmed),
    );
    m.per_subscriber(
        subs,
        "natsapp_consumers_recreated_total",
        "Times the durable consumer was recreated after it disappeared",
        MetricType::COUNTER,
        |s| counter(s.consumer_recreated),
    );
    m.per_subscriber(
        subs,
        "natsapp_pulls_silent_total",
        "Pull requests given up because the server went silent on them (no message, status or heartbeat for two heartbeats, or no end at expiry)",
        MetricType::COUNTER,
        |s| counter(s.pulls_silent),
    );
    m.per_subscriber(
        subs,
        "natsapp_pulls_stalled_total",
        "Times the pull stalled (messages pending, room to take them, nothing delivered) and was got going again",
        MetricType::COUNTER,
        |s| counter(s.pulls_stalled),
    );
    m.per_subscriber(
        subs,
        "natsapp_nats_unavailable_retries_total",
        "Calls made again because NATS was unavailable (no stream leader, no answer in time, the connection down) instead of failing the handler",
        MetricType::COUNTER,
        |s| counter(s.nats_unavailable),
    );
    m.per_subscriber(
        subs,
        "natsapp_redelivered_while_running_total",
        "Deliveries of a message whose handler still ran here, held until that handler was done",
        MetricType::COUNTER,
        |s| counter(s.redelivered_while_running),
    );
    m.per_subscriber(
        subs,
        "natsapp_redriven_total",
        "Messages put back from the dead letters by natsapp-wasm redrive, at their first delivery",
        MetricType::COUNTER,
        |s| counter(s.redriven),
    );
    m.per_subscriber(
        subs,
        "natsapp_quota_refused_total",
        "Publishes and requests refused by a tenant quota",
        MetricType::COUNTER,
        |s| counter(s.quota_refused),
    );
    m.per_subscriber(
        subs,
        "natsapp_concurrency_quota_waits_total",
        "Times a free handler slot waited for the tenant's concurrency quota",
        MetricType::COUNTER,
        |s| counter(s.concurrency_quota_waits),
    );
    m.per_subscriber(
        subs,
        "natsapp_handlers_in_flight",
        "Handlers running now",
        MetricType::GAUGE,
        |s| gauge(s.in_flight as f64),
    );
    m.per_subscriber(
        subs,
        "natsapp_subscriber_running",
        "1 when the subscriber runs, 0 when it could not start or its tenant stopped",
        MetricType::GAUGE,
        |s| gauge(f64::from(u8::from(s.not_running.is_none()))),
    );
    m.per_subscriber(
        subs,
        "natsapp_consumer_paused",
        "1 while the durable consumer is paused on the server",
        MetricType::GAUGE,
        |s| gauge(f64::from(u8::from(s.paused))),
    );
    m.per_subscriber(
        subs,
        "natsapp_consumer_ack_floor",
        "The durable consumer's ack floor (stream sequence) when last looked at",
        MetricType::GAUGE,
        |s| gauge(s.ack_floor as f64),
    );
    m.per_subscriber(
        subs,
        "natsapp_handler_duration_seconds",
        "Handler call duration",
        MetricType::HISTOGRAM,
        |s| histogram(&s.latency),
    );
    m.per_subscriber(
        subs,
        "natsapp_publish_duration_seconds",
        "How long the guest's JetStream publishes waited for their PubAck",
        MetricType::HISTOGRAM,
        |s| histogram(&s.publish_latency),
    );
    m.per_subscriber(
        subs,
        "natsapp_publish_failures_total",
        "Guest JetStream publishes that got no PubAck (an error or a timeout)",
        MetricType::COUNTER,
        |s| counter(s.publish_failures),
    );
    m.per_subscriber(
        subs,
        "natsapp_batches_committed_total",
        "Atomic batches of outputs committed (outputs.mode = \"atomic\")",
        MetricType::COUNTER,
        |s| counter(s.batches_committed),
    );
    m.per_subscriber(
        subs,
        "natsapp_outputs_committed_total",
        "Outputs stored by committed atomic batches, as their PubAcks count them",
        MetricType::COUNTER,
        |s| counter(s.outputs_committed),
    );
    m.per_subscriber(
        subs,
        "natsapp_batches_already_stored_total",
        "Atomic batches of a redelivery found committed by an earlier delivery",
        MetricType::COUNTER,
        |s| counter(s.batches_already_stored),
    );
    m.per_subscriber(
        subs,
        "natsapp_batches_busy_total",
        "Atomic batches the server refused for too many in flight on the stream, then sent again",
        MetricType::COUNTER,
        |s| counter(s.batches_busy),
    );

    m.family(
        "natsapp_kv_operations_total",
        "Guest key-value calls, by operation and outcome (ok, conflict, denied, failed)",
        MetricType::COUNTER,
        subs.iter()
            .flat_map(|s| {
                s.kv.iter().map(move |(op, outcome, n)| {
                    (
                        subscriber(s, &[("op", op), ("outcome", outcome)]),
                        counter(*n),
                    )
                })
            })
            .collect(),
    );
    m.family(
        "natsapp_http_requests_total",
        "Guest outbound HTTP requests, by outcome (ok, denied, timeout, too_large, failed)",
        MetricType::COUNTER,
        subs.iter()
            .flat_map(|s| {
                s.http
                    .iter()
                    .map(move |(outcome, n)| (subscriber(s, &[("outcome", outcome)]), counter(*n)))
            })
            .collect(),
    );
    m.per_subscriber(
        subs,
        "natsapp_warm_instances",
        "Idle instances kept for reuse",
        MetricType::GAUGE,
        |s| gauge(s.warm_instances as f64),
    );
    m.per_subscriber(
        subs,
        "natsapp_prepared_instances",
        "Fresh instances made ahead of need, ready now",
        MetricType::GAUGE,
        |s| gauge(s.prepared_instances as f64),
    );
    m.per_subscriber(
        subs,
        "natsapp_prepared_instances_used_total",
        "Messages that took an instance made ahead of need",
        MetricType::COUNTER,
        |s| counter(s.prepared_instances_used),
    );
    m.per_subscriber(
        subs,
        "natsapp_guest_cpu_seconds_total",
        "Guest execution metered, and work on the guests' behalf",
        MetricType::COUNTER,
        |s| counter_f64(s.guest_cpu_us as f64 / 1e6),
    );
    m.per_subscriber(
        subs,
        "natsapp_cpu_parked_total",
        "Times one of the subscriber's guests was parked over its share of guest CPU or its tenant's cpu quota",
        MetricType::COUNTER,
        |s| counter(s.cpu_parked),
    );

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
    // What each endpoint's handler did, as the same figures of a
    // subscriber's handler.
    let handlers: [Family<SubscriberSnapshot>; 10] = [
        (
            "natsapp_endpoint_handler_duration_seconds",
            "An endpoint's handler call duration",
            MetricType::HISTOGRAM,
            |s| histogram(&s.latency),
        ),
        (
            "natsapp_endpoint_handler_retries_total",
            "An endpoint's handlers that returned retry (answered 503)",
            MetricType::COUNTER,
            |s| counter(s.retried),
        ),
        (
            "natsapp_endpoint_handler_rejects_total",
            "An endpoint's handlers that returned reject (answered 400)",
            MetricType::COUNTER,
            |s| counter(s.rejected),
        ),
        (
            "natsapp_endpoint_handlers_in_flight",
            "An endpoint's handlers running now",
            MetricType::GAUGE,
            |s| gauge(s.in_flight as f64),
        ),
        (
            "natsapp_endpoint_quota_refused_total",
            "An endpoint's publishes and requests refused by a tenant quota",
            MetricType::COUNTER,
            |s| counter(s.quota_refused),
        ),
        (
            "natsapp_endpoint_warm_instances",
            "An endpoint's idle instances kept for reuse",
            MetricType::GAUGE,
            |s| gauge(s.warm_instances as f64),
        ),
        (
            "natsapp_endpoint_prepared_instances",
            "An endpoint's fresh instances made ahead of need, ready now",
            MetricType::GAUGE,
            |s| gauge(s.prepared_instances as f64),
        ),
        (
            "natsapp_endpoint_prepared_instances_used_total",
            "Requests that took a fresh instance made ahead of need",
            MetricType::COUNTER,
            |s| counter(s.prepared_instances_used),
        ),
        (
            "natsapp_endpoint_guest_cpu_seconds_total",
            "An endpoint's guest execution metered, and work on its guests' behalf",
            MetricType::COUNTER,
            |s| counter_f64(s.guest_cpu_us as f64 / 1e6),
        ),
        (
            "natsapp_endpoint_cpu_parked_total",
            "Times one of an endpoint's guests was parked over its share of guest CPU or its tenant's cpu quota",
            MetricType::COUNTER,
            |s| counter(s.cpu_parked),
        ),
    ];
    for (name, help, kind, value) in handlers {
        m.family(
            name,
            help,
            kind,
            (snap.endpoints.iter())
                .map(|e| (endpoint(e), value(&e.handler)))
                .collect(),
        );
    }
    m.family(
        "natsapp_endpoint_handler_failures_total",
        "An endpoint's handler invocations that failed, by cause (answered 500)",
        MetricType::COUNTER,
        (snap.endpoints.iter())
            .flat_map(|e| {
                e.handler.failed.iter().map(move |(cause, n)| {
                    let mut labels = endpoint(e);
                    labels.push(("cause", cause.to_string()));
                    (labels, counter(*n))
                })
            })
            .collect(),
    );
    m.family(
        "natsapp_endpoint_kv_operations_total",
        "An endpoint's guest key-value calls, by operation and outcome",
        MetricType::COUNTER,
        (snap.endpoints.iter())
            .flat_map(|e| {
                e.handler.kv.iter().map(move |(op, outcome, n)| {
                    let mut labels = endpoint(e);
                    labels.push(("op", op.to_string()));
                    labels.push(("outcome", outcome.to_string()));
                    (labels, counter(*n))
                })
            })
            .collect(),
    );
    m.family(
        "natsapp_endpoint_http_requests_total",
        "An endpoint's guest outbound HTTP requests, by outcome",
        MetricType::COUNTER,
        (snap.endpoints.iter())
            .flat_map(|e| {
                e.handler.http.iter().map(move |(outcome, n)| {
                    let mut labels = endpoint(e);
                    labels.push(("outcome", outcome.to_string()));
                    (labels, counter(*n))
                })
            })
            .collect(),
    );
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

/// The families of one scrape, every series labelled with the service.
struct Families {
    service: String,
    out: Vec<MetricFamily>,
}

/// A series' labels (besides `service`) and its value.
type Series = (Vec<(&'static str, String)>, Metric);

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
