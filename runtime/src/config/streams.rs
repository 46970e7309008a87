//! `[[streams]]`, `[[publishers]]` and `[[buckets]]` as validated: what
//! the service declares or expects on the server.

use super::{Name, Retention, Storage, Subject};
use std::time::Duration;

/// `[[streams]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// Stream name.
    pub name: Name,
    /// Subjects it captures.
    pub subjects: Vec<Subject>,
    /// Create it when missing.
    pub declare: bool,
    /// Storage, when given.
    pub storage: Option<Storage>,
    /// Retention, when given.
    pub retention: Option<Retention>,
    /// Replicas, when given.
    pub replicas: Option<usize>,
    /// Maximum age, when given.
    pub max_age: Option<Duration>,
    /// Duplicate window, when given.
    pub duplicate_window: Option<Duration>,
    /// A subscriber with `outputs.mode = "atomic"` may publish to it: it
    /// is declared with atomic publish allowed, and must allow it when it exists.
    pub atomic: bool,
    /// nats-server message schedules allowed (`allow_schedules`).
    pub allow_schedules: bool,
    /// Per-message time-to-live allowed (`allow_ttl`).
    pub allow_ttl: bool,
    /// The tenant whose fragment declares it, in its account (`None`: the
    /// platform's file, fragments or included files).
    pub tenant: Option<String>,
}

/// The stream `name` of `streams` as subscribers of `tenant` (`None`: the
/// service's own) see it: the tenant's own first, then the platform's.
pub fn stream_named<'a>(
    streams: &'a [StreamConfig],
    name: &str,
    tenant: &Option<String>,
) -> Option<&'a StreamConfig> {
    let named = |owner: &Option<String>| {
        streams
            .iter()
            .find(|s| s.name.as_str() == name && &s.tenant == owner)
    };
    named(tenant).or_else(|| named(&None))
}

impl StreamConfig {
    /// Whether subscribers of `tenant` (`None`: the service's own) see it:
    /// a tenant's own streams are its alone; the platform's are everyone's.
    pub fn seen_by(&self, tenant: &Option<String>) -> bool {
        self.tenant.is_none() || &self.tenant == tenant
    }
}

/// `[[publishers]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherConfig {
    /// Subject or pattern.
    pub subject: Subject,
    /// The stream that captures it: publishes wait for its PubAck.
    pub stream: Option<Name>,
    /// PubAck timeout.
    pub timeout: Duration,
}

/// `[[buckets]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketConfig {
    /// Bucket name.
    pub name: String,
    /// Create when missing.
    pub declare: bool,
    /// Values kept per key.
    pub history: i64,
    /// Values older than this are dropped.
    pub max_age: Option<Duration>,
    /// The most the bucket stores, in bytes.
    pub max_bytes: Option<u64>,
    /// The largest value, in bytes.
    pub max_value_size: Option<u64>,
    /// Where it keeps its values.
    pub storage: Option<Storage>,
    /// Replicas in a cluster.
    pub replicas: Option<usize>,
    /// The tenant whose fragment declares it, in its account (`None`: the
    /// platform's).
    pub tenant: Option<String>,
}
