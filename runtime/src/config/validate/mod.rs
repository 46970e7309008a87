//! Step 1b of the data flow: raw serde structs → a validated [`Config`].
//! Resolves paths, defaults and environment overrides and checks fields
//! against each other, collecting every problem with the key it is about.

mod capabilities;
mod endpoints;
mod input;
mod schedules;
mod sources;
mod tenants;

use super::raw::{self, RawFile, RawNats, RawSubscriber};
use super::values::{Dur, Subject};
use super::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tenants::Identity;

pub(super) struct Validator<'a, E> {
    path: &'a Path,
    dir: PathBuf,
    env: &'a E,
    problems: Vec<Problem>,
}

impl<'a, E: Fn(&str) -> Option<String>> Validator<'a, E> {
    pub(super) fn new(path: &'a Path, env: &'a E) -> Self {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        Validator {
            path,
            dir,
            env,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        };
        normalize(&std::path::absolute(&joined).unwrap_or(joined))
    }

    fn env_flag(&self, name: &str) -> bool {
        (self.env)(name).is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
    }

    pub(super) fn validate(mut self, raw: RawFile) -> Result<Config, ConfigError> {
        let service = self.service(&raw);
        let nats = self.nats(raw.nats);
        let streams = self.streams(raw.streams);
        let tenant_buckets: Vec<(usize, String, String, Option<PathBuf>)> = (raw.buckets.iter())
            .enumerate()
            .filter_map(|(i, b)| Some((i, b.name.clone(), b.tenant.clone()?, b.origin.clone())))
            .collect();
        let buckets = self.buckets(raw.buckets);
        let publishers = self.publishers(raw.publishers, &streams);
        let tenants = self.tenants(raw.tenants, &nats);
        let subscribers: Vec<SubscriberConfig> = raw
            .subscribers
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| self.subscriber(i, s, &streams, &publishers, &tenants))
            .collect();
        let endpoints: Vec<EndpointConfig> = raw
            .endpoints
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| self.endpoint(i, e, &service.name, &publishers, &tenants))
            .collect();
        let schedules = self.schedules(raw.schedules, &service.name, &streams, &subscribers);
        self.delayed_readers(&streams, &subscribers);
        let mut streams = streams;
        for st in &mut streams {
            st.atomic = subscribers
                .iter()
                .any(|s| st.seen_by(&s.tenant) && s.writes_atomically_to(&st.subjects));
        }
        self.tenant_buckets(&tenant_buckets, &tenants);
        let deployed = !service.include_kv.is_empty() || tenants.iter().any(|t| t.deploy.is_some());
        if subscribers.is_empty() && endpoints.is_empty() && self.problems.is_empty() && !deployed {
            self.problem(
                "subscribers",
                "no [[subscribers]] nor [[endpoints]]: the service would do nothing",
            );
        }
        for t in &tenants {
            let count = subscribers
                .iter()
                .filter(|s| s.tenant.as_deref() == Some(&t.name))
                .count()
                + endpoints
                    .iter()
                    .filter(|e| e.tenant() == Some(&t.name))
                    .count();
            if let Some(most) = t.quotas.handlers.filter(|most| count > *most) {
                self.problem(
                    format!("tenants ({:?}).quotas.handlers", t.name),
                    format!(
                        "tenant {:?} has {count} subscribers and endpoints; its quota allows {most}",
                        t.name
                    ),
                );
            }
        }
        self.unique(
            subscribers
                .iter()
                .map(|s| s.name.clone())
                .chain(endpoints.iter().map(|e| e.name.clone())),
            "subscribers",
            "name (of a subscriber or endpoint)",
        );
        self.unique(
            subscribers
                .iter()
                .map(|s| owned(&s.tenant, &format!("{}/{}", s.stream, s.durable))),
            "subscribers",
            "stream/durable",
        );
        if !self.problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: self.path.to_path_buf(),
                problems: self.problems,
            });
        }
        Ok(Config {
            path: self.path.to_path_buf(),
            service,
            nats,
            streams,
            buckets,
            publishers,
            schedules,
            subscribers,
            endpoints,
            tenants,
        })
    }

    fn unique(&mut self, values: impl Iterator<Item = String>, section: &str, what: &str) {
        let mut seen = HashSet::new();
        for v in values {
            if !seen.insert(v.clone()) {
                self.problem(section, format!("{what} {v:?} appears more than once"));
            }
        }
    }

    fn service(&mut self, raw: &RawFile) -> ServiceConfig {
        if raw.service.name.trim().is_empty() {
            self.problem("service.name", "must not be empty");
        }
        let mut graceful_timeout = raw
            .service
            .graceful_timeout
            .map_or(defaults::GRACEFUL_TIMEOUT, |d| d.0);
        if let Some(v) = (self.env)("GRACEFUL_SHUTDOWN_TIMEOUT") {
            match Dur::parse(&v) {
                Ok(d) => graceful_timeout = d.0,
                Err(e) => self.problem("GRACEFUL_SHUTDOWN_TIMEOUT (environment)", e),
            }
        }
        let debug = self.env_flag("NATS_DEBUG");
        let stats_interval = match raw.service.stats_interval {
            Some(Dur(d)) if d.is_zero() => None,
            Some(Dur(d)) => Some(d),
            None if debug => Some(defaults::DEBUG_STATS_INTERVAL),
            None => None,
        };
        let admin = raw.service.admin.as_deref().and_then(|a| match a.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    "service.admin",
                    format!("{a:?} is not an address and port, like \"127.0.0.1:9464\""),
                );
                None
            }
        });
        let traces = raw.service.traces.as_deref().and_then(|t| {
            if t.starts_with("http://") && t.len() > "http://".len() {
                return Some(t.trim_end_matches('/').to_string());
            }
            let why = if t.starts_with("https://") {
                "TLS is not built into the trace exporter: export over http:// to a collector beside the service"
            } else {
                "is not an OTLP/HTTP collector URL, like \"http://127.0.0.1:4318\""
            };
            self.problem("service.traces", format!("{t:?}: {why}"));
            None
        });
        let include_kv = raw
            .service
            .include
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| match entry {
                raw::RawIncludeEntry::Kv(k) => {
                    Some(self.kv_keys(&format!("service.include[{i}]"), k.clone()))
                }
                raw::RawIncludeEntry::Files(_) => None,
            })
            .collect();
        ServiceConfig {
            name: raw.service.name.clone(),
            graceful_timeout,
            stats_interval,
            debug,
            admin,
            traces,
            include_kv,
        }
    }

    fn nats(&mut self, raw: RawNats) -> NatsConfig {
        let mut servers = raw
            .servers
            .unwrap_or_else(|| vec![defaults::SERVER.to_string()]);
        if let Some(v) = (self.env)("NATS_SERVERS") {
            servers = v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if servers.is_empty() {
                self.problem("NATS_SERVERS (environment)", "is set but names no server");
            }
        } else if servers.is_empty() {
            self.problem("nats.servers", "must name at least one server");
        }
        let attempts = raw
            .max_reconnect_attempts
            .unwrap_or(defaults::MAX_RECONNECT_ATTEMPTS);
        let max_reconnect_attempts = match attempts {
            -1 => None,
            n if n >= 0 => Some(n as usize),
            n => {
                self.problem(
                    "nats.max_reconnect_attempts",
                    format!("{n} is not allowed: use -1 (forever) or a count"),
                );
                None
            }
        };
        let allow_reconnect =
            raw.allow_reconnect.unwrap_or(true) && max_reconnect_attempts != Some(0);
        let (auth, tls) = self.identity(
            "nats",
            Identity {
                credentials: raw.credentials,
                token: raw.token,
                user: raw.user,
                password: raw.password,
                nkey: raw.nkey,
                tls: raw.tls,
            },
        );
        NatsConfig {
            servers,
            allow_reconnect,
            reconnect_time_wait: raw
                .reconnect_time_wait
                .map_or(defaults::RECONNECT_TIME_WAIT, |d| d.0),
            max_reconnect_attempts,
            ping_interval: raw.ping_interval.map_or(defaults::PING_INTERVAL, |d| d.0),
            connect_timeout: raw
                .connect_timeout
                .map_or(defaults::CONNECT_TIMEOUT, |d| d.0),
            auth,
            tls,
        }
    }

    fn streams(&mut self, raw: Vec<raw::RawStream>) -> Vec<StreamConfig> {
        self.unique(
            raw.iter().map(|s| owned(&s.tenant, s.name.as_str())),
            "streams",
            "name",
        );
        raw.into_iter()
            .enumerate()
            .map(|(i, s)| {
                let key = format!("streams[{i}] ({:?}){}", s.name.as_str(), origin(&s.origin));
                let declare = s.declare.unwrap_or(true);
                if declare && s.subjects.is_empty() {
                    self.problem(
                        format!("{key}.subjects"),
                        "a declared stream needs at least one subject",
                    );
                }
                if s.replicas == Some(0) {
                    self.problem(format!("{key}.replicas"), "must be 1 or more");
                }
                StreamConfig {
                    name: s.name,
                    subjects: s.subjects,
                    declare,
                    storage: s.storage,
                    retention: s.retention,
                    replicas: s.replicas,
                    max_age: s.max_age.map(|d| d.0),
                    duplicate_window: s.duplicate_window.map(|d| d.0),
                    atomic: false,
                    allow_schedules: s.allow_schedules.unwrap_or(false),
                    allow_ttl: s.allow_ttl.unwrap_or(false),
                    tenant: s.tenant,
                }
            })
            .collect()
    }

    fn publishers(
        &mut self,
        raw: Vec<raw::RawPublisher>,
        streams: &[StreamConfig],
    ) -> Vec<PublisherConfig> {
        self.unique(
            raw.iter().map(|p| p.subject.to_string()),
            "publishers",
            "subject",
        );
        raw.into_iter()
            .enumerate()
            .map(|(i, p)| {
                if let Some(stream) = &p.stream {
                    let declared = streams
                        .iter()
                        .find(|s| &s.name == stream && s.tenant.is_none());
                    if let Some(s) = declared.filter(|s| !s.subjects.is_empty()) {
                        if !p.subject.has_wildcards()
                            && !s.subjects.iter().any(|pat| pat.matches(p.subject.as_str()))
                        {
                            self.problem(
                                format!(
                                    "publishers[{i}] ({:?}){}.stream",
                                    p.subject.as_str(),
                                    origin(&p.origin)
                                ),
                                format!(
                                    "stream {:?} does not capture subject {:?} (its subjects: {})",
                                    stream.as_str(),
                                    p.subject.as_str(),
                                    join(&s.subjects)
                                ),
                            );
                        }
                    }
                }
                PublisherConfig {
                    subject: p.subject,
                    stream: p.stream,
                    timeout: p.timeout.map_or(defaults::PUBLISH_TIMEOUT, |d| d.0),
                }
            })
            .collect()
    }

    fn subscriber(
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
    fn handler(
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
                "applies only with outputs.mode = \"atomic\" (immediate outputs are not held)",
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
        let instances = match (
            s.instances.unwrap_or(defaults::INSTANCES),
            s.max_instance_uses,
        ) {
            (raw::InstanceMode::PerMessage, Some(_)) => {
                self.problem(
                    format!("{key}.max_instance_uses"),
                    "applies only with instances = \"reuse\"",
                );
                Instances::PerMessage
            }
            (raw::InstanceMode::PerMessage, None) => Instances::PerMessage,
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
                    let known: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
                    self.problem(
                        format!("{key}.tenant"),
                        format!(
                            "no tenant {name:?} (tenants: {})",
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
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

/// How uniqueness names an entry a tenant's fragment may own: each
/// tenant's streams and buckets live in its own account.
fn owned(tenant: &Option<String>, name: &str) -> String {
    match tenant {
        None => name.to_string(),
        Some(t) => format!("{name} (tenant {t:?})"),
    }
}

/// ` in FILE` for an entry from an included file.
fn origin(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!(" in {}", f.display()))
        .unwrap_or_default()
}

/// Removes `.` and `..` segments without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn join(subjects: &[Subject]) -> String {
    subjects
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
