//! service.toml as written: serde structs that reject unknown keys. Values
//! are checked for syntax here (see `values`); how they fit together is
//! checked in `validate`.

use super::values::{ByteSize, Dur, Name, PerSecond, Subject};
use serde::Deserialize;
use std::path::PathBuf;

mod handler;
mod streams;
mod tenant;

pub use handler::*;
pub use streams::*;
pub use tenant::*;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// `[service]`: name and shutdown behaviour.
    pub service: RawService,
    /// `[nats]`: how to reach the servers.
    #[serde(default)]
    pub nats: RawNats,
    /// `[[streams]]`: streams to declare or verify.
    #[serde(default)]
    pub streams: Vec<RawStream>,
    /// `[[buckets]]`: key-value buckets to declare or verify.
    #[serde(default)]
    pub buckets: Vec<RawBucket>,
    /// `[[publishers]]`: subjects handlers publish to, and how.
    #[serde(default)]
    pub publishers: Vec<RawPublisher>,
    /// `[[subscribers]]`: one handler component per durable consumer.
    #[serde(default)]
    pub subscribers: Vec<RawSubscriber>,
    /// `[[endpoints]]`: handler components answering core NATS requests.
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    /// `[[tenants]]`: teams whose subscribers run with their own NATS
    /// identity, quotas and grants.
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    /// `[[schedules]]`: messages nats-server publishes on a schedule.
    #[serde(default)]
    pub schedules: Vec<RawSchedule>,
}

/// A file named by `[service] include`, or a fragment in key-value: more
/// tenants, subscribers, streams, buckets, publishers and schedules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInclude {
    /// `[[tenants]]`
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    /// `[[subscribers]]`
    #[serde(default)]
    pub subscribers: Vec<RawSubscriber>,
    /// `[[endpoints]]`
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    /// `[[streams]]`
    #[serde(default)]
    pub streams: Vec<RawStream>,
    /// `[[buckets]]`
    #[serde(default)]
    pub buckets: Vec<RawBucket>,
    /// `[[publishers]]`
    #[serde(default)]
    pub publishers: Vec<RawPublisher>,
    /// `[[schedules]]` (not in a tenant's fragment)
    #[serde(default)]
    pub schedules: Vec<RawSchedule>,
}

/// `{ kv = "DEPLOY", keys = "platform.>" }`: the keys of a key-value bucket
/// that hold service fragments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKvKeys {
    /// The bucket.
    pub kv: String,
    /// The keys: a key, or a pattern with `*` and `>`.
    pub keys: String,
}

/// An entry of `[service] include`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawIncludeEntry {
    /// `"tenants/*.toml"`: files.
    Files(String),
    /// `{ kv = "DEPLOY", keys = "platform.>" }`: fragments from key-value keys.
    Kv(RawKvKeys),
}

/// `[service]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// `name = "order-processor"`: used as the NATS connection name and in logs.
    pub name: String,
    /// `graceful_timeout = "30s"`: how long shutdown waits for in-flight handlers.
    pub graceful_timeout: Option<Dur>,
    /// `stats_interval = "60s"`: log statistics this often (0 = only at shutdown).
    pub stats_interval: Option<Dur>,
    /// `include = ["tenants/*.toml", { kv = "DEPLOY", keys = "platform.>" }]`:
    /// more `[[tenants]]` and `[[subscribers]]` from other files (relative
    /// to this one; `*` and `?` match within a name) and from key-value keys.
    #[serde(default)]
    pub include: Vec<RawIncludeEntry>,
    /// `admin = "127.0.0.1:9464"`: serve /metrics, /healthz and /readyz
    /// over HTTP on this address (off when absent).
    pub admin: Option<String>,
    /// `traces = "http://127.0.0.1:4318"`: export OpenTelemetry traces over
    /// OTLP/HTTP to this collector (off when absent, unless
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set).
    pub traces: Option<String>,
}

/// `[nats]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNats {
    /// `servers = ["nats://localhost:4222"]`
    pub servers: Option<Vec<String>>,
    /// `allow_reconnect = true`
    pub allow_reconnect: Option<bool>,
    /// `reconnect_time_wait = "2s"`: pause between reconnect attempts.
    pub reconnect_time_wait: Option<Dur>,
    /// `max_reconnect_attempts = 10000`; `-1` retries forever.
    pub max_reconnect_attempts: Option<i64>,
    /// `ping_interval = "5s"`
    pub ping_interval: Option<Dur>,
    /// `connect_timeout = "2s"`
    pub connect_timeout: Option<Dur>,
    /// `credentials = "service.creds"`: a NATS credentials file (JWT + seed).
    pub credentials: Option<PathBuf>,
    /// `token = "${NATS_TOKEN}"`
    pub token: Option<String>,
    /// `user = "svc"` (with `password`)
    pub user: Option<String>,
    /// `password = "${NATS_PASSWORD}"`
    pub password: Option<String>,
    /// `nkey = "SU…"`: an NKey seed.
    pub nkey: Option<String>,
    /// `tls = { ca = "ca.pem", cert = "client.pem", key = "client.key", required = true }`
    pub tls: Option<RawTls>,
}

/// `[nats.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// `ca = "ca.pem"`: extra root certificates.
    pub ca: Option<PathBuf>,
    /// `cert = "client.pem"`: client certificate (with `key`).
    pub cert: Option<PathBuf>,
    /// `key = "client.key"`
    pub key: Option<PathBuf>,
    /// `required = true`: refuse plain connections.
    #[serde(default)]
    pub required: bool,
}

/// An `http` grant entry: `"https://host[:port]"`, or
/// `{ origin = "http://host:port", internal = true }` to let a name reach
/// internal addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawOrigin {
    /// `"https://api.example.com"`
    Plain(String),
    /// `{ origin = "…", internal = true }`
    Table {
        /// The origin.
        origin: String,
        /// Whether a name may resolve to an internal address.
        #[serde(default)]
        internal: bool,
    },
}

/// A `config` value: `"eu"`, or `{ secret = "${API_KEY}" }` for one the
/// runtime never shows.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawConfigValue {
    /// A plain value.
    Plain(String),
    /// `{ secret = "…" }`
    Secret {
        /// The value.
        secret: String,
    },
}
