//! `[[endpoints]]`, validated: a core NATS subject served by a component in
//! a queue group, each an endpoint of the service's NATS micro-service.

use super::{Subject, SubscriberConfig};

/// Handlers an endpoint runs at once unless `concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Requests an endpoint keeps waiting beyond its `concurrency` unless
/// `max_waiting` says otherwise: a burst of a thousand requests to one
/// replica is answered, not refused.
pub const DEFAULT_MAX_WAITING: usize = 1024;

/// The most requests an endpoint may keep waiting.
pub const MOST_WAITING: usize = 1_000_000;
/// The endpoint every service has: `<service>.health`.
pub const HEALTH: &str = "health";

/// Whether `name` may name a NATS micro-service or one of its endpoints:
/// letters, digits, `-` and `_`.
pub fn is_micro_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `[[endpoints]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Its name: the micro-service endpoint's, in logs and statistics.
    pub name: String,
    /// The subject it serves.
    pub subject: Subject,
    /// The queue group its replicas share the requests in.
    pub queue_group: String,
    /// Requests waiting beyond `handler.concurrency`; past it, 503 at once.
    pub max_waiting: usize,
    /// What its guest runs with — component, tenant, concurrency, grants,
    /// limits, config, instances — in a subscriber's shape, which the host
    /// and handler are built from. Its stream, durable and consumer
    /// settings do not apply: a request is delivered once, not pulled.
    pub handler: SubscriberConfig,
}

impl EndpointConfig {
    /// Its tenant (`None`: the service's own).
    pub fn tenant(&self) -> Option<&str> {
        self.handler.tenant.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::is_micro_name;

    #[test]
    fn micro_service_names_are_letters_digits_dash_and_underscore() {
        assert!(is_micro_name("quote-v2_a"));
        for bad in ["", "a.b", "a b", "a*", "ü"] {
            assert!(!is_micro_name(bad), "{bad:?}");
        }
    }
}
