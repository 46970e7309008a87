//! natsapp-wasm runs NATS JetStream message handlers compiled as sandboxed
//! WASI components.
//!
//! ```text
//!  service.toml ──► config ──► nats::connect ──► nats::setup (streams, durable consumers)
//!                                                      │
//!            ┌─────────────────────────────────────────┘
//!            ▼
//!   nats::pull (permit → fetch ≤ permits) ──► dispatch (one message)
//!                                               │  wasm::invoke: fresh store, limits,
//!                                               │  guest `handle(data, msg)`; host imports
//!                                               │  publish / request (nats::publish, PubAck)
//!                                               ▼
//!                                   nats::ack::disposition ──► ack / nak / term (+ dead letter)
//!                                               │
//!                                             stats
//! ```
//!
//! [`Service::start`] does everything up to the first pull (so every
//! configuration mistake surfaces before a message is touched);
//! [`Service::run`] pulls until `shutdown` resolves, then finishes in-flight
//! handlers within the grace period and settles every fetched message.
//! [`run`] does both.

pub mod config;
pub mod dispatch;
pub mod nats;
pub mod plan;
pub mod scaffold;
pub mod stats;
pub mod telemetry;
pub mod wasm;

use crate::config::{Config, ConfigError};
use crate::dispatch::Subscriber;
use crate::nats::ack::Policy;
use crate::nats::connect::ConnectError;
use crate::nats::publish::PublishRoutes;
use crate::nats::setup::{self, SetupError};
use crate::stats::{Stats, StatsSnapshot, SubscriberStats};
use crate::wasm::cache::ComponentCache;
use crate::wasm::component::ComponentError;
use crate::wasm::host::SubscriberHost;
use crate::wasm::invoke::Handler;
use crate::wasm::{PoolSize, WasmRuntime};
use async_nats::jetstream::{self, consumer::PullConsumer};
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
    #[error("{0}")]
    Fatal(String),
}

impl Error {
    /// True when the configuration (file, components, streams, consumers) is at fault.
    pub fn is_configuration(&self) -> bool {
        match self {
            Error::Config(_) | Error::Component(_) => true,
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

/// Compiles every subscriber's component and checks it implements the
/// handler world, without connecting to NATS.
pub fn check(config: &Config) -> Result<plan::Plan, Error> {
    let runtime = WasmRuntime::new(ComponentCache::from_env(), PoolSize::for_config(config))
        .map_err(|e| Error::Engine(format!("{e:#}")))?;
    for s in &config.subscribers {
        runtime.load(&s.component, &s.name)?;
    }
    Ok(plan::Plan::new(config))
}

/// A service that is connected, set up and ready to pull.
pub struct Service {
    config: Config,
    client: async_nats::Client,
    subscribers: Vec<(Arc<Subscriber>, PullConsumer)>,
    jetstream: jetstream::Context,
    fatal: mpsc::UnboundedReceiver<String>,
    stats: Stats,
    _wasm: WasmRuntime,
}

impl Service {
    /// Compiles every component, connects, declares or verifies streams and
    /// durable consumers. Nothing is pulled yet.
    pub async fn start(config: Config) -> Result<Service, Error> {
        let wasm = WasmRuntime::new(ComponentCache::from_env(), PoolSize::for_config(&config))
            .map_err(|e| Error::Engine(format!("{e:#}")))?;
        let mut compiled = Vec::with_capacity(config.subscribers.len());
        for s in &config.subscribers {
            compiled.push(wasm.load(&s.component, &s.name)?);
        }
        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let client = nats::connect::connect(&config.service.name, &config.nats, fatal_tx).await?;
        let max_publish_wait = config
            .publishers
            .iter()
            .map(|p| p.timeout)
            .max()
            .unwrap_or(config::defaults::PUBLISH_TIMEOUT);
        let js = jetstream::ContextBuilder::new()
            .ack_timeout(max_publish_wait.max(config::defaults::PUBLISH_TIMEOUT))
            .backpressure_on_inflight(true)
            .build(client.clone());
        setup::ensure_streams(&js, &config).await?;
        let routes = Arc::new(PublishRoutes::new(&config));
        let mut subscribers = Vec::with_capacity(config.subscribers.len());
        for (s, pre) in config.subscribers.iter().zip(compiled) {
            let consumer = setup::ensure_consumer(&js, s).await?;
            let host = Arc::new(SubscriberHost::new(
                s,
                client.clone(),
                js.clone(),
                routes.clone(),
            ));
            let sub = Subscriber {
                config: s.clone(),
                handler: Handler::new(pre, host.clone(), s.timeout, s.ack_wait, s.instances),
                host,
                stats: Arc::new(SubscriberStats::default()),
                policy: Policy {
                    max_deliver: s.max_deliver,
                    backoff: s.backoff.clone(),
                    dead_letter: s.dead_letter.is_some(),
                },
            };
            subscribers.push((Arc::new(sub), consumer));
        }
        let stats = Stats {
            client: Some(client.clone()),
            subscribers: subscribers
                .iter()
                .map(|(s, _)| (s.config.name.clone(), s.stats.clone()))
                .collect(),
        };
        Ok(Service {
            config,
            client,
            subscribers,
            jetstream: js,
            fatal,
            stats,
            _wasm: wasm,
        })
    }

    /// A handle to the service's statistics, valid while and after it runs.
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// Pulls and handles messages until `shutdown` resolves (or the
    /// connection is lost for good), then stops gracefully.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<StatsSnapshot, Error> {
        let ctx = Arc::new(nats::pull::PullContext {
            stop_pulling: CancellationToken::new(),
            abandon: CancellationToken::new(),
            tracker: TaskTracker::new(),
            jetstream: self.jetstream.clone(),
        });
        let loops: Vec<_> = self
            .subscribers
            .drain(..)
            .map(|(sub, consumer)| tokio::spawn(nats::pull::run(sub, consumer, ctx.clone())))
            .collect();
        tracing::info!(service = %self.config.service.name, subscribers = loops.len(), "running");
        let periodic = self.config.service.stats_interval.map(|every| {
            let stats = self.stats.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    telemetry::log_stats(&stats.snapshot());
                }
            })
        });
        let fatal = tokio::select! {
            _ = shutdown => None,
            reason = self.fatal.recv() => reason,
        };
        match &fatal {
            None => tracing::info!(
                "shutting down: no new pulls; waiting up to {:?} for in-flight handlers",
                self.config.service.graceful_timeout
            ),
            Some(reason) => tracing::error!("stopping: {reason}"),
        }
        ctx.stop_pulling.cancel();
        for l in loops {
            let _ = l.await;
        }
        ctx.tracker.close();
        if tokio::time::timeout(self.config.service.graceful_timeout, ctx.tracker.wait())
            .await
            .is_err()
        {
            ctx.abandon.cancel();
            ctx.tracker.wait().await;
        }
        if let Some(p) = periodic {
            p.abort();
        }
        if let Err(e) = self.client.flush().await {
            tracing::warn!("could not flush the last acknowledgements: {e}");
        }
        let snapshot = self.stats.snapshot();
        telemetry::log_stats(&snapshot);
        match fatal {
            Some(reason) => Err(Error::Fatal(reason)),
            None => Ok(snapshot),
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
