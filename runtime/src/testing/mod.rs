//! A handler run on one message without a NATS server: the runtime's own
//! call path — the subscriber's limits, grants, config and instance mode,
//! `handle`, the verdict, the settlement — on a [`LocalWire`] (`local`) that records
//! what the handler publishes, requests, writes and acknowledges. This is
//! what `natsapp-wasm invoke` runs, and what handler authors call from
//! `cargo test`:
//!
//! ```no_run
//! use natsapp_wasm::testing::{LocalHandler, Message, Verdict};
//! let handler = LocalHandler::component("target/wasm32-wasip2/release/orders.wasm")
//!     .config("currency", "EUR")
//!     .build()
//!     .unwrap();
//! let report = handler.invoke(Message::new(r#"{"id": 7}"#));
//! assert_eq!(report.verdict, Verdict::Acked);
//! assert_eq!(report.published[0].subject, "order.accepted");
//! ```

pub mod local;
mod report;

pub use local::{Event, LocalWire};
pub use report::{KvWrite, LogLine, Published, Report, Request, Verdict};

use crate::config::{Config, ConfigError, EndpointConfig, Subject, SubscriberConfig};
use crate::message::{answer, DeliveryInfo, InFlight};
use crate::nats::publish::PublishRoutes;
use crate::nats::setup::OpenedBucket;
use crate::nats::wire::{BucketStore, Wire};
use crate::wasm::cache::ComponentCache;
use crate::wasm::component::ComponentError;
use crate::wasm::guest_log::Transcript;
use crate::wasm::host::SubscriberHost;
use crate::wasm::invoke::Handler;
use crate::wasm::EngineError;
use crate::wasm::{PoolSize, WasmRuntime};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Why a handler cannot be built to run locally.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The service file is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The component cannot serve as a handler.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// The component file given alone cannot be read.
    #[error("cannot read component {}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The WebAssembly engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An option does not fit the handler (named in the message).
    #[error("{0}")]
    Invalid(String),
}

/// One message to run a handler on.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Its subject; by default the subscriber's (which must then have no wildcard).
    pub subject: Option<String>,
    /// Its payload.
    pub payload: Bytes,
    /// Its headers.
    pub headers: Vec<(String, String)>,
    /// Which delivery this is (1 = the first).
    pub delivered: u32,
}

impl Message {
    /// A first delivery of `payload` on the subscriber's subject.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            subject: None,
            payload: payload.into(),
            headers: Vec::new(),
            delivered: 1,
        }
    }

    /// On `subject`.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// With the header `name: value` (added to any before).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// As its `delivered`th delivery.
    pub fn delivered(mut self, delivered: u32) -> Self {
        self.delivered = delivered;
        self
    }
}

/// Where the handler and its settings come from.
#[derive(Debug, Clone)]
enum Source {
    /// A component alone: everything not given is a default.
    Component(PathBuf),
    /// A subscriber of a service file (the only one when `None`).
    Service(PathBuf, Option<String>),
}

/// Settings for a [`LocalHandler`]; [`build`](Builder::build) compiles it.
#[derive(Debug, Clone)]
pub struct Builder {
    source: Source,
    config: Vec<(String, String)>,
    publish: Vec<String>,
    http: Vec<String>,
    buckets: Vec<String>,
    seeds: Vec<(String, String, Bytes)>,
    replies: Vec<(String, Bytes)>,
    timeout: Option<Duration>,
    memory: Option<u64>,
    cache: Option<ComponentCache>,
}

/// The stream a component run alone stores its outputs in.
pub const OUTPUT_STREAM: &str = "OUTPUTS";
/// The subject a component run alone listens on.
pub const DEFAULT_SUBJECT: &str = "invoke";

impl Builder {
    fn new(source: Source) -> Self {
        Builder {
            source,
            config: Vec::new(),
            publish: Vec::new(),
            http: Vec::new(),
            buckets: Vec::new(),
            seeds: Vec::new(),
            replies: Vec::new(),
            timeout: None,
            memory: None,
            cache: None,
        }
    }

    /// Sets the wasi:config value `key` (over the service file's).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// A component alone: lets it publish and send requests to `subject`
    /// (a pattern). Without any, it may use every subject except the
    /// system's. Its publishes are stored in a stream ([`OUTPUT_STREAM`]).
    pub fn publish(mut self, subject: impl Into<String>) -> Self {
        self.publish.push(subject.into());
        self
    }

    /// A component alone: grants it outbound HTTP to `origin` (requests go
    /// out for real).
    pub fn http(mut self, origin: impl Into<String>) -> Self {
        self.http.push(origin.into());
        self
    }

    /// A component alone: grants it the in-memory bucket `name`, read-write.
    pub fn bucket(mut self, name: impl Into<String>) -> Self {
        self.buckets.push(name.into());
        self
    }

    /// Stores `value` under `key` in bucket `bucket` before the first run
    /// (a component alone is granted the bucket).
    pub fn kv(
        mut self,
        bucket: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<Bytes>,
    ) -> Self {
        self.seeds.push((bucket.into(), key.into(), value.into()));
        self
    }

    /// Answers requests to `subject` (a pattern) with `payload`; other
    /// requests find no responders.
    pub fn reply(mut self, subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        self.replies.push((subject.into(), payload.into()));
        self
    }

    /// The time limit of one `handle` call (`limits.timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The linear-memory cap (`limits.memory`), in bytes.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Compiled components are cached in `cache` (by default where
    /// `natsapp-wasm run` caches them).
    pub fn cache(mut self, cache: ComponentCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The service configuration the handler runs with.
    fn service(&self) -> Result<(Config, SubscriberConfig, Option<EndpointConfig>), BuildError> {
        let (config, name) = match &self.source {
            Source::Service(file, name) => {
                for (flag, given) in [
                    ("publish", !self.publish.is_empty()),
                    ("http", !self.http.is_empty()),
                    ("bucket", !self.buckets.is_empty()),
                ] {
                    if given {
                        return Err(BuildError::Invalid(format!(
                            "--{flag} is for a component run alone: {} grants what the subscriber may use",
                            file.display()
                        )));
                    }
                }
                (Config::load(file)?, name.clone())
            }
            Source::Component(component) => {
                let (file, text) = self.component_service(component)?;
                (Config::parse(&file, &text, |_| None)?, None)
            }
        };
        let handlers: Vec<(&SubscriberConfig, Option<&EndpointConfig>)> =
            (config.subscribers.iter().map(|s| (s, None)))
                .chain(config.endpoints.iter().map(|e| (&e.handler, Some(e))))
                .collect();
        let (mut sub, endpoint) = match name {
            Some(name) => handlers
                .iter()
                .find(|(s, _)| s.name == name)
                .map(|(s, e)| ((*s).clone(), e.cloned()))
                .ok_or_else(|| {
                    BuildError::Invalid(format!(
                        "no {} {name:?} in the service file (it has {})",
                        kinds(&config, "subscriber", "subscriber or endpoint"),
                        names(&config)
                    ))
                })?,
            None => match handlers.as_slice() {
                [(only, endpoint)] => ((*only).clone(), endpoint.cloned()),
                _ => {
                    return Err(BuildError::Invalid(format!(
                        "the service file has several {} ({}): name one",
                        kinds(&config, "subscribers", "subscribers and endpoints"),
                        names(&config)
                    )))
                }
            },
        };
        // A secret keeps being one (masked) when its value is given here.
        for (key, value) in &self.config {
            sub.config.insert(key.clone(), value.clone());
        }
        if let Some(t) = self.timeout {
            sub.timeout = t;
        }
        if let Some(m) = self.memory {
            sub.memory = m;
        }
        for (bucket, _, _) in &self.seeds {
            if !sub.kv.contains_key(bucket) {
                return Err(BuildError::Invalid(format!(
                    "subscriber {:?} is not granted bucket {bucket:?} (kv = {{ … }}), so it cannot be filled",
                    sub.name
                )));
            }
        }
        Ok((config, sub, endpoint))
    }

    /// A service file for a component run alone, next to the component
    /// (its path resolves relative paths).
    fn component_service(&self, component: &Path) -> Result<(PathBuf, String), BuildError> {
        let unreadable = |source| BuildError::Unreadable {
            path: component.to_path_buf(),
            source,
        };
        std::fs::metadata(component).map_err(unreadable)?;
        let component = std::path::absolute(component).map_err(unreadable)?;
        let name = component
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "handler".into());
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let publish = if self.publish.is_empty() {
            vec![">".to_string()]
        } else {
            self.publish.clone()
        };
        let quoted = |s: &str| toml::Value::from(s).to_string();
        let list = |items: &[String]| {
            let items: Vec<String> = items.iter().map(|i| quoted(i)).collect();
            format!("[{}]", items.join(", "))
        };
        let mut buckets: Vec<&String> = self.buckets.iter().collect();
        buckets.extend(self.seeds.iter().map(|(b, _, _)| b));
        let kv: Vec<String> = buckets
            .into_iter()
            .map(|b| format!("{} = \"rw\"", quoted(b)))
            .collect();
        let text = format!(
            r#"[service]
name = "invoke"

[[streams]]
name = "{OUTPUT_STREAM}"
subjects = {publish}

[[streams]]
name = "INPUT"
subjects = [">"]

[[subscribers]]
name = {name}
component = {component}
subject = ">"
stream = "INPUT"
durable = "invoke"
publish = {publish}
kv = {{ {kv} }}
http = {http}
"#,
            publish = list(&publish),
            name = quoted(&name),
            component = quoted(&component.to_string_lossy()),
            kv = kv.join(", "),
            http = list(&self.http),
        );
        let dir = component.parent().unwrap_or(Path::new("/"));
        Ok((dir.join("invoke.toml"), text))
    }

    /// Compiles the component and sets up its local wire.
    pub fn build(self) -> Result<LocalHandler, BuildError> {
        let (config, sub, endpoint) = self.service()?;
        let replies = self
            .replies
            .iter()
            .map(|(subject, payload)| {
                let pattern = Subject::try_from(subject.clone())
                    .map_err(|e| BuildError::Invalid(format!("--reply {subject:?}: {e}")))?;
                Ok((pattern, payload.clone()))
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let bucket_names: Vec<String> = sub.kv.keys().cloned().collect();
        let wire = Arc::new(LocalWire::new(&config, replies, &bucket_names));
        for (bucket, key, value) in &self.seeds {
            if let Some(b) = wire.bucket(bucket) {
                b.seed(key, value.clone());
            }
        }
        let buckets = sub
            .kv
            .iter()
            .map(|(name, access)| OpenedBucket {
                name: name.clone(),
                store: BucketStore::Local(wire.bucket(name).expect("a bucket per grant")),
                access: *access,
                max_value_size: config
                    .bucket_for(name, &sub.tenant)
                    .and_then(|b| b.max_value_size),
            })
            .collect();
        let cache = self.cache.clone().unwrap_or_else(ComponentCache::from_env);
        // Room for a memory limit raised over the file's (`memory`).
        let mut pool = PoolSize::for_config(&config);
        pool.max_memory = pool.max_memory.max(sub.memory);
        let wasm = WasmRuntime::new(cache, pool)?;
        let Some(path) = sub.component.file() else {
            return Err(BuildError::Invalid(format!(
                "subscriber {:?} runs {}: running it locally needs its component file (give the file instead)",
                sub.name, sub.component
            )));
        };
        let loaded = wasm.load(path, &sub.name)?;
        let mut host = SubscriberHost::new(
            &sub,
            Wire::Local(wire.clone()),
            Arc::new(PublishRoutes::new(&config, &sub.tenant)),
            buckets,
            None,
        );
        let transcript = Arc::new(Transcript::default());
        host.transcript = Some(transcript.clone());
        let host = Arc::new(host);
        let handler = Handler::of(&sub, loaded.pre, host.clone());
        Ok(LocalHandler {
            sub,
            endpoint,
            handler,
            host,
            wire,
            transcript,
            runtime: std::sync::OnceLock::new(),
            _wasm: wasm,
            sequence: Default::default(),
        })
    }
}

/// What `config`'s handlers are called: `subscribers` when it has no
/// endpoint, `both` when it has.
fn kinds(config: &Config, subscribers: &'static str, both: &'static str) -> &'static str {
    if config.endpoints.is_empty() {
        subscribers
    } else {
        both
    }
}

fn names(config: &Config) -> String {
    (config.subscribers.iter().map(|s| &s.name))
        .chain(config.endpoints.iter().map(|e| &e.name))
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Drop for LocalHandler {
    fn drop(&mut self) {
        // Dropped from async code too (a test's handler): never block there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A compiled handler that runs messages in this process.
pub struct LocalHandler {
    sub: SubscriberConfig,
    /// The endpoint it runs as, when it is one: messages are requests.
    endpoint: Option<EndpointConfig>,
    handler: Handler,
    host: Arc<SubscriberHost>,
    wire: Arc<LocalWire>,
    transcript: Arc<Transcript>,
    /// The async runtime of the blocking [`invoke`](Self::invoke), made
    /// on its first call (async callers bring their own).
    runtime: std::sync::OnceLock<tokio::runtime::Runtime>,
    /// Keeps the engine's epoch ticker running.
    _wasm: WasmRuntime,
    sequence: std::sync::atomic::AtomicU64,
}

impl LocalHandler {
    /// The component at `path`, run alone.
    pub fn component(path: impl AsRef<Path>) -> Builder {
        Builder::new(Source::Component(path.as_ref().to_path_buf()))
    }

    /// Subscriber `subscriber` of the service file `file` (its only one
    /// when `None`), with the file's limits, grants and config.
    pub fn service(file: impl AsRef<Path>, subscriber: Option<&str>) -> Builder {
        Builder::new(Source::Service(
            file.as_ref().to_path_buf(),
            subscriber.map(str::to_string),
        ))
    }

    /// The subscriber it runs as.
    pub fn subscriber(&self) -> &SubscriberConfig {
        &self.sub
    }

    /// Runs `message` and reports what came of it. Key-value buckets keep
    /// what earlier runs wrote.
    ///
    /// # Panics
    ///
    /// When called from async code (use [`invoke_async`](Self::invoke_async)
    /// there), or when no async runtime can be started.
    pub fn invoke(&self, message: Message) -> Report {
        let runtime = self.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("an async runtime for LocalHandler::invoke")
        });
        runtime.block_on(self.invoke_async(message))
    }

    /// [`invoke`](Self::invoke), from async code.
    pub async fn invoke_async(&self, message: Message) -> Report {
        if let Some(endpoint) = &self.endpoint {
            return self.request(endpoint, message).await;
        }
        let msg = match self.delivery(message) {
            Ok(msg) => Arc::new(msg),
            Err(e) => return Report::refused(&self.sub.name, e),
        };
        let started = std::time::Instant::now();
        let outcome = self.handler.invoke(msg.clone()).await;
        let elapsed = started.elapsed();
        let by_guest = msg.by_guest();
        let settler = &self.host.settler;
        // Atomic outputs are committed here, so they count as handled.
        let (decision, _) = settler.conclude(&msg, &outcome).await;
        let handled = self.wire.take_events();
        settler.apply(&msg, decision.clone()).await;
        Report::new(
            &self.sub.name,
            &outcome,
            &by_guest,
            &decision,
            handled,
            self.wire.take_events(),
            self.transcript.take(),
            elapsed,
        )
    }

    /// Runs `message` as a request to `endpoint`: the report shows its
    /// answer, the guest's or the one the runtime sends for the outcome.
    async fn request(&self, endpoint: &EndpointConfig, message: Message) -> Report {
        let msg = match self.inbound(message) {
            Ok((message, sequence)) => {
                let name: Arc<str> = endpoint.name.as_str().into();
                Arc::new(InFlight::request(message, &name, sequence))
            }
            Err(e) => return Report::refused(&endpoint.name, e),
        };
        let started = std::time::Instant::now();
        let outcome = self.handler.invoke(msg.clone()).await;
        let elapsed = started.elapsed();
        let request = msg.request.as_ref().expect("a request");
        let error = answer::after(&outcome, request.answered());
        Report::answered(
            &endpoint.name,
            &outcome,
            request.reply.as_ref().map_or("", |r| r.as_str()),
            error.as_ref(),
            self.wire.take_events(),
            self.transcript.take(),
            elapsed,
        )
    }

    /// The contents of bucket `name` now.
    pub fn bucket(&self, name: &str) -> Vec<(String, Bytes)> {
        self.wire
            .bucket(name)
            .map(|b| b.entries().into_iter().map(|(k, e)| (k, e.value)).collect())
            .unwrap_or_default()
    }

    /// `message` as a delivery of the subscriber's consumer.
    fn delivery(&self, message: Message) -> Result<InFlight, String> {
        let delivered = message.delivered.max(1);
        let (message, sequence) = self.inbound(message)?;
        let sub = &self.sub;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let ack_subject = format!(
            "$JS.ACK.{}.{}.{delivered}.{sequence}.{sequence}.{now}.0",
            sub.stream, sub.durable
        );
        Ok(InFlight::delivered(
            async_nats::Message {
                reply: Some(ack_subject.into()),
                ..message
            },
            DeliveryInfo {
                stream: sub.stream.to_string(),
                consumer: sub.durable.to_string(),
                stream_sequence: sequence,
                consumer_sequence: sequence,
                delivered,
                pending: 0,
                published_unix_ns: now,
            },
        ))
    }

    /// `message` as it arrives on a subject the subscriber or endpoint
    /// receives (a request's reply subject an inbox of this run), and its
    /// number among this handler's messages.
    fn inbound(&self, message: Message) -> Result<(async_nats::Message, u64), String> {
        let sub = &self.sub;
        let subject = match message.subject {
            Some(s) if sub.subject.matches(&s) => s,
            Some(s) => {
                return Err(format!(
                    "subject {s:?} is not one subscriber {:?} listens on ({})",
                    sub.name,
                    sub.subject.as_str()
                ))
            }
            None if !sub.subject.has_wildcards() => sub.subject.as_str().to_string(),
            None if sub.subject.as_str() == ">" => DEFAULT_SUBJECT.to_string(),
            None => {
                return Err(format!(
                    "subscriber {:?} listens on {}: give the message's subject",
                    sub.name,
                    sub.subject.as_str()
                ))
            }
        };
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in &message.headers {
            let n = async_nats::HeaderName::from_str(name)
                .map_err(|e| format!("header name {name:?}: {e}"))?;
            let v = async_nats::HeaderValue::from_str(value)
                .map_err(|e| format!("header {name:?} value: {e}"))?;
            headers.append(n, v);
        }
        let sequence = self
            .sequence
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let length = message.payload.len();
        let reply = self
            .endpoint
            .as_ref()
            .map(|_| format!("_INBOX.invoke.{sequence}").into());
        let message = async_nats::Message {
            subject: subject.into(),
            reply,
            payload: message.payload,
            headers: (!headers.is_empty()).then_some(headers),
            status: None,
            description: None,
            length,
        };
        Ok((message, sequence))
    }
}
