//! Step 1 of the data flow: service.toml → [`Config`].
//!
//! Reading happens in three stages: `${VAR}` interpolation over the text
//! (`interpolate`), TOML → raw serde structs that reject unknown keys and
//! bad values with line and column (`raw`, `values`), then validation that
//! resolves paths, defaults and environment overrides and checks fields
//! against each other (this module). Every problem found by validation is
//! reported at once.

mod capped;
mod component;
pub mod endpoint;
mod error;
mod fragments;
mod include;
mod interpolate;
mod kv_trigger;
pub mod origin;
pub mod raw;
mod schedule;
pub mod secrets;
mod streams;
mod subscriber;
mod tenant;
mod validate;
pub mod values;

pub use capped::Capped;
pub use component::ComponentSource;
pub use endpoint::EndpointConfig;
use error::{interpolation_error, syntax_error};
pub use error::{ConfigError, Problem};
pub use fragments::{
    local_components, named_objects, with_objects, Fragment, FragmentKey, KvKeys, LocalComponent,
    NamedObject,
};
use interpolate::interpolate;
pub use kv_trigger::{kv_stream, kv_subject, Watch, WatchStart};
pub use origin::Origin;
use raw::RawFile;
pub use raw::{KvAccess, OutputIds, OutputsMode, Retention, Storage};
pub use schedule::{
    is_token, schedule_subject, ScheduleConfig, ScheduleWhen, DELAYED_PREFIX, SCHEDULES_PREFIX,
};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use streams::{stream_named, BucketConfig, PublisherConfig, StreamConfig};
pub use subscriber::{Instances, SubscriberConfig};
pub use tenant::{Quotas, TenantConfig};
pub use values::{ByteSize, Dur, Name, PerSecond, Subject};

/// Defaults, in one place so the README can quote them.
pub mod defaults {
    use std::time::Duration;
    /// `graceful_timeout`
    pub const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);
    /// `nats.servers`
    pub const SERVER: &str = "nats://localhost:4222";
    /// `nats.reconnect_time_wait`
    pub const RECONNECT_TIME_WAIT: Duration = Duration::from_secs(2);
    /// `nats.max_reconnect_attempts`
    pub const MAX_RECONNECT_ATTEMPTS: i64 = 10_000;
    /// `nats.ping_interval`
    pub const PING_INTERVAL: Duration = Duration::from_secs(5);
    /// `nats.connect_timeout`
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// `pull.timeout`
    pub const PULL_TIMEOUT: Duration = Duration::from_secs(5);
    /// `consumer.ack_wait`: how long the server waits for an ack (or an
    /// in-progress signal) before it delivers a message again. Short, so a
    /// crashed replica's messages go to another within seconds: the runtime
    /// signals in-progress every fifth of it while a handler runs, so a
    /// slow handler keeps its message however long it takes.
    pub const ACK_WAIT: Duration = Duration::from_secs(10);
    /// In-progress signals sent per `ack_wait` while a message is the
    /// runtime's: four may be lost (a consumer leader election, a loaded
    /// machine) before the server gives up on it.
    pub const PROGRESS_PER_ACK_WAIT: u32 = 5;
    /// `consumer.max_deliver`
    pub const MAX_DELIVER: i64 = 5;
    /// `consumer.max_ack_pending`
    pub const MAX_ACK_PENDING: i64 = 1000;
    /// `limits.memory`
    pub const MEMORY: u64 = 64 << 20;
    /// `limits.timeout`
    pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(30);
    /// `publishers[].timeout`
    pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
    /// `quotas.concurrency` of a declared tenant
    pub const TENANT_CONCURRENCY: usize = 32;
    /// `quotas.publishes_per_message`
    pub const PUBLISHES_PER_MESSAGE: u32 = 1000;
    /// `quotas.cpu` of a declared tenant, in cores
    pub const TENANT_CPU: f64 = 1.0;
    /// `quotas.memory` of a declared tenant
    pub const TENANT_MEMORY: u64 = 1 << 30;
    /// `quotas.publish_rate` of a declared tenant, per second
    pub const TENANT_PUBLISH_RATE: u64 = 10_000;
    /// `quotas.publish_bytes` of a declared tenant, per second
    pub const TENANT_PUBLISH_BYTES: u64 = 64 << 20;
    /// `quotas.component_size` of a declared tenant
    pub const TENANT_COMPONENT_SIZE: u64 = 64 << 20;
    /// `quotas.handlers` of a declared tenant
    pub const TENANT_HANDLERS: usize = 100;
    /// `quotas.compile_time` of a declared tenant: a Python component
    /// takes about 20 s on one core.
    pub const TENANT_COMPILE_TIME: Duration = Duration::from_secs(120);
    /// The largest fragment a tenant's `deploy` key may hold, in bytes.
    pub const TENANT_FRAGMENT_SIZE: usize = 64 << 10;
    /// `limits.http_timeout`
    pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
    /// `limits.http_response`
    pub const HTTP_RESPONSE: u64 = 4 << 20;
    /// `quotas.http_rate` of a declared tenant, per second
    pub const TENANT_HTTP_RATE: u64 = 1000;
    /// `quotas.http_concurrency` of a declared tenant
    pub const TENANT_HTTP_CONCURRENCY: usize = 64;
    /// `buckets[].history`
    pub const BUCKET_HISTORY: i64 = 1;
    /// `outputs.ids`
    pub const OUTPUT_IDS: super::raw::OutputIds = super::raw::OutputIds::Content;
    /// `outputs.mode`
    pub const OUTPUTS_MODE: super::raw::OutputsMode = super::raw::OutputsMode::Immediate;
    /// `limits.held_outputs`
    pub const HELD_OUTPUTS: u64 = 16 * 1024 * 1024;
    /// `instances`
    pub const INSTANCES: super::raw::InstanceMode = super::raw::InstanceMode::Reuse;
    /// `prepared_instances`: enough to hide an instantiation from a
    /// message arriving while another is handled.
    pub const PREPARED_INSTANCES: usize = 2;
    /// `stats_interval` when NATS_DEBUG is on
    pub const DEBUG_STATS_INTERVAL: Duration = Duration::from_secs(10);
}

/// A validated service.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[service]`
    pub service: ServiceConfig,
    /// `[nats]`
    pub nats: NatsConfig,
    /// `[[streams]]`
    pub streams: Vec<StreamConfig>,
    /// `[[buckets]]`
    pub buckets: Vec<BucketConfig>,
    /// `[[publishers]]`
    pub publishers: Vec<PublisherConfig>,
    /// `[[schedules]]`
    pub schedules: Vec<ScheduleConfig>,
    /// `[[subscribers]]`, the included files' too.
    pub subscribers: Vec<SubscriberConfig>,
    /// `[[endpoints]]`, the included files' too.
    pub endpoints: Vec<EndpointConfig>,
    /// `[[tenants]]`, the included files' too.
    pub tenants: Vec<TenantConfig>,
}

/// `[service]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Service name.
    pub name: String,
    /// Shutdown grace period (GRACEFUL_SHUTDOWN_TIMEOUT overrides).
    pub graceful_timeout: Duration,
    /// Periodic statistics log; `None` logs them only at shutdown.
    pub stats_interval: Option<Duration>,
    /// NATS_DEBUG: debug logging and periodic statistics.
    pub debug: bool,
    /// Where /metrics, /healthz and /readyz are served (`None`: off).
    pub admin: Option<std::net::SocketAddr>,
    /// The OTLP/HTTP collector traces are exported to (`None`: the
    /// `OTEL_EXPORTER_OTLP_*` variables decide).
    pub traces: Option<String>,
    /// `include = [{ kv, keys }]`: the key-value keys whose fragments the
    /// service runs, read and watched with its own identity.
    pub include_kv: Vec<KvKeys>,
}

/// How to authenticate to NATS.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// A credentials file.
    Credentials(PathBuf),
    /// A token.
    Token(String),
    /// User and password.
    UserPassword(String, String),
    /// An NKey seed.
    NKey(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Auth::None => f.write_str("none"),
            Auth::Credentials(p) => write!(f, "credentials file {}", p.display()),
            Auth::Token(_) => f.write_str("token"),
            Auth::UserPassword(u, _) => write!(f, "user {u}"),
            Auth::NKey(_) => f.write_str("nkey"),
        }
    }
}

/// TLS settings, paths resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsConfig {
    /// Extra root certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate and key.
    pub client: Option<(PathBuf, PathBuf)>,
    /// Refuse a plain connection.
    pub required: bool,
}

/// `[nats]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    /// Server URLs (NATS_SERVERS overrides).
    pub servers: Vec<String>,
    /// Reconnect after a lost connection.
    pub allow_reconnect: bool,
    /// Pause between reconnect attempts.
    pub reconnect_time_wait: Duration,
    /// `None`: forever.
    pub max_reconnect_attempts: Option<usize>,
    /// Client ping interval.
    pub ping_interval: Duration,
    /// Timeout of each connection attempt.
    pub connect_timeout: Duration,
    /// Authentication.
    pub auth: Auth,
    /// TLS, when configured.
    pub tls: Option<TlsConfig>,
}

impl NatsConfig {
    /// Connecting to `servers` as `auth`, with every other setting at its
    /// default: a command's connection, not a service's.
    pub fn to(servers: Vec<String>, auth: Auth) -> NatsConfig {
        NatsConfig {
            servers,
            allow_reconnect: true,
            reconnect_time_wait: defaults::RECONNECT_TIME_WAIT,
            max_reconnect_attempts: Some(3),
            ping_interval: defaults::PING_INTERVAL,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            auth,
            tls: None,
        }
    }
}

/// The SHA-256 of `bytes` in lowercase hex: how component files are
/// pinned (`component.sha256`), cached and compared by reloads.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Config {
    /// True when some subscriber, endpoint or schedule belongs to tenant
    /// `tenant`: it needs its connection.
    pub fn needs_connection(&self, tenant: &str) -> bool {
        let mine = |t: Option<&str>| t == Some(tenant);
        self.subscribers.iter().any(|s| mine(s.tenant.as_deref()))
            || self.endpoints.iter().any(|e| mine(e.tenant()))
            || self.schedules.iter().any(|s| mine(s.tenant.as_deref()))
    }

    /// Reads and validates `path`, with overrides from the process environment.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, |name| std::env::var(name).ok())
    }

    /// Reads and validates `path`, looking environment variables up with `env`.
    pub fn load_with_env(
        path: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::load_with(path, env, &[])
    }

    /// Reads and validates `path` with `fragments` from key-value keys,
    /// looking environment variables up with `env`.
    pub fn load_with(
        path: impl AsRef<Path>,
        env: impl Fn(&str) -> Option<String>,
        fragments: &[Fragment],
    ) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_with(path, &text, env, fragments)
    }

    /// Validates `text` as if read from `path` (relative paths resolve against its folder).
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::parse_with(path, text, env, &[])
    }

    /// Validates `text` as if read from `path`, with `fragments` from
    /// key-value keys.
    pub fn parse_with(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        fragments: &[Fragment],
    ) -> Result<Config, ConfigError> {
        let text = interpolate(text, &env).map_err(|e| interpolation_error(path, text, e))?;
        let de = toml::Deserializer::parse(&text).map_err(|e| syntax_error(path, &text, "", &e))?;
        let mut raw: RawFile = serde_path_to_error::deserialize(de)
            .map_err(|e| syntax_error(path, &text, &e.path().to_string(), e.inner()))?;
        include::read_includes(path, &mut raw, &env)?;
        fragments::add_fragments(&mut raw, fragments, &env)?;
        validate::Validator::new(path, &env).validate(raw)
    }

    /// Every source of fragments: the platform's `include = [{ kv, keys }]`
    /// and each tenant's `deploy`.
    pub fn fragment_sources(&self) -> Vec<(Option<&TenantConfig>, &KvKeys)> {
        let platform = self.service.include_kv.iter().map(|k| (None, k));
        let tenants = self
            .tenants
            .iter()
            .filter_map(|t| t.deploy.as_ref().map(|k| (Some(t), k)));
        platform.chain(tenants).collect()
    }

    /// Checks `text` as a part of a service file (read from `path`), as the
    /// documentation shows one: its syntax, key names, types and value
    /// formats — the first stage of [`parse`](Config::parse) — without the
    /// checks that need the whole file. A part without `[service]` gets one.
    pub fn check_part(path: &Path, text: &str) -> Result<(), ConfigError> {
        let text = if text.lines().any(|l| l.trim() == "[service]") {
            text.to_string()
        } else {
            format!("{text}\n[service]\nname = \"part\"\n")
        };
        let de = toml::Deserializer::parse(&text).map_err(|e| syntax_error(path, &text, "", &e))?;
        serde_path_to_error::deserialize::<_, RawFile>(de)
            .map(|_| ())
            .map_err(|e| syntax_error(path, &text, &e.path().to_string(), e.inner()))
    }

    /// The subscriber named `name`.
    pub fn subscriber(&self, name: &str) -> Option<&SubscriberConfig> {
        self.subscribers.iter().find(|s| s.name == name)
    }

    /// What the subscriber or endpoint `name` runs its guest with.
    pub fn handler(&self, name: &str) -> Option<&SubscriberConfig> {
        self.subscriber(name)
            .or_else(|| self.endpoint(name).map(|e| &e.handler))
    }

    /// The endpoint named `name`.
    pub fn endpoint(&self, name: &str) -> Option<&EndpointConfig> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// The tenant named `name`.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The `[[streams]]` entry `name` as subscribers of `tenant` (`None`:
    /// the service's own) see it: the tenant's own first, then the
    /// platform's.
    pub fn stream_for(&self, name: &str, tenant: &Option<String>) -> Option<&StreamConfig> {
        stream_named(&self.streams, name, tenant)
    }

    /// The `[[buckets]]` entry `name` as subscribers of `tenant` see it,
    /// as [`stream_for`](Self::stream_for) does.
    pub fn bucket_for(&self, name: &str, tenant: &Option<String>) -> Option<&BucketConfig> {
        let named = |owner: &Option<String>| {
            self.buckets
                .iter()
                .find(|b| b.name == name && &b.tenant == owner)
        };
        named(tenant).or_else(|| named(&None))
    }
}

#[cfg(test)]
mod tests;
