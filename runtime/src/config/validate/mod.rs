//! Step 1b of the data flow: raw serde structs → a validated [`Config`].
//! Resolves paths, defaults and environment overrides and checks fields
//! against each other, collecting every problem with the key it is about.

mod capabilities;
mod endpoints;
mod handler;
mod input;
mod schedules;
mod sources;
mod tenants;

use super::raw::{self, RawFile, RawNats};
use super::values::{Dur, Subject};
use super::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
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
        let schedules = self.schedules(
            raw.schedules,
            &service.name,
            &streams,
            &subscribers,
            &tenants,
        );
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
