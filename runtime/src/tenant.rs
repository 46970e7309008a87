//! Step 2b of the data flow: one NATS connection per tenant, with the
//! tenant's own identity, so the server's accounts and permissions isolate
//! tenants too, not only the runtime's allow-lists; and the semaphore of
//! its quotas. A tenant that cannot connect, or whose connection is gone
//! for good, is reported and its subscribers do not run (or stop); the
//! others go on.

use crate::config::{Config, TenantConfig};
use crate::fatal::Fatal;
use crate::wasm::cpu::CpuBudget;
use crate::wasm::host::http::HttpQuota;
use crate::wasm::host::SharedQuotas;
use crate::wasm::memory::MemoryPool;
use crate::wasm::rate::{PublishQuota, RateLimit};
use crate::{jetstream_context, Connection};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// A tenant's connection (or why it has none) and what ends it.
pub(crate) struct Tenant {
    /// Its connection, or why it could not connect.
    pub(crate) connection: Result<Connection, String>,
    /// Why its connection is gone for good, when it is.
    pub(crate) lost: mpsc::UnboundedReceiver<Fatal>,
}

/// Connects tenant `t` of `config`; its error is its own.
pub(crate) async fn connect(config: &Config, t: &TenantConfig) -> Tenant {
    let name = format!("{}/{}", config.service.name, t.name);
    let (fatal, lost) = mpsc::unbounded_channel();
    let connected = crate::nats::connect::connect(&name, &t.nats, fatal)
        .await
        .map(|client| Connection {
            jetstream: jetstream_context(config, client.clone()),
            client,
            batch_slots: Default::default(),
            quotas: SharedQuotas {
                concurrency: t.quotas.concurrency.map(|n| Arc::new(Semaphore::new(n))),
                cpu: t.quotas.cpu.map(|c| Arc::new(CpuBudget::new(c))),
                memory: t.quotas.memory.map(|m| Arc::new(MemoryPool::new(m))),
                publish: Some(Arc::new(PublishQuota {
                    rate: t.quotas.publish_rate.map(RateLimit::new),
                    bytes: t.quotas.publish_bytes.map(RateLimit::new),
                })),
                http: Some(Arc::new(HttpQuota {
                    rate: t.quotas.http_rate.map(RateLimit::new),
                    concurrency: t
                        .quotas
                        .http_concurrency
                        .map(|n| Arc::new(Semaphore::new(n))),
                    concurrency_limit: t.quotas.http_concurrency.unwrap_or(0),
                })),
            },
        })
        .map_err(|e| format!("tenant {:?}: {e}", t.name));
    if let Err(e) = &connected {
        tracing::error!(tenant = %t.name, "{e}");
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
    mut lost: mpsc::UnboundedReceiver<Fatal>,
    stop: tokio_util::sync::CancellationToken,
    stats: crate::stats::Stats,
) {
    let reason = lost.recv().await.unwrap_or(Fatal::ConnectionClosed);
    let reason = format!("tenant {name:?}: {}", crate::telemetry::ErrorChain(&reason));
    tracing::error!(tenant = %name, "{reason}: its subscribers stop; the others go on");
    stats.tenant_stopped(&name, &reason);
    stop.cancel();
}
