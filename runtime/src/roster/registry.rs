//! What the running service consists of, for whoever reports on it: each
//! subscriber's counters and each connected tenant's quotas and
//! connection, as the roster adds and removes them, and the reloads'
//! outcomes. Observability reads it; the roster writes it.

use crate::counters::SubscriberStats;
use crate::nats::micro::MicroEndpoint;
use crate::wasm::host::GuestQuotas;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A connected tenant, as its statistics are read.
#[derive(Clone)]
pub struct TenantHandles {
    /// Its name.
    pub name: String,
    /// What its guests are metered against.
    pub quotas: GuestQuotas,
    /// Its connection.
    pub client: async_nats::Client,
}

/// A subscriber, as its statistics are read.
pub struct SubscriberEntry {
    /// Its name.
    pub name: String,
    /// Its tenant (`None`: the service's own identity).
    pub tenant: Option<String>,
    /// Its counters.
    pub stats: Arc<SubscriberStats>,
}

/// An endpoint, as its statistics are read.
pub struct EndpointEntry {
    /// Its tenant (`None`: the service's own identity).
    pub tenant: Option<String>,
    /// Its name, subject, queue group and counters.
    pub micro: Arc<MicroEndpoint>,
    /// What its handler did, counted as a subscriber's handler is.
    pub handler: Arc<SubscriberStats>,
}

/// The subscribers, endpoints and tenants of the running configuration.
#[derive(Default)]
pub struct Members {
    /// Every subscriber, running or not.
    pub subscribers: Vec<SubscriberEntry>,
    /// Every endpoint that serves.
    pub endpoints: Vec<EndpointEntry>,
    /// The tenants that connected, by name.
    pub tenants: Vec<TenantHandles>,
}

/// Reloads of the configuration, by outcome.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    /// Applied.
    pub applied: AtomicU64,
    /// Refused (the configuration before them kept running).
    pub refused: AtomicU64,
}

/// A cheap handle to the service's members; subscribers and tenants come
/// and go with reloads.
#[derive(Clone, Default)]
pub struct Registry {
    members: Arc<RwLock<Members>>,
    /// Reloads, by outcome.
    pub reloads: Arc<ReloadCounts>,
}

impl Registry {
    /// The members now.
    pub fn members(&self) -> RwLockReadGuard<'_, Members> {
        self.members.read().unwrap_or_else(|e| e.into_inner())
    }

    fn members_mut(&self) -> RwLockWriteGuard<'_, Members> {
        self.members.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `subscriber`'s figures from now on (replacing an entry of the same name).
    pub(crate) fn add_subscriber(
        &self,
        name: &str,
        tenant: Option<&str>,
        stats: Arc<SubscriberStats>,
    ) {
        let mut m = self.members_mut();
        m.subscribers.retain(|e| e.name != name);
        m.subscribers.push(SubscriberEntry {
            name: name.to_string(),
            tenant: tenant.map(str::to_string),
            stats,
        });
    }

    /// Counts an endpoint's figures from now on (replacing an entry of the same name).
    pub(crate) fn add_endpoint(
        &self,
        tenant: Option<&str>,
        micro: Arc<MicroEndpoint>,
        handler: Arc<SubscriberStats>,
    ) {
        let mut m = self.members_mut();
        m.endpoints.retain(|e| e.micro.name != micro.name);
        m.endpoints.push(EndpointEntry {
            tenant: tenant.map(str::to_string),
            micro,
            handler,
        });
    }

    /// Forgets `micro`'s endpoint (a replacement of the same name added since stays).
    pub(crate) fn remove_endpoint(&self, micro: &Arc<MicroEndpoint>) {
        self.members_mut()
            .endpoints
            .retain(|e| !Arc::ptr_eq(&e.micro, micro));
    }

    /// Forgets a subscriber removed from the configuration.
    pub(crate) fn remove_subscriber(&self, name: &str) {
        self.members_mut().subscribers.retain(|e| e.name != name);
    }

    /// Counts a connected tenant's quotas and connection (replacing an entry of the same name).
    pub(crate) fn add_tenant(&self, tenant: TenantHandles) {
        let mut m = self.members_mut();
        m.tenants.retain(|t| t.name != tenant.name);
        m.tenants.push(tenant);
        m.tenants.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Forgets a tenant removed from the configuration.
    pub(crate) fn remove_tenant(&self, name: &str) {
        self.members_mut().tenants.retain(|t| t.name != name);
    }

    /// Reports every running subscriber of `tenant` as not running, for `reason`.
    pub(crate) fn tenant_stopped(&self, tenant: &str, reason: &str) {
        for e in &self.members().subscribers {
            if e.tenant.as_deref() == Some(tenant) {
                e.stats.not_running(reason.to_string());
            }
        }
    }
}
