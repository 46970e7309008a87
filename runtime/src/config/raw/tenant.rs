//! `[[tenants]]` as written: a tenant's connection, quotas and grants.

use super::{ByteSize, Dur, KvAccess, PerSecond, RawKvKeys, RawOrigin, RawTls, Subject};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
