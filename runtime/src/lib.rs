//! natsapp-wasm runs NATS JetStream message handlers compiled as sandboxed
//! WASI components.
//!
//! ```text
//!  service.toml ──► config ──► nats::connect ──► nats::setup (streams, durable consumers)
//!                                                      │
//!            ┌─────────────────────────────────────────┘
//!            ▼
//!   scheduler (permit → fetch ≤ permits; failures by kind) ──► dispatch (one message)
//!                                               │  wasm::invoke: store, limits,
//!                                               │  guest `handle(data, msg)`; host imports
//!                                               │  publish / request (nats::publish, PubAck,
//!                                               │  outputs: Nats-Msg-Id; outputs::held
//!                                               │  when atomic)
//!                                               ▼
//!            settle::disposition ──► settle::commit (atomic outputs: nats::batch)
//!                                ──► settle (every ack / nak / term / in-progress /
//!                                            dead letter) ──► nats::ack (wire) ──► stats
//! ```
//!
//! Layers import downwards only: `scheduler` → `dispatch` → `wasm` →
//! `settle` → `nats` → `config`. A running service stops on its own only
//! for a [`fatal::Fatal`] reason.
//!
//! [`Service::start`] does everything up to the first pull (so every
//! configuration mistake surfaces before a message is touched);
//! [`Service::run`] pulls until `shutdown` resolves, then finishes in-flight
//! handlers within the grace period and settles every fetched message.
//! [`run`] does both. `roster` keeps the running subscribers and tenants;
//! `reload` moves them to a changed file and components (SIGHUP,
//! `natsapp-wasm reload`, [`Service::reloader`]).
//! [`testing`] runs one message through the same dispatch path with
//! `nats::local` in place of a server (`natsapp-wasm invoke`, handler
//! authors' tests).

pub mod admin;
pub mod asyncapi;
pub mod config;
pub mod dispatch;
pub mod fatal;
pub mod grants;
mod micro;
pub mod nats;
pub mod outputs;
pub mod plan;
pub mod reload;
mod roster;
pub mod scaffold;
pub mod scheduler;
pub mod settle;
pub mod stats;
pub mod telemetry;
mod tenant;
pub mod testing;
pub mod traces;
pub mod wasm;

use crate::config::{Config, ConfigError};
use crate::fatal::Fatal;
use crate::nats::connect::ConnectError;
use crate::nats::setup::{self, SetupError};
use crate::stats::{Stats, StatsSnapshot};
use crate::wasm::cache::ComponentCache;
use crate::wasm::component::ComponentError;
use crate::wasm::{PoolSize, WasmRuntime};
use async_nats::jetstream;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the service could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// service.toml is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A component cannot serve as a handler.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// No connection to NATS.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Streams or consumers do not match the file, or the server refused them.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The WebAssembly engine could not start.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// The service stopped because it lost what it needs to run.
    #[error(transparent)]
    Fatal(#[from] Fatal),
    /// The admin endpoint cannot listen on its address.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// The trace exporter cannot be set up.
    #[error(transparent)]
    Traces(#[from] traces::TracesError),
}

impl Error {
    /// True when the configuration (file, components, streams, consumers) is at fault.
    pub fn is_configuration(&self) -> bool {
        match self {
            Error::Config(_) | Error::Component(_) | Error::Admin(_) | Error::Traces(_) => true,
            Error::Connect(e) => matches!(
                e,
                ConnectError::BadUrl { .. } | ConnectError::Credentials { .. }
            ),
            Error::Setup(e) => e.is_configuration(),
            Error::Engine(_) | Error::Fatal(_) => false,
        }
    }

    /// The process exit code: 2 for an invalid configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.is_configuration() {
            2
        } else {
            1
        }
    }
}

/// A connection subscribers publish, pull and settle through: the
/// service's own, or a tenant's (with its concurrency quota).
#[derive(Clone)]
pub(crate) struct Connection {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    quotas: wasm::host::SharedQuotas,
    /// Atomic batches open per stream, shared by the connection's subscribers.
    batch_slots: Arc<nats::batch::BatchSlots>,
}

/// JetStream on `client`, waiting for PubAcks as long as the longest
/// publisher timeout.
fn jetstream_context(config: &Config, client: async_nats::Client) -> jetstream::Context {
    let max_publish_wait = config
        .publishers
        .iter()
        .map(|p| p.timeout)
        .max()
        .unwrap_or(config::defaults::PUBLISH_TIMEOUT);
    jetstream::ContextBuilder::new()
        .ack_timeout(max_publish_wait.max(config::defaults::PUBLISH_TIMEOUT))
        .backpressure_on_inflight(true)
        .build(client)
}

/// The environment variables natsapp-wasm reads (service.toml's `${VAR}`
/// references aside; with traces on, the OpenTelemetry SDK also reads the
/// standard `OTEL_*` variables it documents).
pub const ENVIRONMENT_VARIABLES: &[&str] = &[
    "NATS_SERVERS",
    "NATS_DEBUG",
    "GRACEFUL_SHUTDOWN_TIMEOUT",
    "NATSAPP_CACHE_DIR",
    "NATSAPP_LOG_FORMAT",
    "RUST_LOG",
    "XDG_CACHE_HOME",
    "HOME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
];

/// How long shutdown waits for the last acknowledgements to reach the server.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Compiles every subscriber's component and checks it implements the
/// handler world, without connecting to NATS.
pub fn check(config: &Config) -> Result<plan::Plan, Error> {
    let runtime = WasmRuntime::new(ComponentCache::from_env(), PoolSize::for_config(config))
        .map_err(|e| Error::Engine(format!("{e:#}")))?;
    let mut imports = std::collections::BTreeMap::new();
    for s in &config.subscribers {
        imports.insert(s.name.clone(), runtime.load(&s.component, &s.name)?.imports);
    }
    Ok(plan::Plan::new(config, &imports))
}

/// A service that is connected, set up and ready to pull.
pub struct Service {
    roster: roster::Roster,
    wasm: Arc<WasmRuntime>,
    connection: mpsc::UnboundedReceiver<Fatal>,
    stats: Stats,
    admin: Option<admin::Admin>,
    micro: Option<micro::Micro>,
    reloads: (reload::Reloader, mpsc::Receiver<reload::Request>),
    traces: Option<Arc<traces::Traces>>,
}

impl Service {
    /// Compiles every component, connects, declares or verifies streams and
    /// durable consumers. Nothing is pulled yet.
    pub async fn start(config: Config) -> Result<Service, Error> {
        let admin_listener = match config.service.admin {
            Some(addr) => Some(admin::AdminListener::bind(addr).await?),
            None => None,
        };
        let traces = traces::Traces::from_config(&config, |name| std::env::var(name).ok())?;
        let wasm = WasmRuntime::new(ComponentCache::from_env(), PoolSize::for_config(&config))
            .map_err(|e| Error::Engine(format!("{e:#}")))?;
        let mut compiled = Vec::with_capacity(config.subscribers.len());
        for s in &config.subscribers {
            compiled.push(wasm.load(&s.component, &s.name)?);
        }
        let (connection_tx, connection) = mpsc::unbounded_channel();
        let client =
            nats::connect::connect(&config.service.name, &config.nats, connection_tx).await?;
        let js = jetstream_context(&config, client.clone());
        setup::ensure_streams(&js, &config).await?;
        setup::check_publishers(&js, &config).await?;
        setup::warn_duplicate_windows(&js, &config).await;
        let own = Connection {
            client: client.clone(),
            jetstream: js.clone(),
            quotas: Default::default(),
            batch_slots: Default::default(),
        };
        let stats = Stats::new(Some(client.clone()), wasm.loads());
        let mut roster = roster::Roster::new(config.clone(), own, stats.clone(), traces.clone());
        for t in &config.tenants {
            if config.has_subscribers(&t.name) {
                let entry = roster.open_tenant(&config, t).await;
                roster.register_tenant(&entry);
                roster.tenants.insert(t.name.clone(), entry);
            }
        }
        let mut first_failure = None;
        for (s, loaded) in config.subscribers.iter().zip(compiled) {
            let set_up = match roster.connection_of(s) {
                Err(reason) => Err(reason),
                Ok(conn) => match setup::ensure_subscriber(&conn.jetstream, &config, s).await {
                    Ok(set_up) => Ok((conn, set_up)),
                    Err(e) if s.tenant.is_none() => return Err(e.into()),
                    Err(e) => Err(telemetry::ErrorChain(&e).to_string()),
                },
            };
            let entry = match set_up {
                Ok((conn, set_up)) => roster.prepare(s, loaded, conn, set_up, None),
                Err(reason) => {
                    first_failure.get_or_insert(reason.clone());
                    roster.not_running(s, loaded.digest, &reason)
                }
            };
            roster.subscribers.insert(s.name.clone(), entry);
        }
        if !roster.subscribers.values().any(roster::Entry::runs) {
            return Err(Error::Fatal(Fatal::NothingRuns(
                first_failure.unwrap_or_else(|| "no subscriber".into()),
            )));
        }
        let admin = admin_listener.map(|l| l.serve(&config.service.name, stats.clone()));
        let reloads = reload::Reloader::channel();
        let micro = micro::start(
            &client,
            &config.service.name,
            stats.clone(),
            reloads.0.clone(),
        )
        .await;
        Ok(Service {
            roster,
            wasm: Arc::new(wasm),
            connection,
            stats,
            admin,
            micro,
            reloads,
            traces,
        })
    }

    /// Where the admin endpoint listens, when `[service] admin` is set.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(admin::Admin::addr)
    }

    /// A handle to the service's statistics, valid while and after it runs.
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// A handle that asks the running service to read its file and
    /// components again (what SIGHUP does).
    pub fn reloader(&self) -> reload::Reloader {
        self.reloads.0.clone()
    }

    /// Pulls and handles messages until `shutdown` resolves (or the
    /// connection is lost for good), then stops gracefully. Reloads asked
    /// for through [`Service::reloader`] are applied in between.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<StatsSnapshot, Error> {
        let (subscriber_fatal, mut subscriber_failed) = mpsc::unbounded_channel();
        let ctx = Arc::new(scheduler::PullContext {
            abandon: CancellationToken::new(),
            tracker: TaskTracker::new(),
            streams: std::sync::RwLock::new(self.roster.config.streams.clone()),
            fatal: subscriber_fatal,
        });
        let running = self.roster.start_pulling(ctx.clone());
        tracing::info!(service = %self.roster.config.service.name, subscribers = running, "running");
        let periodic = self.roster.config.service.stats_interval.map(|every| {
            let stats = self.stats.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    telemetry::log_stats(&stats.snapshot());
                }
            })
        });
        tokio::pin!(shutdown);
        let fatal = loop {
            tokio::select! {
                _ = &mut shutdown => break None,
                // The client drops its event handler, and with it the only
                // sender, when it gives up on the connection.
                reason = self.connection.recv() => break Some(reason.unwrap_or(Fatal::ConnectionClosed)),
                Some(reason) = subscriber_failed.recv() => break Some(reason),
                Some(request) = self.reloads.1.recv() => {
                    let outcome = reload::apply(&mut self.roster, &self.wasm).await;
                    request.answer(outcome);
                }
            }
        };
        let graceful_timeout = self.roster.config.service.graceful_timeout;
        match &fatal {
            None => tracing::info!(
                "shutting down: no new pulls; waiting up to {graceful_timeout:?} for in-flight handlers"
            ),
            Some(reason) => tracing::error!("stopping: {}", telemetry::ErrorChain(reason)),
        }
        if let Some(admin) = &self.admin {
            admin.draining();
        }
        // A stopping replica leaves the $SRV group: PING lists live ones.
        if let Some(m) = self.micro.take() {
            m.stop().await;
        }
        self.roster.stop_pulling().await;
        ctx.tracker.close();
        if tokio::time::timeout(graceful_timeout, ctx.tracker.wait())
            .await
            .is_err()
        {
            ctx.abandon.cancel();
            ctx.tracker.wait().await;
        }
        self.roster.retirements_done().await;
        if let Some(p) = periodic {
            p.abort();
        }
        // Every connection acks went out on: the service's and the tenants'.
        let clients = self.roster.clients();
        let flushes = clients
            .iter()
            .map(|c| tokio::time::timeout(FLUSH_WAIT, c.flush()));
        for flushed in futures::future::join_all(flushes).await {
            match flushed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("could not flush the last acknowledgements: {e}"),
                Err(_) => tracing::warn!(
                    "the last acknowledgements were not flushed within {FLUSH_WAIT:?} (is the server gone?); the server redelivers those messages after ack_wait"
                ),
            }
        }
        if let Some(traces) = self.traces.take() {
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
        let snapshot = self.stats.snapshot();
        telemetry::log_stats(&snapshot);
        match fatal {
            None => Ok(snapshot),
            Some(reason) => Err(Error::Fatal(reason)),
        }
    }
}

/// Starts the service and runs it until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<StatsSnapshot, Error> {
    Service::start(config).await?.run(shutdown).await
}
