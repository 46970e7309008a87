//! `[[endpoints]]`: what the guest runs with is checked as a subscriber's
//! is; the endpoint adds its name (a micro-service endpoint's), its queue
//! group and its bound on waiting requests.

use super::super::endpoint::{
    is_micro_name, EndpointConfig, DEFAULT_CONCURRENCY, DEFAULT_MAX_WAITING, HEALTH, MOST_WAITING,
};
use super::super::raw::{RawEndpoint, RawPull, RawSubscriber};
use super::super::values::Name;
use super::super::{PublisherConfig, TenantConfig};
use super::{origin, Validator};

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
        if !is_micro_name(&e.name) {
            self.problem(
                format!("endpoints[{i}].name"),
                format!(
                    "{:?} cannot name a micro-service endpoint: use letters, digits, `-` and `_`",
                    e.name
                ),
            );
        } else if e.name == HEALTH {
            self.problem(
                format!("endpoints[{i}].name"),
                format!("{HEALTH:?} is the service's own endpoint (<service>.health): choose another name"),
            );
        }
        if !is_micro_name(service) {
            self.problem(
                key.clone(),
                format!("the service's name {service:?} cannot name a NATS micro-service, whose endpoints these are: use letters, digits, `-` and `_`"),
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
        if max_waiting > MOST_WAITING {
            self.problem(
                format!("{key}.max_waiting"),
                format!("{max_waiting} is more than {MOST_WAITING}"),
            );
        }
        let component = self.component(&key, &e.component);
        // Names nothing on the server; a bad name was reported above.
        let placeholder = |n: &str| Name::try_from(n.to_string()).expect("a valid name");
        let durable = Name::try_from(e.name.clone()).unwrap_or_else(|_| placeholder("endpoint"));
        let stream = placeholder("$SRV");
        let raw = RawSubscriber {
            name: e.name.clone(),
            tenant: e.tenant,
            origin: e.origin,
            fragment: e.fragment,
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
            prepared_instances: e.prepared_instances,
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
