//! `[[tenants]]` as validated: a tenant's connection, quotas and grants.

use super::{KvAccess, KvKeys, NatsConfig, Origin, Subject};
use std::collections::BTreeMap;
use std::time::Duration;

/// `[[tenants]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    /// Its name.
    pub name: String,
    /// Its own connection: its identity, the service's other `[nats]` settings.
    pub nats: NatsConfig,
    /// Its quotas.
    pub quotas: Quotas,
    /// `grants.publish`: the most its subscribers may publish to (`None`: no bound).
    pub grant_publish: Option<Vec<Subject>>,
    /// `grants.kv`: the buckets its subscribers may be granted (`None`: no bound).
    pub grant_kv: Option<BTreeMap<String, KvAccess>>,
    /// `grants.http`: the origins its subscribers may be granted (`None`: no bound).
    pub grant_http: Option<Vec<Origin>>,
    /// `deploy`: the keys of its own bucket that hold its fragments, read
    /// with its identity (`None`: it deploys only through the platform).
    pub deploy: Option<KvKeys>,
}

/// Limits across the subscribers that share them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quotas {
    /// Handlers running at once (`None`: only each subscriber's `concurrency`).
    pub concurrency: Option<usize>,
    /// Publishes and requests one message's handler may make.
    pub publishes_per_message: u32,
    /// Cores' worth of guest execution (`None`: no CPU quota).
    pub cpu: Option<f64>,
    /// Bytes of guest memory its live instances may hold (`None`: no quota).
    pub memory: Option<u64>,
    /// Publishes and requests per second (`None`: no quota).
    pub publish_rate: Option<u64>,
    /// Payload bytes published per second (`None`: no quota).
    pub publish_bytes: Option<u64>,
    /// Outbound HTTP requests per second (`None`: no quota).
    pub http_rate: Option<u64>,
    /// Outbound HTTP requests in flight at once (`None`: no quota).
    pub http_concurrency: Option<usize>,
    /// The largest component, in bytes (`None`: no quota).
    pub component_size: Option<u64>,
    /// The most subscribers (`None`: no quota).
    pub handlers: Option<usize>,
    /// The longest a component may take to compile (`None`: no quota).
    pub compile_time: Option<Duration>,
}
