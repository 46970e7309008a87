//! `[[subscribers]]` and `[[endpoints]]` as written, with the tables
//! their handlers share (`limits`, `consumer`, `pull`, `outputs`,
//! `component`).

use super::{ByteSize, Dur, KvAccess, Name, RawConfigValue, RawOrigin, Subject};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    pub fragment: Option<crate::config::FragmentKey>,
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
    /// `prepared_instances = 2`: with `instances = "per-message"`, the most
    /// fresh instances made ahead of need (0: none).
    pub prepared_instances: Option<usize>,
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
    pub fragment: Option<crate::config::FragmentKey>,
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
    /// `prepared_instances = 2`
    pub prepared_instances: Option<usize>,
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
    pub start: Option<crate::config::WatchStart>,
}

/// `outputs = { … }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutputs {
    /// `ids = "content"` (default) or `"sequence"`: the `Nats-Msg-Id` scheme
    /// that keeps a redelivered message from storing its outputs twice.
    pub ids: Option<OutputIds>,
    /// `mode = "immediate"` (default), `"pipelined"` or `"atomic"`: when
    /// they are stored.
    pub mode: Option<OutputsMode>,
}

/// When a handler's outputs are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputsMode {
    /// Each publish is stored as it is made (the PubAck is awaited in the call).
    Immediate,
    /// Each publish to a stream is sent as it is made; its PubAck is awaited
    /// after `handle`, and the input is acknowledged once all are stored.
    Pipelined,
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
