//! Statistics: a serialisable snapshot of the whole service for logs,
//! probes and the library API (the equivalent of the Python wrapper's
//! `get_subscription_stats`), read from the running service's registry —
//! each subscriber's counters (`counters`), each connection's traffic and
//! each tenant's use of its quotas.

pub use crate::counters::{LatencySnapshot, SubscriberSnapshot};
use crate::deploy::status::Book;
use crate::roster::registry::Registry;
use crate::wasm::host::GuestQuotas;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The whole service's statistics.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// `connected`, `disconnected` or `pending`.
    pub connection_status: String,
    /// Number of subscribers.
    pub total_subscribers: usize,
    /// Per subscriber.
    pub subscribers: Vec<SubscriberSnapshot>,
    /// Per endpoint that serves.
    pub endpoints: Vec<EndpointSnapshot>,
    /// Per tenant with subscribers: the use of its quotas.
    pub tenants: Vec<TenantSnapshot>,
    /// Per NATS connection: the service's own, then each tenant's.
    pub connections: Vec<ConnectionSnapshot>,
    /// Components loaded from the compiled-component cache (at start and by reloads).
    pub components_from_cache: u64,
    /// Components compiled and stored in the cache.
    pub components_compiled: u64,
    /// Components compiled with the cache off.
    pub components_compiled_uncached: u64,
    /// Reloads of the configuration applied.
    pub reloads_applied: u64,
    /// Reloads refused (the configuration before them kept running).
    pub reloads_refused: u64,
    /// Each key of fragments deployed over NATS, as this replica runs it.
    pub deploys: Vec<DeploySnapshot>,
}

/// An endpoint's requests, as `$SRV.STATS` counts them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EndpointSnapshot {
    /// Its name.
    pub name: String,
    /// Its tenant (`None`: the service's own identity).
    pub tenant: Option<String>,
    /// The subject it serves.
    pub subject: String,
    /// Requests handled or refused.
    pub requests: u64,
    /// Those answered with an error (or, with no reply subject, that failed).
    pub errors: u64,
    /// Time from receiving requests to their outcome, in total, in microseconds.
    pub processing_us: u64,
    /// What its handler did, as a subscriber's figures count it (for
    /// `/metrics`; the fields of a JetStream delivery stay zero).
    #[serde(skip)]
    pub handler: SubscriberSnapshot,
}

/// A key of fragments as this replica runs it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeploySnapshot {
    /// The tenant whose bucket it is (`None`: the platform's).
    pub tenant: Option<String>,
    /// The key-value bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The revision applied (`None`: none yet).
    pub revision: Option<u64>,
    /// The last revision refused since one was applied.
    pub refused: Option<u64>,
    /// Revisions refused since the replica started.
    pub refusals: u64,
}

/// One NATS connection's traffic, from the client's own counters.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConnectionSnapshot {
    /// The tenant whose connection it is (`None`: the service's own).
    pub tenant: Option<String>,
    /// Times it connected: the first time, then every reconnect.
    pub connects: u64,
    /// Messages received.
    pub in_messages: u64,
    /// Messages sent.
    pub out_messages: u64,
    /// Bytes received.
    pub in_bytes: u64,
    /// Bytes sent.
    pub out_bytes: u64,
}

impl ConnectionSnapshot {
    fn of(tenant: Option<&str>, client: &async_nats::Client) -> ConnectionSnapshot {
        let s = client.statistics();
        ConnectionSnapshot {
            tenant: tenant.map(str::to_string),
            connects: s.connects.load(Relaxed),
            in_messages: s.in_messages.load(Relaxed),
            out_messages: s.out_messages.load(Relaxed),
            in_bytes: s.in_bytes.load(Relaxed),
            out_bytes: s.out_bytes.load(Relaxed),
        }
    }
}

/// How much of its quotas a tenant uses.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantSnapshot {
    /// Tenant name.
    pub name: String,
    /// `quotas.cpu`, in cores.
    pub cpu_quota: Option<f64>,
    /// Guest execution metered against the CPU quota, in seconds.
    pub guest_cpu_seconds: f64,
    /// Guest execution per second since the tenant connected, in cores.
    pub guest_cpu_cores: f64,
    /// Times one of its guests was parked over its CPU quota, or over its
    /// subscriber's share of it.
    pub cpu_parked: u64,
    /// `quotas.memory`, in bytes.
    pub memory_quota: Option<u64>,
    /// Guest memory its live instances hold now, in bytes.
    pub memory_held: u64,
    /// Idle warm instances dropped to make room for a growth under `memory`.
    pub idle_instances_reclaimed: u64,
}

impl TenantSnapshot {
    fn of(name: &str, quotas: &GuestQuotas) -> TenantSnapshot {
        let cpu = quotas.cpu.as_deref();
        let memory = quotas.memory.as_deref();
        TenantSnapshot {
            name: name.to_string(),
            cpu_quota: cpu.map(|c| c.cores()),
            guest_cpu_seconds: cpu.map_or(0.0, |c| c.spent().as_secs_f64()),
            guest_cpu_cores: cpu.map_or(0.0, |c| c.cores_used()),
            cpu_parked: cpu.map_or(0, |c| c.parked()),
            memory_quota: memory.map(|m| m.quota()),
            memory_held: memory.map_or(0, |m| m.held()),
            idle_instances_reclaimed: memory.map_or(0, |m| m.reclaimed()),
        }
    }
}

/// Every key in `book`.
fn deploys(book: &Book) -> Vec<DeploySnapshot> {
    let book = book.read().expect("status book lock");
    book.iter()
        .flat_map(|((tenant, bucket), answer)| {
            answer.keys.iter().map(move |k| DeploySnapshot {
                tenant: tenant.clone(),
                bucket: bucket.clone(),
                key: k.key.clone(),
                revision: k.revision,
                refused: k.refused.as_ref().map(|r| r.revision),
                refusals: k.refusals,
            })
        })
        .collect()
}

/// A cheap handle to read the running service's statistics.
#[derive(Clone)]
pub struct Stats {
    client: Option<async_nats::Client>,
    registry: Registry,
    /// Components loaded: from the cache, compiled into it, compiled with it off.
    loads: Arc<[AtomicU64; 3]>,
    /// What the replica runs of its fragments, when it reads any.
    deploys: Option<Book>,
}

impl Stats {
    /// Statistics of a service connected through `client`, whose members
    /// are in `registry`, loading components with the counters `loads`.
    pub fn new(
        client: Option<async_nats::Client>,
        registry: Registry,
        loads: Arc<[AtomicU64; 3]>,
    ) -> Stats {
        Stats {
            client,
            registry,
            loads,
            deploys: None,
        }
    }

    /// The same, reporting the fragments deployed over NATS as `book` says.
    pub fn with_deploys(mut self, book: Book) -> Stats {
        self.deploys = Some(book);
        self
    }

    /// Current statistics.
    pub fn snapshot(&self) -> StatsSnapshot {
        let connection_status = match &self.client {
            Some(c) => match c.connection_state() {
                async_nats::connection::State::Connected => "connected",
                async_nats::connection::State::Disconnected => "disconnected",
                async_nats::connection::State::Pending => "pending",
            },
            None => "not connected",
        };
        let registry = self.registry.members();
        StatsSnapshot {
            connection_status: connection_status.to_string(),
            total_subscribers: registry.subscribers.len(),
            subscribers: registry
                .subscribers
                .iter()
                .map(|e| e.stats.snapshot(&e.name, e.tenant.as_deref()))
                .collect(),
            endpoints: registry
                .endpoints
                .iter()
                .map(|e| EndpointSnapshot {
                    name: e.micro.name.clone(),
                    tenant: e.tenant.clone(),
                    subject: e.micro.subject.clone(),
                    requests: e.micro.stats.requests(),
                    errors: e.micro.stats.errors(),
                    processing_us: e.micro.stats.processing().as_micros() as u64,
                    handler: e.handler.snapshot(&e.micro.name, e.tenant.as_deref()),
                })
                .collect(),
            tenants: registry
                .tenants
                .iter()
                .map(|t| TenantSnapshot::of(&t.name, &t.quotas))
                .collect(),
            connections: self
                .client
                .iter()
                .map(|c| ConnectionSnapshot::of(None, c))
                .chain(
                    registry
                        .tenants
                        .iter()
                        .map(|t| ConnectionSnapshot::of(Some(&t.name), &t.client)),
                )
                .collect(),
            components_from_cache: self.loads[0].load(Relaxed),
            components_compiled: self.loads[1].load(Relaxed),
            components_compiled_uncached: self.loads[2].load(Relaxed),
            reloads_applied: self.registry.reloads.applied.load(Relaxed),
            reloads_refused: self.registry.reloads.refused.load(Relaxed),
            deploys: self.deploys.as_ref().map_or_else(Vec::new, deploys),
        }
    }

    /// One tenant's statistics.
    pub fn tenant(&self, name: &str) -> Option<TenantSnapshot> {
        self.registry
            .members()
            .tenants
            .iter()
            .find(|t| t.name == name)
            .map(|t| TenantSnapshot::of(&t.name, &t.quotas))
    }

    /// One subscriber's statistics.
    pub fn subscriber(&self, name: &str) -> Option<SubscriberSnapshot> {
        self.registry
            .members()
            .subscribers
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.stats.snapshot(&e.name, e.tenant.as_deref()))
    }
}
