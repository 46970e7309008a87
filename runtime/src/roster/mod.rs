//! The running subscribers and tenants, and moving them from one file to
//! the next. Start-up and reload take the same path: `change` decides what
//! moves, `prepare` does everything that can fail (components compiled,
//! streams and durables declared, tenants connected) before anything
//! running changes, and `commit` swaps the running set and cannot fail;
//! `reload` adds only what a running service needs around it.
//!
//! A subscriber is retired by cancelling its pulls and waiting for its
//! in-flight handlers to settle. A replacement (a reload changed it) starts
//! pulling only once its predecessor is retired, so a message that is
//! running finishes on the old instance and no two versions overlap. A
//! tenant is connected while it has subscribers or endpoints, and drained
//! and closed after its last one is retired. An endpoint (`endpoints`) is
//! replaced at once: its old and new versions share its queue group for
//! the moment the old one takes to stop.

pub mod change;
mod commit;
mod endpoints;
mod prepare;
pub mod registry;
pub mod reload;
pub mod tenant;

pub use change::NeedsRestart;
pub use prepare::PrepareError;

use crate::config::{Config, SubscriberConfig, TenantConfig};
use crate::counters::SubscriberStats;
use crate::dispatch::Subscriber;
use crate::error::ErrorChain;
use crate::message::trace::Tracer;
use crate::nats::connect::{ConnectError, ConnectionEnd};
use crate::nats::connection::Connection;
use crate::nats::micro::MicroService;
use crate::nats::publish::PublishRoutes;
use crate::nats::setup::{SetupError, SubscriberSetup};
use crate::scheduler::{self, PullContext};
use crate::wasm::component::Loaded;
use crate::wasm::host::SubscriberHost;
use crate::wasm::invoke::Handler;
use async_nats::jetstream::consumer::PullConsumer;
use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use registry::{Registry, TenantHandles};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tenant::SharedQuotas;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a closing tenant's connection may take to drain.
const TENANT_DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Resolves once a step of a subscriber's retirement is done.
pub(crate) type Retired = Shared<BoxFuture<'static, ()>>;

/// A subscriber's retirement, in two steps.
pub(crate) struct Retirement {
    /// Its handlers have settled: a replacement may pull.
    pub(crate) settled: Retired,
    /// Its last pull request is read to the end too: its connection may close.
    pub(crate) released: Retired,
}

/// Why a subscriber does not run while the others do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotRunning {
    /// Its tenant cannot connect.
    #[error("tenant {tenant:?}")]
    TenantRefused {
        /// The tenant.
        tenant: String,
        /// Why.
        #[source]
        source: Arc<ConnectError>,
    },
    /// Its tenant's connection is gone for good.
    #[error("tenant {tenant:?}")]
    TenantLost {
        /// The tenant.
        tenant: String,
        /// Why.
        #[source]
        source: Arc<ConnectionEnd>,
    },
    /// Its tenant has no connection open (none was opened for it).
    #[error("tenant {tenant:?} is not connected")]
    TenantNotConnected {
        /// The tenant.
        tenant: String,
    },
    /// Its stream, dead-letter stream, buckets or durable cannot be set up
    /// in its tenant's account.
    #[error(transparent)]
    Setup(Arc<SetupError>),
}

/// A tenant in use: its configuration, connection, quotas and what stops it.
pub(crate) struct TenantEntry {
    pub(crate) config: TenantConfig,
    /// Its connection, or why it could not connect.
    pub(crate) connection: Result<Connection, NotRunning>,
    /// Its quotas, shared by its subscribers.
    pub(crate) quotas: SharedQuotas,
    /// Cancelled when its connection is gone for good: its subscribers stop.
    pub(crate) stop: CancellationToken,
    /// The micro-service of the same name on its connection, listing its
    /// endpoints (`None`: its user may not answer `$SRV` requests).
    pub(crate) micro: Option<Arc<MicroService>>,
    watch: Option<JoinHandle<()>>,
}

/// Where a subscriber's pull loop is.
enum Pull {
    /// Set up; starts when the service runs, after `after` (its
    /// predecessor's retirement) when there is one.
    Waiting(Box<PullConsumer>, Option<Retired>),
    /// Pulling.
    Spawned(JoinHandle<()>),
    /// Stopped or handed to a retirement.
    Done,
}

/// A subscriber of the configuration.
pub(crate) struct Entry {
    pub(crate) config: SubscriberConfig,
    /// The SHA-256 of its component file when it was loaded.
    pub(crate) digest: String,
    /// Running, or `None` when it could not start (its tenant is refused).
    running: Option<(Arc<Subscriber>, Pull)>,
}

impl Entry {
    /// True when it runs (or will, once the service runs).
    pub(crate) fn runs(&self) -> bool {
        self.running.is_some()
    }

    /// Its counters and finished-message ledger, to carry over to a replacement.
    pub(crate) fn subscriber(&self) -> Option<&Arc<Subscriber>> {
        self.running.as_ref().map(|(s, _)| s)
    }
}

/// The subscribers and tenants of the running configuration.
pub(crate) struct Roster {
    /// The file it runs; `None` until the first commit.
    config: Option<Config>,
    /// Publish routes by tenant (`None`: the service's own subscribers').
    pub(crate) routes: HashMap<Option<String>, Arc<PublishRoutes>>,
    /// The service's own connection.
    pub(crate) own: Connection,
    /// What the service's own subscribers share: guest CPU.
    pub(crate) own_quotas: SharedQuotas,
    pub(crate) tenants: HashMap<String, TenantEntry>,
    pub(crate) subscribers: HashMap<String, Entry>,
    pub(crate) endpoints: HashMap<String, endpoints::EndpointEntry>,
    /// The service's micro-service on its own connection, listing its
    /// endpoints (`None`: its user may not answer `$SRV` requests).
    pub(crate) own_micro: Option<Arc<MicroService>>,
    /// What observability reads: the members and reloads.
    pub(crate) registry: Registry,
    /// Cancelled at shutdown: every pull stops.
    pub(crate) stop_all: CancellationToken,
    /// Retirements and tenant closings under way (shutdown waits for them).
    retiring: TaskTracker,
    /// Set once the service runs: what pull loops share.
    ctx: Option<Arc<PullContext>>,
    /// Where message spans start, when traces are on.
    tracer: Option<Tracer>,
}

impl Roster {
    /// A roster running nothing yet, publishing through `own`, reporting
    /// its members in `registry`.
    pub(crate) fn new(
        own: Connection,
        own_micro: Option<Arc<MicroService>>,
        registry: Registry,
        tracer: Option<Tracer>,
    ) -> Roster {
        Roster {
            endpoints: HashMap::new(),
            own_micro,
            config: None,
            routes: HashMap::new(),
            own,
            own_quotas: SharedQuotas::default(),
            tenants: HashMap::new(),
            subscribers: HashMap::new(),
            registry,
            stop_all: CancellationToken::new(),
            retiring: TaskTracker::new(),
            ctx: None,
            tracer,
        }
    }

    /// Whether any subscriber or endpoint runs (or will, once the service runs).
    pub(crate) fn runs_any(&self) -> bool {
        self.subscribers.values().any(Entry::runs)
            || self.endpoints.values().any(endpoints::EndpointEntry::runs)
    }

    /// The file it runs.
    pub(crate) fn config(&self) -> &Config {
        self.config
            .as_ref()
            .expect("a roster runs a file from its first commit on, before the service runs")
    }

    /// Connects `t` and watches its connection; its failure is its own.
    pub(crate) async fn open_tenant(&self, config: &Config, t: &TenantConfig) -> TenantEntry {
        let tenant::Tenant { connection, lost } = tenant::connect(config, t).await;
        let stop = self.stop_all.child_token();
        let watch = connection.is_ok().then(|| {
            tokio::spawn(tenant::watch(
                t.name.clone(),
                lost,
                stop.clone(),
                self.registry.clone(),
            ))
        });
        let micro = match &connection {
            Ok(conn) => micro_service(&conn.client, config, Some(&t.name)).await,
            Err(_) => None,
        };
        TenantEntry {
            config: t.clone(),
            connection,
            quotas: SharedQuotas::of(t),
            stop,
            micro,
            watch,
        }
    }

    /// Counts an open tenant's quotas and connection in the statistics.
    pub(crate) fn register_tenant(&self, t: &TenantEntry) {
        if let Ok(conn) = &t.connection {
            self.registry.add_tenant(TenantHandles {
                name: t.config.name.clone(),
                quotas: t.quotas.guest.clone(),
                client: conn.client.clone(),
            });
        }
    }

    /// The connection `s` runs on and its quotas, or why it has none.
    pub(crate) fn connection_of(
        &self,
        s: &SubscriberConfig,
    ) -> Result<(&Connection, SharedQuotas), NotRunning> {
        let tenant = s.tenant.as_ref().and_then(|t| self.tenants.get(t));
        connection_in((&self.own, &self.own_quotas), s, tenant)
    }

    /// A subscriber of `s` running `loaded` that will pull from its
    /// consumer in `setup` on `conn`, within its tenant's `quotas`. A
    /// replacement counts into its predecessor's statistics and starts once
    /// the predecessor is retired.
    pub(crate) fn running_entry(
        &self,
        s: &SubscriberConfig,
        loaded: Loaded,
        (conn, quotas): (&Connection, SharedQuotas),
        setup: SubscriberSetup,
        predecessor: Option<(Option<Arc<Subscriber>>, Retired)>,
    ) -> Entry {
        let (previous, after) = match predecessor {
            Some((previous, retired)) => (previous, Some(retired)),
            None => (None, None),
        };
        let host = Arc::new(self.host(
            s,
            conn,
            &quotas,
            setup.buckets,
            previous.as_deref().map(Subscriber::settler),
            self.tracer.as_ref().map(|t| t.for_subscriber(s)),
        ));
        let stop = match s.tenant.as_ref().and_then(|t| self.tenants.get(t)) {
            Some(t) => t.stop.child_token(),
            None => self.stop_all.child_token(),
        };
        let sub = Arc::new(Subscriber {
            config: s.clone(),
            handler: Handler::of(s, loaded.pre, host.clone()),
            host,
            tenant_slots: quotas.concurrency,
            jetstream: conn.jetstream.clone(),
            stop,
            tasks: TaskTracker::new(),
            handing_back: TaskTracker::new(),
            retiring: Default::default(),
        });
        self.registry
            .add_subscriber(&s.name, s.tenant.as_deref(), sub.settler().stats.clone());
        let mut entry = Entry {
            config: s.clone(),
            digest: loaded.digest,
            running: Some((sub, Pull::Waiting(Box::new(setup.consumer), after))),
        };
        if let Some(ctx) = &self.ctx {
            start(&mut entry, ctx);
        }
        entry
    }

    /// What the guests of `s` (a subscriber's, or an endpoint's handler)
    /// share on `conn`: its grants and buckets, its tenant's `quotas`, the
    /// service's routes, and `tracer` (the service's, made for this
    /// handler); counting into `previous`'s statistics when it replaces a
    /// subscriber or an endpoint.
    pub(crate) fn host(
        &self,
        s: &SubscriberConfig,
        conn: &Connection,
        quotas: &SharedQuotas,
        buckets: Vec<crate::nats::setup::OpenedBucket>,
        previous: Option<&crate::settle::Settler>,
        tracer: Option<Tracer>,
    ) -> SubscriberHost {
        let routes = self.routes.get(&s.tenant).cloned().unwrap_or_default();
        let mut host = SubscriberHost::new(s, conn.wire(&routes), routes, buckets, previous)
            .with_quotas(s, quotas.guest.clone());
        host.tracer = tracer;
        host
    }

    /// A subscriber that cannot run, for `reason`: reported, counted as not running.
    pub(crate) fn not_running_entry(
        &self,
        s: &SubscriberConfig,
        digest: String,
        reason: &NotRunning,
    ) -> Entry {
        let reason = ErrorChain(reason).to_string();
        tracing::error!(tenant = s.tenant.as_deref(), subscriber = %s.name, "{reason}: this subscriber does not run; the others do");
        let counters = Arc::new(SubscriberStats::default());
        counters.not_running(reason);
        self.registry
            .add_subscriber(&s.name, s.tenant.as_deref(), counters);
        Entry {
            config: s.clone(),
            digest,
            running: None,
        }
    }

    /// Tells the pull loops which streams to declare again if the server loses them.
    pub(crate) fn set_streams(&self, streams: &[crate::config::StreamConfig]) {
        if let Some(ctx) = &self.ctx {
            *ctx.streams.write().unwrap_or_else(|e| e.into_inner()) = streams.to_vec();
        }
    }

    /// Starts every prepared subscriber's pull loop.
    pub(crate) fn start_pulling(&mut self, ctx: Arc<PullContext>) -> usize {
        for entry in self.subscribers.values_mut() {
            start(entry, &ctx);
        }
        self.start_serving(&ctx);
        self.ctx = Some(ctx);
        self.subscribers.values().filter(|e| e.runs()).count()
    }

    /// Stops `entry`'s pulls. `settled` resolves once its handlers have
    /// settled (its replacement may pull then); `released` once its last
    /// pull request has been read to the end too (its connection may
    /// close then). `forget` removes it from the statistics at the end.
    pub(crate) fn retire(&self, entry: Entry, forget: bool) -> Retirement {
        let registry = self.registry.clone();
        let name = entry.config.name.clone();
        let (settled_tx, settled_rx) = tokio::sync::oneshot::channel::<()>();
        let retired = async move {
            if let Some((sub, pull)) = entry.running {
                sub.retiring
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                sub.stop.cancel();
                match pull {
                    Pull::Spawned(handle) => {
                        let _ = handle.await;
                    }
                    Pull::Waiting(_, Some(after)) => after.await,
                    Pull::Waiting(_, None) | Pull::Done => {}
                }
                sub.tasks.close();
                sub.tasks.wait().await;
                tracing::info!(subscriber = %name, "retired: its in-flight messages are settled");
                let _ = settled_tx.send(());
                sub.handing_back.close();
                sub.handing_back.wait().await;
            }
            if forget {
                registry.remove_subscriber(&name);
            }
        };
        Retirement {
            settled: settled_rx.map(|_| ()).boxed().shared(),
            released: self.retiring.spawn(retired).map(|_| ()).boxed().shared(),
        }
    }

    /// Closes tenant `t` once `retired` (its subscribers' retirements) resolve:
    /// its acknowledgements are flushed and its connection drained. `forget`
    /// removes it from the statistics (not when a new connection of the
    /// same tenant replaces it).
    pub(crate) fn close_tenant(&self, t: TenantEntry, retired: Vec<Retired>, forget: bool) {
        let registry = self.registry.clone();
        self.retiring.spawn(async move {
            futures::future::join_all(retired).await;
            if let Some(w) = &t.watch {
                w.abort();
            }
            if forget {
                registry.remove_tenant(&t.config.name);
            }
            if let Ok(conn) = &t.connection {
                // The server has the last acks and naks (flush waits for its
                // answer) before the connection goes.
                let closed = tokio::time::timeout(TENANT_DRAIN_WAIT, async {
                    conn.client.flush().await.map_err(CloseError::Flush)?;
                    conn.client.drain().await.map_err(CloseError::Drain)
                })
                .await;
                match closed {
                    Ok(Ok(())) => tracing::info!(tenant = %t.config.name, "removed: its last acknowledgements flushed, its connection draining"),
                    Ok(Err(e)) => tracing::warn!(tenant = %t.config.name, "removed; {}", ErrorChain(&e)),
                    Err(_) => tracing::warn!(tenant = %t.config.name, "removed; its last acknowledgements were not flushed within {TENANT_DRAIN_WAIT:?}"),
                }
            }
        });
    }

    /// The clients of every open connection: the service's, then each tenant's.
    pub(crate) fn clients(&self) -> Vec<async_nats::Client> {
        let tenants = self
            .tenants
            .values()
            .filter_map(|t| t.connection.as_ref().ok());
        std::iter::once(&self.own)
            .chain(tenants)
            .map(|c| c.client.clone())
            .collect()
    }

    /// Stops every pull (shutdown) and waits for the loops to end.
    pub(crate) async fn stop_pulling(&mut self) {
        self.stop_all.cancel();
        for t in self.tenants.values() {
            if let Some(w) = &t.watch {
                w.abort();
            }
            // A stopping replica leaves its tenants' $SRV groups too.
            if let Some(m) = &t.micro {
                m.stop();
            }
        }
        self.stop_serving().await;
        for entry in self.subscribers.values_mut() {
            if let Some((_, pull)) = &mut entry.running {
                if let Pull::Spawned(handle) = std::mem::replace(pull, Pull::Done) {
                    let _ = handle.await;
                }
            }
        }
    }

    /// Waits for retirements and tenant closings under way.
    pub(crate) async fn retirements_done(&self) {
        self.retiring.close();
        self.retiring.wait().await;
    }
}

/// The connection `s` runs on with its quotas — the service's own (`own`),
/// or those of its tenant's entry (`tenant`, as the caller found it); or
/// why it has none.
fn connection_in<'a>(
    (own, own_quotas): (&'a Connection, &SharedQuotas),
    s: &SubscriberConfig,
    tenant: Option<&'a TenantEntry>,
) -> Result<(&'a Connection, SharedQuotas), NotRunning> {
    let Some(name) = &s.tenant else {
        return Ok((own, own_quotas.clone()));
    };
    let t = tenant.ok_or_else(|| NotRunning::TenantNotConnected {
        tenant: name.clone(),
    })?;
    let conn = t.connection.as_ref().map_err(Clone::clone)?;
    Ok((conn, t.quotas.clone()))
}

/// The micro-service of `config`'s service on `client` (the service's own
/// connection, or `tenant`'s), listing no endpoint yet; `None`, with a
/// warning, when the server refuses its user the `$SRV` subscriptions.
pub(crate) async fn micro_service(
    client: &async_nats::Client,
    config: &Config,
    tenant: Option<&str>,
) -> Option<Arc<MicroService>> {
    let name = &config.service.name;
    if !crate::config::endpoint::is_micro_name(name) {
        tracing::warn!(tenant, "$SRV.PING, INFO and STATS are off: a NATS service cannot be named {name:?} (only A-Z, a-z, 0-9, - and _)");
        return None;
    }
    let description = format!("natsapp-wasm {}", env!("CARGO_PKG_VERSION"));
    match MicroService::start(client, name, env!("CARGO_PKG_VERSION"), description).await {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            tracing::warn!(
                tenant,
                "$SRV.PING, INFO and STATS are off: cannot register {name:?} as a NATS service: {}",
                ErrorChain(&e)
            );
            None
        }
    }
}

/// Why a closing tenant's connection did not close cleanly.
#[derive(Debug, thiserror::Error)]
enum CloseError {
    #[error("flushing its last acknowledgements failed")]
    Flush(#[source] async_nats::client::FlushError),
    #[error("draining its connection failed")]
    Drain(#[source] async_nats::client::DrainError),
}

/// Spawns `entry`'s pull loop, after its predecessor's retirement.
fn start(entry: &mut Entry, ctx: &Arc<PullContext>) {
    let Some((sub, pull)) = &mut entry.running else {
        return;
    };
    if let Pull::Waiting(consumer, after) = std::mem::replace(pull, Pull::Done) {
        let (sub, ctx) = (sub.clone(), ctx.clone());
        *pull = Pull::Spawned(tokio::spawn(async move {
            if let Some(after) = after {
                // Shutdown does not wait for the predecessor: nothing pulls.
                tokio::select! {
                    _ = after => {}
                    _ = sub.stop.cancelled() => return,
                }
            }
            scheduler::run(sub, *consumer, ctx).await;
        }));
    }
}
