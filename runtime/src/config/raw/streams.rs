//! `[[streams]]`, `[[buckets]]`, `[[publishers]]` and `[[schedules]]` as
//! written.

use super::{ByteSize, Dur, Name, Subject};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[[schedules]]`: a message nats-server publishes on a schedule (its
/// message schedules), held in a stream that allows them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// `name = "nightly"`: names the subject holding the schedule.
    pub name: String,
    /// `subject = "jobs.nightly"`: where each firing is published.
    pub subject: Subject,
    /// `cron = "0 0 2 * * *"`: six fields, seconds first (UTC).
    pub cron: Option<String>,
    /// `every = "30s"`: at least 1s.
    pub every: Option<Dur>,
    /// `at = "2027-01-01T00:00:00Z"`: once (RFC 3339, with its offset).
    pub at: Option<String>,
    /// `payload = '{"job":"compact"}'`
    #[serde(default)]
    pub payload: String,
    /// `headers = { "X-Job" = "compact" }`
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `stream = "JOBS"`: the stream that captures `subject` and the
    /// schedule's own subject, and allows schedules.
    pub stream: Name,
    /// `tenant = "acme"`: put with the tenant's identity, into the stream
    /// of that name in its account.
    pub tenant: Option<String>,
    /// The included file or fragment it came from (set when reading them).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// `[[streams]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    /// `name = "ORDER_EVENTS"`
    pub name: Name,
    /// `subjects = ["order.>"]`
    #[serde(default)]
    pub subjects: Vec<Subject>,
    /// `declare = true`: create it when missing (default). `false`: it must exist.
    pub declare: Option<bool>,
    /// `storage = "file"` or `"memory"`
    pub storage: Option<Storage>,
    /// `retention = "limits"`, `"interest"` or `"workqueue"`
    pub retention: Option<Retention>,
    /// `replicas = 3`
    pub replicas: Option<usize>,
    /// `max_age = "7d"`
    pub max_age: Option<Dur>,
    /// `duplicate_window = "2m"`: how long `Nats-Msg-Id` deduplicates.
    pub duplicate_window: Option<Dur>,
    /// `allow_schedules = true`: nats-server message schedules (ADR-51).
    pub allow_schedules: Option<bool>,
    /// `allow_ttl = true`: per-message time-to-live.
    pub allow_ttl: Option<bool>,
    /// The tenant whose fragment declares it, in its account.
    #[serde(skip)]
    pub tenant: Option<String>,
    /// The included file or fragment it came from.
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// `[[buckets]]`: a JetStream key-value bucket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucket {
    /// `name = "PAYMENTS"`: letters, digits, `-` and `_`.
    pub name: String,
    /// `declare = true`: create it when missing (default). `false`: it must exist.
    pub declare: Option<bool>,
    /// `history = 1`: values kept per key (1–64).
    pub history: Option<i64>,
    /// `max_age = "24h"`: values older than this are dropped.
    pub max_age: Option<Dur>,
    /// `max_bytes = "1GiB"`: the most the bucket stores; writes past it fail.
    pub max_bytes: Option<ByteSize>,
    /// `max_value_size = "64KiB"`: the largest value a write may store.
    pub max_value_size: Option<ByteSize>,
    /// `storage = "file"` or `"memory"`
    pub storage: Option<Storage>,
    /// `replicas = 3`
    pub replicas: Option<usize>,
    /// The tenant whose fragment declares it, in its account.
    #[serde(skip)]
    pub tenant: Option<String>,
    /// The included file or fragment it came from.
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// What a subscriber may do with a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvAccess {
    /// `"ro"`: read only.
    Ro,
    /// `"rw"`: read and write.
    Rw,
}

impl KvAccess {
    /// As written in service.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            KvAccess::Ro => "ro",
            KvAccess::Rw => "rw",
        }
    }
}

/// Where a stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On disk.
    File,
    /// In memory.
    Memory,
}

/// When a stream drops its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    /// By the stream's limits.
    Limits,
    /// Once every consumer has acknowledged.
    Interest,
    /// Once one consumer has acknowledged.
    Workqueue,
}

/// `[[publishers]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublisher {
    /// `subject = "order.status"`; wildcards allowed (`"inventory.>"`).
    pub subject: Subject,
    /// `stream = "ORDER_STATUS"`: publishes wait for this stream's PubAck.
    pub stream: Option<Name>,
    /// `timeout = "30s"`: how long a publish waits for its PubAck.
    pub timeout: Option<Dur>,
    /// The included file or fragment it came from.
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}
