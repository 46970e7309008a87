//! What a subscriber or an endpoint runs its guest with — concurrency,
//! consumer, limits, grants, capabilities, config, instances, outputs —
//! checked the same way for both, after a subscriber's input (`input`).

use super::super::raw::{self, RawSubscriber};
use super::super::values::Subject;
use super::super::*;
use super::{join, origin, stream_named, Validator};
use std::time::Duration;

impl<E: Fn(&str) -> Option<String>> Validator<'_, E> {
    pub(super) fn subscriber(
        &mut self,
        i: usize,
        s: RawSubscriber,
        streams: &[StreamConfig],
        publishers: &[PublisherConfig],
        tenants: &[TenantConfig],
    ) -> Option<SubscriberConfig> {
        let key = format!("subscribers[{i}] ({:?}){}", s.name, origin(&s.origin));
        let before = self.problems.len();
        if s.name.trim().is_empty() {
            self.problem(format!("subscribers[{i}].name"), "must not be empty");
        }
        let component = self.component(&key, &s.component);
        let (stream, subject, watch) = self.input(&key, &s)?;
        if let Some(st) = stream_named(streams, stream.as_str(), &s.tenant) {
            if !st.subjects.is_empty()
                && !st
                    .subjects
                    .iter()
                    .any(|p| p.matches(subject.as_str()) || p == &subject)
            {
                self.problem(
                    format!("{key}.subject"),
                    format!(
                        "stream {:?} does not capture {:?} (its subjects: {})",
                        st.name.as_str(),
                        subject.as_str(),
                        join(&st.subjects)
                    ),
                );
            }
        }
        self.handler(
            &key,
            before,
            s,
            component,
            (stream, subject, watch),
            publishers,
            tenants,
        )
    }

    /// What `s` runs with, its input told (`stream`, `subject`, `watch`):
    /// the part subscribers and endpoints share. `None` when a problem was
    /// recorded since `before`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handler(
        &mut self,
        key: &str,
        before: usize,
        s: RawSubscriber,
        component: ComponentSource,
        (stream, subject, watch): (Name, Subject, Option<super::Watch>),
        publishers: &[PublisherConfig],
        tenants: &[TenantConfig],
    ) -> Option<SubscriberConfig> {
        let key = key.to_string();
        let (concurrency, batch_size) = match (s.concurrency, s.pull.batch_size) {
            (Some(c), Some(b)) => (c, b),
            (Some(c), None) => (c, c),
            (None, Some(b)) => (b, b),
            (None, None) => (1, 1),
        };
        if concurrency == 0 {
            self.problem(format!("{key}.concurrency"), "must be 1 or more");
        }
        if batch_size == 0 {
            self.problem(format!("{key}.pull.batch_size"), "must be 1 or more");
        }
        let pull_timeout = s.pull.timeout.map_or(defaults::PULL_TIMEOUT, |d| d.0);
        if pull_timeout < Duration::from_millis(100) {
            self.problem(format!("{key}.pull.timeout"), "must be at least 100ms");
        }
        let ack_wait = s.consumer.ack_wait.map_or(defaults::ACK_WAIT, |d| d.0);
        if ack_wait < Duration::from_secs(1) {
            self.problem(format!("{key}.consumer.ack_wait"), "must be at least 1s");
        }
        let backoff: Vec<Duration> = s
            .consumer
            .backoff
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.0)
            .collect();
        let max_deliver = match s.consumer.max_deliver.unwrap_or(defaults::MAX_DELIVER) {
            -1 => None,
            n if n >= 1 && n <= u32::MAX as i64 => Some(n as u32),
            n => {
                self.problem(
                    format!("{key}.consumer.max_deliver"),
                    format!("{n} is not allowed: use -1 (no limit) or 1 or more"),
                );
                None
            }
        };
        let max_ack_pending = s
            .consumer
            .max_ack_pending
            .unwrap_or(defaults::MAX_ACK_PENDING.max(concurrency as i64));
        if max_ack_pending != -1 && max_ack_pending < concurrency as i64 {
            self.problem(
                format!("{key}.consumer.max_ack_pending"),
                format!("{max_ack_pending} is below concurrency {concurrency}: handlers would wait for acks the server will not allow"),
            );
        }
        let memory = s.limits.memory.map_or(defaults::MEMORY, |b| b.0);
        if memory < (1 << 20) {
            self.problem(format!("{key}.limits.memory"), "must be at least 1MiB");
        }
        let timeout = s.limits.timeout.map_or(defaults::HANDLER_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            self.problem(format!("{key}.limits.timeout"), "must be more than zero");
        }
        let outputs_mode = s.outputs.mode.unwrap_or(defaults::OUTPUTS_MODE);
        if outputs_mode == raw::OutputsMode::Atomic && s.outputs.ids.is_some() {
            self.problem(
                format!("{key}.outputs.ids"),
                "does not apply with mode = \"atomic\": each output's Nats-Msg-Id is its place in its stream's batch, so that a redelivery recognises a batch already committed whatever it publishes",
            );
        }
        if s.limits.held_outputs.is_some() && outputs_mode != raw::OutputsMode::Atomic {
            self.problem(
                format!("{key}.limits.held_outputs"),
                "applies only with outputs.mode = \"atomic\" (immediate and pipelined outputs are not held)",
            );
        }
        let held_outputs = s
            .limits
            .held_outputs
            .map_or(defaults::HELD_OUTPUTS, |b| b.0);
        if held_outputs == 0 {
            self.problem(
                format!("{key}.limits.held_outputs"),
                "must be more than zero",
            );
        }
        if let Some(dl) = &s.dead_letter {
            if dl.has_wildcards() {
                self.problem(
                    format!("{key}.dead_letter"),
                    "must be a subject without wildcards",
                );
            }
            if subject.matches(dl.as_str()) {
                self.problem(
                    format!("{key}.dead_letter"),
                    format!(
                        "{:?} would be consumed again by this subscriber",
                        dl.as_str()
                    ),
                );
            }
        }
        let mode = s.instances.unwrap_or(defaults::INSTANCES);
        if let (raw::InstanceMode::Reuse, Some(_)) = (mode, s.prepared_instances) {
            self.problem(
                format!("{key}.prepared_instances"),
                "applies only with instances = \"per-message\"",
            );
        }
        let prepared =
            (s.prepared_instances).unwrap_or(defaults::PREPARED_INSTANCES.min(concurrency));
        if prepared > concurrency {
            self.problem(
                format!("{key}.prepared_instances"),
                format!("must be at most the concurrency ({concurrency})"),
            );
        }
        let instances = match (mode, s.max_instance_uses) {
            (raw::InstanceMode::PerMessage, Some(_)) => {
                self.problem(
                    format!("{key}.max_instance_uses"),
                    "applies only with instances = \"reuse\"",
                );
                Instances::PerMessage { prepared }
            }
            (raw::InstanceMode::PerMessage, None) => Instances::PerMessage { prepared },
            (raw::InstanceMode::Reuse, Some(0)) => {
                self.problem(format!("{key}.max_instance_uses"), "must be 1 or more");
                Instances::Reuse { max_uses: None }
            }
            (raw::InstanceMode::Reuse, max_uses) => Instances::Reuse { max_uses },
        };
        let publish = s
            .publish
            .unwrap_or_else(|| publishers.iter().map(|p| p.subject.clone()).collect());
        let tenant = match &s.tenant {
            None => None,
            Some(name) => match tenants.iter().find(|t| &t.name == name) {
                Some(t) => Some(t),
                None => {
                    self.problem(format!("{key}.tenant"), no_such_tenant(name, tenants));
                    None
                }
            },
        };
        if let Some(grants) = tenant.and_then(|t| t.grant_publish.as_ref().map(|g| (t, g))) {
            let (t, grants) = grants;
            for p in &publish {
                if !grants.iter().any(|g| g.covers(p.as_str())) {
                    self.problem(
                        format!("{key}.publish"),
                        format!(
                            "{:?} is outside tenant {:?}'s grants.publish ({})",
                            p.as_str(),
                            t.name,
                            join(grants)
                        ),
                    );
                }
            }
        }
        self.kv_grants(&key, &s.kv, tenant);
        let http = self.origins(&format!("{key}.http"), s.http);
        self.http_grants(&key, &http, tenant);
        let http_timeout = s
            .limits
            .http_timeout
            .map_or(defaults::HTTP_TIMEOUT, |d| d.0);
        if http_timeout.is_zero() {
            self.problem(
                format!("{key}.limits.http_timeout"),
                "must be more than zero",
            );
        }
        let http_response = s
            .limits
            .http_response
            .map_or(defaults::HTTP_RESPONSE, |b| b.0);
        if self.problems.len() > before {
            return None;
        }
        Some(SubscriberConfig {
            name: s.name,
            tenant: s.tenant,
            publishes_per_message: tenant.map_or(defaults::PUBLISHES_PER_MESSAGE, |t| {
                t.quotas.publishes_per_message
            }),
            component,
            fragment: s.fragment,
            subject,
            stream,
            watch,
            durable: s.durable,
            batch_size,
            pull_timeout,
            ack_wait,
            max_deliver,
            backoff,
            max_ack_pending,
            concurrency,
            dead_letter: s.dead_letter,
            publish,
            kv: s.kv,
            http,
            http_timeout,
            http_response,
            memory,
            timeout,
            secrets: s
                .config
                .iter()
                .filter(|(_, v)| matches!(v, raw::RawConfigValue::Secret { .. }))
                .map(|(k, _)| k.clone())
                .collect(),
            config: s
                .config
                .into_iter()
                .map(|(k, v)| match v {
                    raw::RawConfigValue::Plain(v) | raw::RawConfigValue::Secret { secret: v } => {
                        (k, v)
                    }
                })
                .collect(),
            double_ack: s.double_ack,
            instances,
            output_ids: s.outputs.ids.unwrap_or(defaults::OUTPUT_IDS),
            outputs_mode,
            held_outputs,
        })
    }
}

/// The problem of a `tenant` key naming no `[[tenants]]` entry.
pub(super) fn no_such_tenant(name: &str, tenants: &[TenantConfig]) -> String {
    let known: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    let known = match known.is_empty() {
        true => "none".to_string(),
        false => known.join(", "),
    };
    format!("no tenant {name:?} (tenants: {known})")
}
