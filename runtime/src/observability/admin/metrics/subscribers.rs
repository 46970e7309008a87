//! What a subscriber's JetStream deliveries came to: received, settled by
//! outcome, dead letters, its consumer and pulls, its publishes and
//! atomic batches. What its handler did is in `handlers`.

use super::{counter, gauge, histogram, subscriber, Count, Families};
use crate::observability::stats::SubscriberSnapshot;
use prometheus::proto::MetricType;

/// The families of `subs`' deliveries.
pub(super) fn families(m: &mut Families, subs: &[SubscriberSnapshot]) {
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
        "natsapp_concurrency_quota_waits_total",
        "Times a free handler slot waited for the tenant's concurrency quota",
        MetricType::COUNTER,
        |s| counter(s.concurrency_quota_waits),
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
}
