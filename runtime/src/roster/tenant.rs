//! Step 2b of the data flow: one NATS connection per tenant, with the
//! tenant's own identity, so the server's accounts and permissions isolate
//! tenants too, not only the runtime's allow-lists; and the state of its
//! quotas, shared by its subscribers. A tenant that cannot connect, or
//! whose connection is gone for good, is reported and its subscribers do
//! not run (or stop); the others go on.

use super::registry::Registry;
use super::NotRunning;
use crate::config::{Config, TenantConfig};
use crate::error::ErrorChain;
use crate::nats::connect::{self, ConnectionEnd};
use crate::nats::connection::Connection;
use crate::wasm::cpu::{share, CpuBudget, CpuGroup};
use crate::wasm::host::http::HttpQuota;
use crate::wasm::host::GuestQuotas;
use crate::wasm::memory::MemoryPool;
use crate::wasm::rate::{PublishQuota, RateLimit};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// The state of a tenant's quotas, shared by its subscribers. The
/// service's own subscribers have none but a group sharing guest CPU.
#[derive(Clone, Default)]
pub struct SharedQuotas {
    /// Handlers running at once (`quotas.concurrency`).
    pub concurrency: Option<Arc<Semaphore>>,
    /// What its guests are metered against (`cpu`, `memory`, the publish
    /// and HTTP rates).
    pub guest: GuestQuotas,
}

impl SharedQuotas {
    /// The quotas of tenant `t`, unused.
    pub fn of(t: &TenantConfig) -> SharedQuotas {
        let q = &t.quotas;
        SharedQuotas {
            concurrency: q.concurrency.map(|n| Arc::new(Semaphore::new(n))),
            guest: GuestQuotas {
                shares: CpuGroup::new(q.cpu.unwrap_or_else(share::service_pool)),
                cpu: q.cpu.map(|c| Arc::new(CpuBudget::new(c))),
                memory: q.memory.map(|m| Arc::new(MemoryPool::new(m))),
                publish: Some(Arc::new(PublishQuota {
                    rate: q.publish_rate.map(RateLimit::new),
                    bytes: q.publish_bytes.map(RateLimit::new),
                })),
                http: Some(Arc::new(HttpQuota {
                    rate: q.http_rate.map(RateLimit::new),
                    concurrency: q.http_concurrency.map(|n| Arc::new(Semaphore::new(n))),
                    concurrency_limit: q.http_concurrency.unwrap_or(0),
                })),
            },
        }
    }
}

/// A tenant's connection (or why it has none) and what ends it.
pub(crate) struct Tenant {
    /// Its connection, or why it could not connect.
    pub(crate) connection: Result<Connection, NotRunning>,
    /// Why its connection is gone for good, when it is.
    pub(crate) lost: mpsc::UnboundedReceiver<ConnectionEnd>,
}

/// Connects tenant `t` of `config`; its error is its own.
pub(crate) async fn connect(config: &Config, t: &TenantConfig) -> Tenant {
    let name = format!("{}/{}", config.service.name, t.name);
    let (ended, lost) = mpsc::unbounded_channel();
    let connected = connect::connect(&name, &t.nats, ended)
        .await
        .map(Connection::new)
        .map_err(|e| NotRunning::TenantRefused {
            tenant: t.name.clone(),
            source: Arc::new(e),
        });
    if let Err(e) = &connected {
        tracing::error!(tenant = %t.name, "{}", ErrorChain(e));
    }
    Tenant {
        connection: connected,
        lost,
    }
}

/// Waits until the tenant's connection is gone for good, then stops its
/// subscribers (`stop`) and reports them not running.
pub(crate) async fn watch(
    name: String,
    mut lost: mpsc::UnboundedReceiver<ConnectionEnd>,
    stop: tokio_util::sync::CancellationToken,
    registry: Registry,
) {
    let end = lost.recv().await.unwrap_or(ConnectionEnd::Closed);
    let reason = NotRunning::TenantLost {
        tenant: name.clone(),
        source: Arc::new(end),
    };
    let reason = ErrorChain(&reason).to_string();
    tracing::error!(tenant = %name, "{reason}: its subscribers stop; the others go on");
    registry.tenant_stopped(&name, &reason);
    stop.cancel();
}
