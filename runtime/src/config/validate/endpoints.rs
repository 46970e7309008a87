//! `[[endpoints]]`: what the guest runs with is checked as a subscriber's
//! is; the endpoint adds its name (a micro-service endpoint's), its queue
//! group and its bound on waiting requests.

use super::super::endpoint::{EndpointConfig, DEFAULT_CONCURRENCY, DEFAULT_MAX_WAITING};
use super::super::raw::{RawEndpoint, RawPull, RawSubscriber};
use super::super::values::Name;
use super::super::{PublisherConfig, TenantConfig};
use super::{origin, Validator};

/// Whether `name` may name a NATS micro-service endpoint or queue group:
/// letters, digits, `-` and `_`.
fn micro_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl<E: Fn(&str) -> Option<String>> Validator<'_, E> {
    pub(super) fn endpoint(
        &mut self,
        i: usize,
        e: RawEndpoint,
        service: &str,
        publishers: &[PublisherConfig],
        tenants: &[TenantConfig],
    ) -> Option<EndpointConfig> {
        let key = format!("endpoints[{i}] ({:?}){}", e.name, origin(&e.origin));
        let before = self.problems.len();
        if !micro_token(&e.name) {
            self.problem(
                format!("endpoints[{i}].name"),
                format!(
                    "{:?} cannot name a micro-service endpoint: use letters, digits, `-` and `_`",
                    e.name
                ),
            );
        }
        let queue_group = e.queue_group.unwrap_or_else(|| service.to_string());
        if queue_group.is_empty() || queue_group.contains(char::is_whitespace) {
            self.problem(
                format!("{key}.queue_group"),
                format!("{queue_group:?} is not a queue group name: one word, no spaces"),
            );
        }
        let max_waiting = e.max_waiting.unwrap_or(DEFAULT_MAX_WAITING);
        let component = self.component(&key, &e.component);
        // Names nothing on the server; a bad name was reported above.
        let placeholder = |n: &str| Name::try_from(n.to_string()).expect("a valid name");
        let durable = Name::try_from(e.name.clone()).unwrap_or_else(|_| placeholder("endpoint"));
        let stream = placeholder("$SRV");
        let raw = RawSubscriber {
            name: e.name.clone(),
            tenant: e.tenant,
            origin: e.origin,
            fragment: None,
            component: e.component,
            subject: Some(e.subject.clone()),
            stream: None,
            watch: None,
            durable,
            // Nothing is pulled: a batch that cannot be wrong.
            pull: RawPull {
                batch_size: Some(1),
                timeout: None,
            },
            consumer: Default::default(),
            concurrency: Some(e.concurrency.unwrap_or(DEFAULT_CONCURRENCY)),
            dead_letter: None,
            publish: e.publish,
            http: e.http,
            kv: e.kv,
            limits: e.limits,
            config: e.config,
            instances: e.instances,
            max_instance_uses: e.max_instance_uses,
            double_ack: false,
            outputs: Default::default(),
        };
        let handler = self.handler(
            &key,
            before,
            raw,
            component,
            (stream, e.subject.clone(), None),
            publishers,
            tenants,
        )?;
        Some(EndpointConfig {
            name: e.name,
            subject: e.subject,
            queue_group,
            max_waiting,
            handler,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::micro_token;

    #[test]
    fn micro_service_names_are_letters_digits_dash_and_underscore() {
        assert!(micro_token("quote-v2_a"));
        for bad in ["", "a.b", "a b", "a*", "ü"] {
            assert!(!micro_token(bad), "{bad:?}");
        }
    }
}
