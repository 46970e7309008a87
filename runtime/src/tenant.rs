//! Step 2b of the data flow: one NATS connection per tenant, with the
//! tenant's own identity, so the server's accounts and permissions isolate
//! tenants too, not only the runtime's allow-lists; and the semaphore of
//! its concurrency quota. A tenant that cannot connect is reported, and its
//! subscribers do not run; the others do.

use crate::config::Config;
use crate::fatal::Fatal;
use crate::wasm::cpu::CpuBudget;
use crate::wasm::memory::MemoryPool;
use crate::{jetstream_context, Connection};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

/// Connects every tenant that has subscribers; a tenant's error is its own.
pub(crate) async fn connect_all(
    config: &Config,
    fatal: &mpsc::UnboundedSender<Fatal>,
) -> HashMap<String, Result<Connection, String>> {
    let mut out = HashMap::new();
    for t in &config.tenants {
        if !config
            .subscribers
            .iter()
            .any(|s| s.tenant.as_deref() == Some(t.name.as_str()))
        {
            continue;
        }
        let name = format!("{}/{}", config.service.name, t.name);
        let connected = crate::nats::connect::connect(&name, &t.nats, fatal.clone())
            .await
            .map(|client| Connection {
                jetstream: jetstream_context(config, client.clone()),
                client,
                permits: t.quotas.concurrency.map(|n| Arc::new(Semaphore::new(n))),
                cpu: t.quotas.cpu.map(|c| Arc::new(CpuBudget::new(c))),
                memory: t.quotas.memory.map(|m| Arc::new(MemoryPool::new(m))),
            })
            .map_err(|e| format!("tenant {:?}: {e}", t.name));
        if let Err(e) = &connected {
            tracing::error!(tenant = %t.name, "{e}");
        }
        out.insert(t.name.clone(), connected);
    }
    out
}
