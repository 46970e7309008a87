//! The endpoints of the running configuration: each built on its
//! connection (the service's or its tenant's) with its host and handler,
//! listed by that connection's micro-service while it serves, and retired
//! when a reload removes or replaces it.

use super::registry::Registry;
use super::{NotRunning, Retired, Roster};
use crate::config::EndpointConfig;
use crate::endpoint::Endpoint;
use crate::error::ErrorChain;
use crate::nats::micro::{EndpointStats, MicroService};
use crate::nats::setup::OpenedBucket;
use crate::scheduler::PullContext;
use crate::wasm::component::Loaded;
use crate::wasm::invoke::Handler;
use futures::FutureExt;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a replaced endpoint keeps serving while its replacement has
/// not joined the queue group: a replacement that cannot subscribe does
/// not keep its predecessor forever.
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An endpoint of the configuration.
pub(crate) struct EndpointEntry {
    pub(crate) config: EndpointConfig,
    /// The SHA-256 of its component when it was loaded.
    pub(crate) digest: String,
    /// Running, or `None` when it could not start (its tenant is refused).
    running: Option<Running>,
}

struct Running {
    endpoint: Arc<Endpoint>,
    /// The micro-service that lists it.
    micro: Option<Arc<MicroService>>,
    /// Its serving task, once the service runs.
    serving: Option<JoinHandle<()>>,
}

impl EndpointEntry {
    /// True when it serves (or will, once the service runs).
    pub(crate) fn runs(&self) -> bool {
        self.running.is_some()
    }

    /// Cancelled once it is in its queue group (or gave up serving), when
    /// it serves: what its predecessor waits for before leaving the group.
    pub(crate) fn joined(&self) -> Option<CancellationToken> {
        (self.running.as_ref()).map(|r| r.endpoint.joined.clone())
    }

    /// Whether its successor serves on from its subscription.
    pub(crate) fn hands_over(&self) -> bool {
        (self.running.as_ref()).is_some_and(|r| r.endpoint.hands_over())
    }

    /// What it counted for `$SRV.STATS`, when it serves.
    pub(crate) fn stats(&self) -> Option<Arc<EndpointStats>> {
        (self.running.as_ref()).map(|r| r.endpoint.micro.stats.clone())
    }
}

impl Roster {
    /// An endpoint of `e` running `loaded`, with the key-value `buckets`
    /// it is granted, on its connection within its tenant's quotas,
    /// counting in `stats`; it serves once the service runs.
    pub(crate) fn running_endpoint(
        &self,
        e: &EndpointConfig,
        loaded: Loaded,
        buckets: Vec<OpenedBucket>,
        stats: Arc<EndpointStats>,
        predecessor: Option<&EndpointEntry>,
    ) -> EndpointEntry {
        let s = &e.handler;
        let (conn, quotas) = match self.connection_of(s) {
            Ok(c) => c,
            Err(reason) => return self.not_running_endpoint(e, loaded.digest, &reason),
        };
        // The handler's figures count on from its predecessor's, as its
        // requests do.
        let previous = predecessor
            .and_then(|p| p.running.as_ref())
            .map(|p| &*p.endpoint.host.settler);
        let tracer = self.tracer.as_ref().map(|t| t.for_endpoint(e));
        let mut host = self.host(s, conn, &quotas, buckets, previous, tracer);
        // Outputs of each request are numbered within this process's run
        // of the endpoint: replicas and restarts never share an id.
        host.id_namespace = format!("endpoint:{}:{}", e.name, nuid::next());
        let host = Arc::new(host);
        let (stop, micro) = match s.tenant.as_ref().and_then(|t| self.tenants.get(t)) {
            Some(t) => (t.stop.child_token(), t.micro.clone()),
            None => (self.stop_all.child_token(), self.own_micro.clone()),
        };
        let endpoint = Endpoint::new(
            e.clone(),
            stats,
            Handler::of(s, loaded.pre, host.clone()),
            host,
            quotas.concurrency,
            conn.client.clone(),
            stop,
        );
        let predecessor = predecessor.and_then(|p| p.running.as_ref());
        if let Some(p) = predecessor.filter(|p| {
            let c = &p.endpoint.config;
            (c.subject == e.subject) && (c.queue_group == e.queue_group)
        }) {
            Endpoint::hand_over(&p.endpoint, &endpoint);
        }
        if let Some(m) = &micro {
            m.add(endpoint.micro.clone(), None);
        }
        self.registry.add_endpoint(
            s.tenant.as_deref(),
            endpoint.micro.clone(),
            endpoint.host.settler.stats.clone(),
        );
        let mut entry = EndpointEntry {
            config: e.clone(),
            digest: loaded.digest,
            running: Some(Running {
                endpoint,
                micro,
                serving: None,
            }),
        };
        if let Some(ctx) = &self.ctx {
            serve(&mut entry, ctx, &self.registry);
        }
        entry
    }

    /// An endpoint that cannot run, for `reason`: reported.
    pub(crate) fn not_running_endpoint(
        &self,
        e: &EndpointConfig,
        digest: String,
        reason: &NotRunning,
    ) -> EndpointEntry {
        tracing::error!(tenant = e.tenant(), endpoint = %e.name, "{}: this endpoint does not serve; the others do", ErrorChain(reason));
        EndpointEntry {
            config: e.clone(),
            digest,
            running: None,
        }
    }

    /// Starts every endpoint's serving, once the service runs.
    pub(crate) fn start_serving(&mut self, ctx: &Arc<PullContext>) {
        for entry in self.endpoints.values_mut() {
            serve(entry, ctx, &self.registry);
        }
    }

    /// Stops `entry` serving: it leaves its micro-service's INFO at once,
    /// and its queue group once `successor` (its replacement's `joined`)
    /// is in it, or after [`HANDOVER_WAIT`]; resolves once the requests it
    /// took are answered (its tenant's connection may close then).
    pub(crate) fn retire_endpoint(
        &self,
        entry: EndpointEntry,
        successor: Option<CancellationToken>,
    ) -> Retired {
        let Some(running) = entry.running else {
            return futures::future::ready(()).boxed().shared();
        };
        self.unlist(&running);
        let name = entry.config.name;
        let retired = async move {
            if let Some(joined) = successor {
                if tokio::time::timeout(HANDOVER_WAIT, joined.cancelled())
                    .await
                    .is_err()
                {
                    tracing::warn!(endpoint = %name, "its replacement is not serving after {HANDOVER_WAIT:?}: it stops all the same");
                }
            }
            running.endpoint.stop.cancel();
            if let Some(serving) = running.serving {
                let _ = serving.await;
            }
            running.endpoint.finished().await;
            tracing::info!(endpoint = %name, "retired: its requests are answered");
        };
        self.retiring.spawn(retired).map(|_| ()).boxed().shared()
    }

    /// Stops every endpoint reading requests (shutdown): those already
    /// read are handled, tracked with the rest of the service's handlers.
    pub(crate) async fn stop_serving(&mut self) {
        for entry in self.endpoints.values_mut() {
            if let Some(serving) = entry.running.as_mut().and_then(|r| r.serving.take()) {
                let _ = serving.await;
            }
        }
    }

    /// Takes `running` out of its micro-service and the statistics.
    fn unlist(&self, running: &Running) {
        unlist(running.micro.as_ref(), &self.registry, &running.endpoint);
    }
}

/// Takes `endpoint` out of `micro` and `registry`.
fn unlist(micro: Option<&Arc<MicroService>>, registry: &Registry, endpoint: &Endpoint) {
    if let Some(m) = micro {
        m.remove(&endpoint.micro);
    }
    registry.remove_endpoint(&endpoint.micro);
}

/// Spawns `entry`'s serving, unless it serves already.
fn serve(entry: &mut EndpointEntry, ctx: &Arc<PullContext>, registry: &Registry) {
    let Some(running) = &mut entry.running else {
        return;
    };
    if running.serving.is_none() {
        let (endpoint, micro) = (running.endpoint.clone(), running.micro.clone());
        let (tracker, abandon, registry) =
            (ctx.tracker.clone(), ctx.abandon.clone(), registry.clone());
        running.serving = Some(tokio::spawn(async move {
            if endpoint.clone().serve(tracker, abandon).await.is_err() {
                // It serves nothing: no longer listed as if it did.
                unlist(micro.as_ref(), &registry, &endpoint);
            }
        }));
    }
}
