//! service.toml as written: serde structs that reject unknown keys. Values
//! are checked for syntax here (see `values`); how they fit together is
//! checked in `validate`.

use super::values::{ByteSize, Dur, Name, PerSecond, Subject};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// The included file or fragment it came from (set when reading them).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
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

/// `[[tenants]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    /// `name = "acme"`: named by its subscribers' `tenant`, in logs and statistics.
    pub name: String,
    /// `nats = { credentials = "acme.creds" }`: its own NATS identity.
    #[serde(default)]
    pub nats: RawTenantNats,
    /// `quotas = { concurrency = 32, publishes_per_message = 1000 }`
    #[serde(default)]
    pub quotas: RawQuotas,
    /// `grants = { publish = ["acme.>"] }`: the most its subscribers may be granted.
    #[serde(default)]
    pub grants: RawGrants,
    /// `deploy = { kv = "ACME_DEPLOY", keys = ">" }`: the tenant's own
    /// fragments, read with its identity, in its account.
    pub deploy: Option<RawKvKeys>,
    /// The included file it came from (set when reading includes).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
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

/// `[[tenants]] nats = { … }`: the tenant's identity; how to connect
/// (reconnects, timeouts) is the service's `[nats]`. Not `RawNats`: a
/// tenant chooses who it is, never how the service connects.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantNats {
    /// `servers = ["nats://…"]`; default: `[nats] servers`.
    pub servers: Option<Vec<String>>,
    /// `credentials = "acme.creds"`
    pub credentials: Option<PathBuf>,
    /// `token = "${ACME_TOKEN}"`
    pub token: Option<String>,
    /// `user = "acme"` (with `password`)
    pub user: Option<String>,
    /// `password = "${ACME_PASSWORD}"`
    pub password: Option<String>,
    /// `nkey = "SU…"`
    pub nkey: Option<String>,
    /// `tls = { ca = …, cert = …, key = …, required = true }`
    pub tls: Option<RawTls>,
}

/// `quotas = { … }`: limits across all of a tenant's subscribers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotas {
    /// `concurrency = 32`: handlers running at once across its subscribers.
    pub concurrency: Option<usize>,
    /// `publishes_per_message = 1000`: publishes and requests one message's handler may make.
    pub publishes_per_message: Option<u32>,
    /// `cpu = "0.5"`: cores' worth of guest execution across its subscribers.
    pub cpu: Option<Cores>,
    /// `memory = "512MiB"`: guest memory its live instances may hold together.
    pub memory: Option<ByteSize>,
    /// `publish_rate = "5000/s"`: publishes and requests per second across its subscribers.
    pub publish_rate: Option<PerSecond>,
    /// `publish_bytes = "10MiB/s"`: payload bytes published per second across its subscribers.
    pub publish_bytes: Option<PerSecond>,
    /// `http_rate = "100/s"`: outbound HTTP requests per second across its subscribers.
    pub http_rate: Option<PerSecond>,
    /// `http_concurrency = 16`: outbound HTTP requests in flight at once across its subscribers.
    pub http_concurrency: Option<usize>,
    /// `component_size = "64MiB"`: the largest component its subscribers may run.
    pub component_size: Option<ByteSize>,
    /// `handlers = 100`: the most subscribers it may have.
    pub handlers: Option<usize>,
    /// `compile_time = "2m"`: the longest one of its components may take to compile.
    pub compile_time: Option<Dur>,
}

/// A number of cores, written `"0.5"` or `0.5`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct Cores(pub f64);

impl TryFrom<toml::Value> for Cores {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        let n = match &v {
            toml::Value::String(s) => s.trim().parse::<f64>().ok(),
            toml::Value::Float(f) => Some(*f),
            toml::Value::Integer(i) => Some(*i as f64),
            _ => None,
        };
        match n {
            Some(n) if n > 0.0 && n.is_finite() => Ok(Cores(n)),
            _ => Err(format!(
                "invalid cpu quota {v}: write cores as \"0.5\" or 2, more than zero"
            )),
        }
    }
}

/// `grants = { … }`: the most a tenant's subscribers may be granted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrants {
    /// `publish = ["acme.>"]`: every subscriber's `publish` entry must lie within these.
    pub publish: Option<Vec<Subject>>,
    /// `kv = { ACME_STATE = "rw" }`: the buckets its subscribers may be
    /// granted, and at most with which access.
    pub kv: Option<BTreeMap<String, KvAccess>>,
    /// `http = ["https://*.acme.example"]`: every subscriber's `http` entry must lie within these.
    pub http: Option<Vec<RawOrigin>>,
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

/// `[[subscribers]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubscriber {
    /// `name = "process-order"`: used in logs and statistics.
    pub name: String,
    /// `tenant = "acme"`: whose identity, quotas and grants it runs with
    /// (absent: the service's own `[nats]`).
    pub tenant: Option<String>,
    /// The included file it came from (set when reading includes).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
    /// The key-value fragment it came from (set when adding fragments).
    #[serde(skip)]
    pub fragment: Option<super::FragmentKey>,
    /// `component = "handler.wasm"` (relative to this file),
    /// `component = { path = "handler.wasm", sha256 = "…" }` to pin its bytes, or
    /// `component = { object = "BUCKET/NAME", sha256 = "…" }` from an object store.
    pub component: RawComponent,
    /// `subject = "order.created"`: the consumer's filter subject (not with `watch`).
    pub subject: Option<Subject>,
    /// `stream = "ORDER_EVENTS"` (not with `watch`).
    pub stream: Option<Name>,
    /// `watch = { kv = "PRICES", keys = "sku.>", start = "new" }`: a
    /// key-value bucket's changes, instead of `stream` and `subject`.
    pub watch: Option<RawWatch>,
    /// `durable = "order_processor"`: the durable consumer's name.
    pub durable: Name,
    /// `pull = { batch_size = 3, timeout = "10s" }` (also accepted as `pull_sub`).
    #[serde(default, alias = "pull_sub")]
    pub pull: RawPull,
    /// `consumer = { ack_wait = "10s", max_deliver = 3, backoff = ["1s", "10s"] }`
    #[serde(default)]
    pub consumer: RawConsumer,
    /// `concurrency = 4`: handlers running at once for this subscriber.
    pub concurrency: Option<usize>,
    /// `dead_letter = "dlq.order"`: where rejected and exhausted messages are copied.
    pub dead_letter: Option<Subject>,
    /// `publish = ["order.status", "inventory.>"]`: where the handler may publish.
    pub publish: Option<Vec<Subject>>,
    /// `http = ["https://api.example.com"]`: origins the handler may send
    /// HTTP requests to.
    #[serde(default)]
    pub http: Vec<RawOrigin>,
    /// `kv = { PAYMENTS = "rw", PRICES = "ro" }`: the key-value buckets the
    /// handler may use, and how.
    #[serde(default)]
    pub kv: BTreeMap<String, KvAccess>,
    /// `limits = { memory = "64MiB", timeout = "5s" }`
    #[serde(default)]
    pub limits: RawLimits,
    /// `config = { region = "eu", api_key = { secret = "${API_KEY}" } }`:
    /// values the guest reads through wasi:config; secret ones are never shown.
    #[serde(default)]
    pub config: BTreeMap<String, RawConfigValue>,
    /// `instances = "reuse"` (default: a warm pool of up to `concurrency`
    /// instances) or `"per-message"` (a fresh instance for every message).
    pub instances: Option<InstanceMode>,
    /// `max_instance_uses = 1000`: with `instances = "reuse"`, replace an
    /// instance after this many messages.
    pub max_instance_uses: Option<u64>,
    /// `double_ack = true`: wait for the server to confirm each ack.
    #[serde(default)]
    pub double_ack: bool,
    /// `outputs = { ids = "content", mode = "immediate" }`: how the
    /// handler's outputs are identified and when they are stored.
    #[serde(default)]
    pub outputs: RawOutputs,
}

/// `[[endpoints]]`: a core NATS subject served by a component in a queue
/// group, as an endpoint of the service's NATS micro-service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    /// `name = "quote"`: the micro-service endpoint's name, in logs and statistics.
    pub name: String,
    /// `subject = "pricing.quote"`: the subject it serves.
    pub subject: Subject,
    /// `queue_group = "pricing"` (default: the service's name): replicas
    /// in one group share the requests.
    pub queue_group: Option<String>,
    /// `max_waiting = 1024`: requests waiting beyond `concurrency`; past
    /// it a request is answered 503 at once.
    pub max_waiting: Option<usize>,
    /// `tenant = "acme"`: whose identity, quotas and grants it runs with.
    pub tenant: Option<String>,
    /// The included file it came from (set when reading includes).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
    /// The key-value fragment it came from (set when adding fragments).
    #[serde(skip)]
    pub fragment: Option<super::FragmentKey>,
    /// `component = "quote.wasm"`, pinned or an object, as for subscribers.
    pub component: RawComponent,
    /// `concurrency = 64`: handlers running at once.
    pub concurrency: Option<usize>,
    /// `publish = ["pricing.>"]`: where the handler may publish (its
    /// requests' reply subjects are always allowed).
    pub publish: Option<Vec<Subject>>,
    /// `http = ["https://api.example.com"]`
    #[serde(default)]
    pub http: Vec<RawOrigin>,
    /// `kv = { PRICES = "ro" }`
    #[serde(default)]
    pub kv: BTreeMap<String, KvAccess>,
    /// `limits = { memory = "64MiB", timeout = "5s" }`
    #[serde(default)]
    pub limits: RawLimits,
    /// `config = { … }`: wasi:config values, as for subscribers.
    #[serde(default)]
    pub config: BTreeMap<String, RawConfigValue>,
    /// `instances = "reuse"` (default) or `"per-message"`.
    pub instances: Option<InstanceMode>,
    /// `max_instance_uses = 1000`
    pub max_instance_uses: Option<u64>,
}

/// `watch = { … }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    /// `kv = "PRICES"`: the bucket.
    pub kv: String,
    /// `keys = "sku.>"` (default `">"`, every key).
    pub keys: Option<String>,
    /// `start = "new"` (default), `"last"` or `"all"`.
    pub start: Option<super::WatchStart>,
}

/// `outputs = { … }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutputs {
    /// `ids = "content"` (default) or `"sequence"`: the `Nats-Msg-Id` scheme
    /// that keeps a redelivered message from storing its outputs twice.
    pub ids: Option<OutputIds>,
    /// `mode = "immediate"` (default) or `"atomic"`: when they are stored.
    pub mode: Option<OutputsMode>,
}

/// When a handler's outputs are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputsMode {
    /// Each publish is stored as it is made (the PubAck is awaited in the call).
    Immediate,
    /// Publishes are held during `handle` and, when it succeeds, committed
    /// as one atomic batch per stream before the input is acknowledged.
    Atomic,
}

/// How an output's `Nats-Msg-Id` is derived from the input and the publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputIds {
    /// Input + subject + payload digest + how many identical outputs this
    /// call already stored: independent of the order of publishes; the
    /// payloads must be the same on every delivery.
    Content,
    /// Input + how many outputs this call already stored: payloads may
    /// differ between deliveries (timestamps); the order may not.
    Sequence,
}

/// A component file, optionally pinned by its SHA-256, or an object in a
/// JetStream Object Store.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawComponent {
    /// `"handler.wasm"`
    Path(PathBuf),
    /// `{ path = "handler.wasm", sha256 = "…" }`
    Pinned {
        /// The file.
        path: PathBuf,
        /// The SHA-256 of its bytes, 64 hexadecimal digits.
        sha256: String,
    },
    /// `{ object = "BUCKET/NAME", sha256 = "…" }`
    Object {
        /// `BUCKET/NAME`.
        object: String,
        /// The version's SHA-256 (absent: the latest pushed).
        sha256: Option<String>,
    },
}

impl RawComponent {
    /// The file, when it is one.
    pub fn path_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            RawComponent::Path(p) | RawComponent::Pinned { path: p, .. } => Some(p),
            RawComponent::Object { .. } => None,
        }
    }
}

/// How instances are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceMode {
    /// A fresh instance for every message.
    PerMessage,
    /// Warm instances reused across messages.
    Reuse,
}

/// `pull = { … }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPull {
    /// `batch_size = 10`: most messages asked for in one pull.
    pub batch_size: Option<usize>,
    /// `timeout = "5s"`: how long one pull waits for messages.
    pub timeout: Option<Dur>,
}

/// `consumer = { … }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    /// `ack_wait = "10s"`: redeliver when not settled (nor reported in
    /// progress) within this.
    pub ack_wait: Option<Dur>,
    /// `max_deliver = 5`; `-1` for no limit.
    pub max_deliver: Option<i64>,
    /// `backoff = ["1s", "10s", "1m"]`: delay before redelivering a failed
    /// message, by delivery count (the last step repeats). Applied by the
    /// runtime to its naks; a redelivery after `ack_wait` is not delayed.
    pub backoff: Option<Vec<Dur>>,
    /// `max_ack_pending = 1000`
    pub max_ack_pending: Option<i64>,
}

/// `limits = { … }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `memory = "64MiB"`: the guest's linear memory cap.
    pub memory: Option<ByteSize>,
    /// `timeout = "5s"`: wall-clock limit of one `handle` call.
    pub timeout: Option<Dur>,
    /// `http_timeout = "10s"`: the longest an outbound HTTP request may wait
    /// to connect, for its response, and between body chunks.
    pub http_timeout: Option<Dur>,
    /// `http_response = "4MiB"`: the largest response body a request may receive.
    pub http_response: Option<ByteSize>,
    /// `held_outputs = "16MiB"`: with `outputs.mode = "atomic"`, the most
    /// payload and header bytes one message's outputs may hold until the commit.
    pub held_outputs: Option<ByteSize>,
}
