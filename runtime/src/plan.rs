//! What `natsapp-wasm check` prints: the streams, publishers,
//! subscribers and endpoints a configuration sets up, and their components.

use crate::config::{ByteSize, Config, KvAccess, Quotas, SubscriberConfig, TenantConfig};
use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::time::Duration;

/// A readable summary of a validated configuration.
pub struct Plan(String);

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Plan {
    /// The plan of `config`, whose subscribers' components import
    /// `imports` (by subscriber name; empty when not loaded).
    pub fn new(c: &Config, imports: &BTreeMap<String, Vec<String>>) -> Plan {
        let mut s = String::new();
        let _ = writeln!(s, "service {:?} ({})", c.service.name, c.path.display());
        let reconnect = match (c.nats.allow_reconnect, c.nats.max_reconnect_attempts) {
            (false, _) => "no reconnect".to_string(),
            (true, None) => format!(
                "reconnect every {} forever",
                secs(c.nats.reconnect_time_wait)
            ),
            (true, Some(n)) => format!(
                "reconnect every {}, up to {n} attempts",
                secs(c.nats.reconnect_time_wait)
            ),
        };
        let _ = writeln!(
            s,
            "nats: {} ({reconnect}; graceful shutdown {})",
            c.nats.servers.join(", "),
            secs(c.service.graceful_timeout)
        );
        if let Some(admin) = c.service.admin {
            let _ = writeln!(s, "admin: http://{admin} (/metrics, /healthz, /readyz)");
        }
        if let Some(collector) = &c.service.traces {
            let _ = writeln!(s, "traces: OTLP/HTTP to {collector}/v1/traces");
        }
        let _ = writeln!(s, "streams:");
        for st in &c.streams {
            let subjects: Vec<&str> = st.subjects.iter().map(|x| x.as_str()).collect();
            let how = if st.declare {
                "declare if missing"
            } else {
                "must exist"
            };
            let whose = match &st.tenant {
                Some(t) => format!(", in tenant {t:?}'s account"),
                None => String::new(),
            };
            let _ = writeln!(s, "  {} [{}] ({how}{whose})", st.name, subjects.join(", "));
        }
        let _ = writeln!(s, "publishers:");
        for p in &c.publishers {
            match &p.stream {
                Some(st) => {
                    let _ = writeln!(
                        s,
                        "  {} -> stream {st} (PubAck within {})",
                        p.subject,
                        secs(p.timeout)
                    );
                }
                None => {
                    let _ = writeln!(s, "  {} (core NATS)", p.subject);
                }
            }
        }
        if !c.schedules.is_empty() {
            let _ = writeln!(s, "schedules (published by nats-server):");
        }
        for sc in &c.schedules {
            let _ = writeln!(
                s,
                "  {}: {} -> {} (held on {} in stream {}{})",
                sc.name,
                sc.when.header(),
                sc.subject,
                sc.held_on,
                sc.stream,
                sc.tenant.as_ref().map_or(String::new(), |t| format!(
                    " of tenant {t:?}, put with its identity"
                ))
            );
        }
        if !c.tenants.is_empty() {
            let _ = writeln!(s, "tenants:");
        }
        for t in &c.tenants {
            let _ = writeln!(
                s,
                "  {}: own connection to {} as {:?}",
                t.name,
                t.nats.servers.join(", "),
                t.nats.auth,
            );
            let _ = writeln!(s, "    quotas: {}", describe_quotas(&t.quotas));
            let _ = writeln!(s, "    grants: {}", describe_grants(t));
        }
        let _ = writeln!(s, "subscribers:");
        for sub in &c.subscribers {
            let source = match &sub.watch {
                None => format!("{} on stream {}", sub.subject, sub.stream),
                Some(w) => format!(
                    "changes of keys {} of bucket {} (start {}, stream {})",
                    w.keys,
                    w.bucket,
                    w.start.as_str(),
                    sub.stream
                ),
            };
            let _ = writeln!(
                s,
                "  {}: {source}, durable {}{}",
                sub.name,
                sub.durable,
                sub.tenant
                    .as_ref()
                    .map_or(String::new(), |t| format!(" (tenant {t})"))
            );
            component_lines(&mut s, sub, imports);
            let max_deliver = sub.max_deliver.map_or("unlimited".to_string(), |m| {
                format!("{m} (server {})", sub.server_max_deliver())
            });
            let backoff: Vec<String> = sub.backoff.iter().map(|d| secs(*d)).collect();
            let _ = writeln!(
                s,
                "    concurrency {}, batch {}, pull timeout {}, ack_wait {}, max_deliver {max_deliver}, backoff [{}], instances {}",
                sub.concurrency, sub.batch_size, secs(sub.pull_timeout), secs(sub.ack_wait), backoff.join(", "),
                describe_instances(sub.instances)
            );
            guest_lines(&mut s, c, sub);
            let _ = writeln!(
                s,
                "    dead letter: {}",
                sub.dead_letter
                    .as_ref()
                    .map_or("none".to_string(), |d| format!(
                        "{d} ({}; must be captured by a stream on the server)",
                        route_of(c, d.as_str(), &sub.tenant)
                    ))
            );
        }
        if !c.endpoints.is_empty() {
            let _ = writeln!(s, "endpoints:");
        }
        for e in &c.endpoints {
            let sub = &e.handler;
            let _ = writeln!(
                s,
                "  {}: requests on {} in queue group {}{}",
                e.name,
                e.subject,
                e.queue_group,
                sub.tenant
                    .as_ref()
                    .map_or(String::new(), |t| format!(" (tenant {t})"))
            );
            component_lines(&mut s, sub, imports);
            let _ = writeln!(
                s,
                "    concurrency {}, up to {} waiting (then 503), instances {}",
                sub.concurrency,
                e.max_waiting,
                describe_instances(sub.instances)
            );
            guest_lines(&mut s, c, sub);
        }
        let capped = c.capped();
        if !capped.is_empty() {
            let _ = writeln!(s, "warnings:");
        }
        for capped in capped {
            let _ = writeln!(s, "  {capped}");
        }
        Plan(s)
    }
}

/// The component of `sub` and what it imports (when loaded).
fn component_lines(
    s: &mut String,
    sub: &SubscriberConfig,
    imports: &BTreeMap<String, Vec<String>>,
) {
    match sub.component.file() {
        Some(path) => {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let _ = writeln!(
                s,
                "    component {} ({} KiB): implements {}",
                path.display(),
                size.div_ceil(1024),
                crate::wasm::component::HANDLER_EXPORT,
            );
        }
        None => {
            let _ = writeln!(
                s,
                "    component {}: read through its connection and checked at start",
                sub.component
            );
        }
    }
    if let Some(imports) = imports.get(&sub.name) {
        let _ = writeln!(s, "    imports: {}", describe_imports(imports));
    }
}

/// What the guest of `sub` may use: CPU, limits, publishes, config, HTTP, buckets.
fn guest_lines(s: &mut String, c: &Config, sub: &SubscriberConfig) {
    let _ = writeln!(s, "    guest cpu: {}", describe_share(c, sub));
    let _ = writeln!(
        s,
        "    limits: memory {} MiB, {} per message; output ids: {}",
        sub.memory >> 20,
        secs(sub.timeout),
        match sub.output_ids {
            crate::config::OutputIds::Content => "content",
            crate::config::OutputIds::Sequence => "sequence",
        }
    );
    let _ = writeln!(s, "    may publish to:");
    for subject in &sub.publish {
        let route = route_of(c, subject.as_str(), &sub.tenant);
        let _ = writeln!(s, "      {subject} ({route})");
    }
    if sub.publish.is_empty() {
        let _ = writeln!(s, "      nothing");
    }
    let config: Vec<String> = sub
        .config
        .iter()
        .map(|(k, v)| match sub.secrets.contains(k) {
            true => format!("{k} = (secret)"),
            false => format!("{k} = {v:?}"),
        })
        .collect();
    if !config.is_empty() {
        let _ = writeln!(s, "    config: {}", config.join(", "));
    }
    let buckets = describe_buckets(&sub.kv);
    let origins: Vec<String> = sub.http.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        s,
        "    http: {}",
        if origins.is_empty() {
            "none".to_string()
        } else {
            format!(
                "{} (timeout {}, responses up to {} KiB)",
                origins.join(", "),
                secs(sub.http_timeout),
                sub.http_response.div_ceil(1024)
            )
        }
    );
    let _ = writeln!(
        s,
        "    key-value buckets: {}",
        if buckets.is_empty() {
            "none".to_string()
        } else {
            buckets.join(", ")
        }
    );
}

fn describe_instances(instances: crate::config::Instances) -> String {
    match instances {
        crate::config::Instances::PerMessage { prepared } => {
            format!("per-message, {prepared} prepared")
        }
        crate::config::Instances::Reuse { max_uses: None } => "reused".to_string(),
        crate::config::Instances::Reuse { max_uses: Some(n) } => format!("reused up to {n} times"),
    }
}

fn cores(c: f64) -> String {
    format!("{c} {}", if c == 1.0 { "core" } else { "cores" })
}

/// The guest CPU `sub` shares with the other subscribers of its group.
fn describe_share(c: &Config, sub: &SubscriberConfig) -> String {
    let siblings = (c.subscribers.iter())
        .chain(c.endpoints.iter().map(|e| &e.handler))
        .filter(|o| o.tenant == sub.tenant)
        .count();
    let (pool, group) = match &sub.tenant {
        Some(t) => (
            c.tenants
                .iter()
                .find(|x| &x.name == t)
                .and_then(|x| x.quotas.cpu)
                .unwrap_or_else(crate::wasm::cpu::share::service_pool),
            format!("tenant {t}'s"),
        ),
        None => (
            crate::wasm::cpu::share::service_pool(),
            "the service's own".to_string(),
        ),
    };
    let noun = match (siblings, c.endpoints.is_empty()) {
        (1, true) => "subscriber",
        (_, true) => "subscribers",
        (1, false) => "handler",
        (_, false) => "subscribers and endpoints",
    };
    format!(
        "{} shared equally by the busy ones of {group} {siblings} {noun}",
        cores(pool)
    )
}

/// Every quota of a tenant, defaults included.
fn describe_quotas(q: &Quotas) -> String {
    let unlimited = || "unlimited".to_string();
    [
        format!(
            "concurrency {}",
            q.concurrency.map_or_else(unlimited, |n| n.to_string())
        ),
        format!("cpu {}", q.cpu.map_or_else(unlimited, cores)),
        format!(
            "memory {}",
            q.memory.map_or_else(unlimited, |m| ByteSize(m).to_string())
        ),
        format!("{} publishes per message", q.publishes_per_message),
        format!(
            "publish rate {}",
            q.publish_rate.map_or_else(unlimited, |n| format!("{n}/s"))
        ),
        format!(
            "publish bytes {}",
            q.publish_bytes
                .map_or_else(unlimited, |n| format!("{}/s", ByteSize(n)))
        ),
        format!(
            "http rate {}",
            q.http_rate.map_or_else(unlimited, |n| format!("{n}/s"))
        ),
        format!(
            "http concurrency {}",
            q.http_concurrency.map_or_else(unlimited, |n| n.to_string())
        ),
        format!(
            "components up to {}",
            q.component_size
                .map_or_else(unlimited, |b| ByteSize(b).to_string())
        ),
        format!(
            "compiled within {}",
            q.compile_time.map_or_else(unlimited, secs)
        ),
        format!(
            "{} handlers",
            q.handlers
                .map_or_else(unlimited, |n| format!("at most {n}"))
        ),
    ]
    .join(", ")
}

/// The bounds a tenant's grants put on its subscribers' capabilities.
fn describe_grants(t: &TenantConfig) -> String {
    let any = || "any".to_string();
    let publish = t.grant_publish.as_ref().map_or_else(any, |g| {
        g.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", ")
    });
    let kv = t
        .grant_kv
        .as_ref()
        .map_or_else(any, |g| describe_buckets(g).join(", "));
    let http = t.grant_http.as_ref().map_or_else(any, |g| {
        g.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    });
    format!("publish [{publish}], kv [{kv}], http [{http}]")
}

/// Key-value buckets with their access, as service.toml names them.
fn describe_buckets(kv: &BTreeMap<String, KvAccess>) -> Vec<String> {
    kv.iter()
        .map(|(b, access)| format!("{b} ({})", access.as_str()))
        .collect()
}

/// A component's imports: the runtime's own interfaces and wasi:config by
/// name, the rest of WASI 0.2 counted (it is linked locked down).
fn describe_imports(imports: &[String]) -> String {
    let (named, wasi): (Vec<&String>, Vec<&String>) = imports
        .iter()
        .partition(|i| !i.starts_with("wasi:") || i.starts_with("wasi:config/"));
    let mut parts: Vec<String> = named.iter().map(|i| i.to_string()).collect();
    parts.sort();
    if !wasi.is_empty() {
        parts.push(format!(
            "{} WASI 0.2 interfaces (no files, network or environment)",
            wasi.len()
        ));
    }
    if parts.is_empty() {
        "nothing".to_string()
    } else {
        parts.join(", ")
    }
}

/// How publishes to `pattern` go, from the file: JetStream when a
/// `[[publishers]]` entry with a stream or a `[[streams]]` entry captures
/// all of it, core NATS when nothing in the file captures any of it.
pub(crate) fn route_of(c: &Config, pattern: &str, tenant: &Option<String>) -> String {
    let publisher = c
        .publishers
        .iter()
        .find(|p| p.stream.is_some() && p.subject.covers(pattern));
    if let Some(p) = publisher {
        return format!(
            "JetStream, stream {}, PubAck within {}",
            p.stream.as_ref().map_or("", |s| s.as_str()),
            secs(p.timeout)
        );
    }
    let streams = || c.streams.iter().filter(|st| st.seen_by(tenant));
    if let Some(st) = streams().find(|st| st.subjects.iter().any(|s| s.covers(pattern))) {
        return format!("JetStream, stream {}", st.name);
    }
    let overlaps = |s: &crate::config::Subject| {
        s.covers(pattern) || crate::config::values::subject_covers(pattern, s.as_str())
    };
    let partly = c
        .publishers
        .iter()
        .any(|p| p.stream.is_some() && overlaps(&p.subject))
        || streams().any(|st| st.subjects.iter().any(overlaps));
    if partly {
        "JetStream where a stream in the file captures the subject, core NATS elsewhere".into()
    } else {
        "core NATS: not stored, no PubAck".into()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
