//! What `natsapp-wasm docs` writes: an AsyncAPI 3.0 document of the
//! service's channels — the subjects its subscribers receive, the requests
//! its endpoints answer, the subjects their guests may publish to, dead
//! letters, declared publishers and the schedules nats-server publishes,
//! with the streams that store them — for the tools FastStream users know.

use crate::config::Config;
use serde_json::{json, Map, Value};

/// The AsyncAPI 3.0 document of `config`, as JSON.
pub fn document(config: &Config) -> Value {
    let mut doc = Document::default();
    for s in &config.subscribers {
        let tenant = s
            .tenant
            .as_ref()
            .map_or(String::new(), |t| format!(" (tenant {t})"));
        let input = doc.channel(s.subject.as_str(), config);
        let watching = s.watch.as_ref().map_or(String::new(), |w| {
            format!(
                " (the changes of keys {} of bucket {}, from {})",
                w.keys,
                w.bucket,
                w.start.as_str()
            )
        });
        doc.operation(
            &s.name,
            "receive",
            &input,
            format!(
                "Subscriber {}{tenant}: durable pull consumer {} on stream {}{watching}, {} at once, component {}.",
                s.name,
                s.durable,
                s.stream,
                s.concurrency,
                s.component
            ),
        );
        for (i, subject) in s.publish.iter().enumerate() {
            let output = doc.channel(subject.as_str(), config);
            doc.operation(
                &format!("{}-publish-{}", s.name, i + 1),
                "send",
                &output,
                format!(
                    "Subscriber {}'s handler may publish or send requests here.",
                    s.name
                ),
            );
        }
        if let Some(dead) = &s.dead_letter {
            let channel = doc.channel(dead.as_str(), config);
            doc.operation(
                &format!("{}-dead-letter", s.name),
                "send",
                &channel,
                format!(
                    "Dead letters of subscriber {}: a copy of each message it terminates, \
                     with the reason in the Natsapp-Reason header.",
                    s.name
                ),
            );
        }
    }
    for e in &config.endpoints {
        let tenant = e
            .tenant()
            .map_or(String::new(), |t| format!(" (tenant {t})"));
        let input = doc.channel(e.subject.as_str(), config);
        // A request's reply subject is its requester's: a channel whose
        // address is known only at run time.
        let reply = format!("{}-reply", e.name);
        doc.channels.insert(
            reply.clone(),
            json!({ "address": null, "description": "The request's reply subject." }),
        );
        doc.operation(
            &e.name,
            "receive",
            &input,
            format!(
                "Endpoint {}{tenant}: core NATS requests in queue group {}, {} at once and up to {} waiting, component {}.",
                e.name, e.queue_group, e.handler.concurrency, e.max_waiting, e.handler.component
            ),
        );
        doc.operations[&e.name]["reply"] =
            json!({ "channel": { "$ref": format!("#/channels/{reply}") } });
        for (i, subject) in e.handler.publish.iter().enumerate() {
            let output = doc.channel(subject.as_str(), config);
            doc.operation(
                &format!("{}-publish-{}", e.name, i + 1),
                "send",
                &output,
                format!(
                    "Endpoint {}'s handler may publish or send requests here.",
                    e.name
                ),
            );
        }
    }
    for (i, p) in config.publishers.iter().enumerate() {
        let channel = doc.channel(p.subject.as_str(), config);
        doc.operation(
            &format!("publisher-{}", i + 1),
            "send",
            &channel,
            "A declared publisher of the service.".to_string(),
        );
    }
    for sc in &config.schedules {
        let channel = doc.channel(sc.subject.as_str(), config);
        doc.operation(
            &format!("schedule-{}", sc.name),
            "send",
            &channel,
            format!(
                "Schedule {}: nats-server publishes its message here ({}), held on {} in stream {}{}.",
                sc.name,
                sc.when.header(),
                sc.held_on,
                sc.stream,
                sc.tenant
                    .as_ref()
                    .map_or(String::new(), |t| format!(" of tenant {t:?}'s account"))
            ),
        );
    }
    let servers: Map<String, Value> = config
        .nats
        .servers
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let host = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            (
                format!("nats-{}", i + 1),
                json!({ "host": host, "protocol": "nats" }),
            )
        })
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": config.service.name,
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Message handlers run by natsapp-wasm {} on NATS JetStream.",
                env!("CARGO_PKG_VERSION")
            ),
        },
        "defaultContentType": "application/octet-stream",
        "servers": servers,
        "channels": doc.channels,
        "operations": doc.operations,
    })
}

#[derive(Default)]
struct Document {
    channels: Map<String, Value>,
    operations: Map<String, Value>,
}

impl Document {
    /// The id of the channel for `subject`, added on first use with how
    /// messages on it travel (stored in a stream, or core NATS).
    fn channel(&mut self, subject: &str, config: &Config) -> String {
        // Two subjects may make the same id ("a.b", "a_b"): number the later.
        let base = channel_id(subject);
        let mut id = base.clone();
        let mut n = 1;
        while let Some(existing) = self.channels.get(&id) {
            if existing["address"] == subject {
                return id;
            }
            n += 1;
            id = format!("{base}-{n}");
        }
        self.channels.insert(
            id.clone(),
            json!({ "address": subject, "description": description(config, subject) }),
        );
        id
    }

    fn operation(&mut self, id: &str, action: &str, channel: &str, description: String) {
        self.operations.insert(
            id.to_string(),
            json!({
                "action": action,
                "channel": { "$ref": format!("#/channels/{channel}") },
                "description": description,
            }),
        );
    }
}

/// How messages on `subject` travel, as `check` says it: the subscriber's
/// own input stream, or the route a publish to it takes.
fn description(config: &Config, subject: &str) -> String {
    if let Some(e) = config
        .endpoints
        .iter()
        .find(|e| e.subject.as_str() == subject)
    {
        return format!("core NATS requests, queue group {}", e.queue_group);
    }
    match config
        .subscribers
        .iter()
        .find(|s| s.subject.as_str() == subject)
    {
        Some(s) => format!("JetStream, stream {}", s.stream),
        None => crate::plan::route_of(config, subject, &None),
    }
}

/// A channel id from a subject: AsyncAPI keys allow letters, digits, `-`
/// and `_`; NATS wildcards become words.
fn channel_id(subject: &str) -> String {
    subject
        .split('.')
        .map(|token| match token {
            "*" => "any".to_string(),
            ">" => "all".to_string(),
            t => t
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        })
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::channel_id;

    #[test]
    fn channel_ids_are_keys_asyncapi_accepts() {
        assert_eq!(channel_id("order.created"), "order_created");
        assert_eq!(channel_id("orders.*.paid"), "orders_any_paid");
        assert_eq!(channel_id("out.>"), "out_all");
        assert_eq!(channel_id("$JS.x"), "_JS_x");
    }
}
