//! The service: everything wired together. [`Service::start`] does all
//! that can fail before the first pull — the admin endpoint's socket, the
//! trace exporter, the WebAssembly engine, the service's connection, then
//! the roster's prepare and commit from nothing, as a reload does — so
//! every configuration mistake surfaces before a message is touched.
//! [`Service::run`] pulls until `shutdown` resolves, applying reloads in
//! between, then finishes in-flight handlers within the grace period and
//! settles every fetched message. [`run`] does both.

use crate::config::{Config, ConfigError, Fragment};
use crate::deploy::rollout::{NotRun, Run};
use crate::deploy::{Deploy, DeployError};
use crate::error::ErrorChain;
use crate::fatal::Fatal;
use crate::nats::connect::{self, ConnectError, ConnectionEnd};
use crate::nats::connection::Connection;
use crate::observability::admin::{self, Admin, AdminListener};
use crate::observability::logs;
use crate::observability::micro::{self, Micro};
use crate::observability::stats::{Stats, StatsSnapshot};
use crate::observability::traces::{self, Traces};
use crate::plan;
use crate::roster::registry::Registry;
use crate::roster::reload::{self, Reloader};
use crate::roster::{NotRunning, PrepareError, Roster};
use crate::scheduler::PullContext;
use crate::wasm::cache::ComponentCache;
use crate::wasm::component::ComponentError;
use crate::wasm::{EngineError, PoolSize, WasmRuntime};
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
    /// The file cannot run: a component, a stream or a durable of the
    /// service's own.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The WebAssembly engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// No subscriber could start (every tenant failed); the first one's reason.
    #[error("no subscriber runs")]
    NothingRuns(#[source] Option<NotRunning>),
    /// The service stopped because it lost what it needs to run.
    #[error(transparent)]
    Fatal(#[from] Fatal),
    /// The admin endpoint cannot listen on its address.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// The trace exporter cannot be set up.
    #[error(transparent)]
    Traces(#[from] traces::TracesError),
    /// The fragments in key-value cannot be read or answered for.
    #[error(transparent)]
    Deploy(#[from] DeployError),
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
            Error::Prepare(e) => match e {
                PrepareError::Component(e) => !e.problem.is_compiler_failure(),
                PrepareError::NeedsRestart(_) => true,
                PrepareError::Setup(e) => e.is_configuration(),
            },
            Error::Engine(_) | Error::NothingRuns(_) | Error::Fatal(_) | Error::Deploy(_) => false,
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

/// The environment variables natsapp-wasm reads (service.toml's `${VAR}`
/// references aside).
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
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
];

/// How long shutdown waits for the last acknowledgements to reach the server.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Compiles every subscriber's and endpoint's component file and checks it implements
/// the handler world, without connecting to NATS (components in an object
/// store are read and checked at start).
pub fn check(config: &Config) -> Result<plan::Plan, Error> {
    let runtime = WasmRuntime::new(ComponentCache::from_env(), PoolSize::for_config(config))?;
    let mut imports = std::collections::BTreeMap::new();
    let handlers = (config.subscribers.iter()).chain(config.endpoints.iter().map(|e| &e.handler));
    for s in handlers {
        if let Some(path) = s.component.file() {
            imports.insert(s.name.clone(), runtime.load(path, &s.name)?.imports);
        }
    }
    Ok(plan::Plan::new(config, &imports))
}

/// A service that is connected, set up and ready to pull.
pub struct Service {
    roster: Roster,
    wasm: Arc<WasmRuntime>,
    connection: mpsc::UnboundedReceiver<ConnectionEnd>,
    stats: Stats,
    admin: Option<Admin>,
    micro: Option<Micro>,
    reloads: (Reloader, mpsc::Receiver<reload::Request>),
    traces: Option<Arc<Traces>>,
    /// The fragments in key-value it runs, when the file names any.
    deploy: Option<Deploy>,
}

impl Service {
    /// Compiles every component, connects, declares or verifies streams and
    /// durable consumers. Nothing is pulled yet.
    pub async fn start(config: Config) -> Result<Service, Error> {
        let admin_listener = match config.service.admin {
            Some(addr) => Some(AdminListener::bind(addr).await?),
            None => None,
        };
        let traces = Traces::from_config(&config, |name| std::env::var(name).ok())?;
        let (ended, connection) = mpsc::unbounded_channel();
        let connected = connect::connect(&config.service.name, &config.nats, ended).await?;
        let client = connected.client.clone();
        // A replica reads its fragments from NATS before anything runs:
        // the engine is sized for them too.
        let mut deploy = Deploy::open(&config, &client).await?;
        let sized = match &deploy {
            Some(d) => Config::load_with(
                &config.path,
                |name| std::env::var(name).ok(),
                &d.rollout.candidate(),
            )
            .unwrap_or_else(|_| config.clone()),
            None => config.clone(),
        };
        let wasm = Arc::new(WasmRuntime::new(
            ComponentCache::from_env(),
            PoolSize::for_config(&sized),
        )?);
        if let Some(d) = &mut deploy {
            d.compile_ahead(wasm.clone());
        }
        let own = Connection::new(connected);
        let registry = Registry::default();
        let mut stats = Stats::new(Some(client.clone()), registry.clone(), wasm.loads());
        if let Some(d) = &deploy {
            stats = stats.with_deploys(d.book());
        }
        let tracer = traces.as_ref().map(|t| t.tracer());
        // Start-up is a reload from nothing: the same prepare and commit,
        // then the fragments read from NATS, key by key as any change.
        let own_micro = crate::roster::micro_service(&client, &config, None).await;
        let mut roster = Roster::new(own, own_micro.clone(), registry, tracer);
        let prepared = roster.prepare(&wasm, config).await?;
        let first_not_running = prepared.first_not_running();
        roster.commit(prepared);
        if let Some(d) = &mut deploy {
            apply_deploys(&mut roster, &wasm, d).await;
        }
        if !roster.runs_any() {
            match &deploy {
                None => return Err(Error::NothingRuns(first_not_running)),
                Some(_) => tracing::warn!(
                    "nothing deployed runs yet: waiting for fragments (not ready until a subscriber runs)"
                ),
            }
        }
        let name = &roster.config().service.name;
        logs::describe_service(roster.config());
        let admin = admin_listener.map(|l| l.serve(name, stats.clone()));
        let reloads = Reloader::channel();
        let micro = match own_micro {
            Some(service) => {
                Some(micro::start(&client, service, name, stats.clone(), reloads.0.clone()).await)
            }
            None => None,
        };
        Ok(Service {
            roster,
            wasm,
            connection,
            stats,
            admin,
            micro,
            reloads,
            traces,
            deploy,
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
    pub fn reloader(&self) -> Reloader {
        self.reloads.0.clone()
    }

    /// Pulls and handles messages until `shutdown` resolves (or the
    /// connection is lost for good), then stops gracefully. Reloads asked
    /// for through [`Service::reloader`] are applied in between.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<StatsSnapshot, Error> {
        let (subscriber_fatal, mut subscriber_failed) = mpsc::unbounded_channel();
        let ctx = Arc::new(PullContext {
            abandon: CancellationToken::new(),
            tracker: TaskTracker::new(),
            streams: std::sync::RwLock::new(self.roster.config().streams.clone()),
            fatal: subscriber_fatal,
        });
        let running = self.roster.start_pulling(ctx.clone());
        tracing::info!(service = %self.roster.config().service.name, subscribers = running, "running");
        let periodic = self.roster.config().service.stats_interval.map(|every| {
            let stats = self.stats.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    logs::log_stats(&stats.snapshot());
                }
            })
        });
        tokio::pin!(shutdown);
        let fatal = loop {
            tokio::select! {
                _ = &mut shutdown => break None,
                // The client drops its event handler, and with it the only
                // sender, when it gives up on the connection.
                reason = self.connection.recv() => break Some(Fatal::from(reason.unwrap_or(ConnectionEnd::Closed))),
                Some(reason) = subscriber_failed.recv() => break Some(reason),
                Some(request) = self.reloads.1.recv() => {
                    let fragments = self.deploy.as_ref().map(|d| d.rollout.applied()).unwrap_or_default();
                    let outcome = reload::apply(&mut self.roster, &self.wasm, &fragments).await;
                    if outcome.is_ok() {
                        logs::describe_service(self.roster.config());
                    }
                    if let Some(d) = &self.deploy {
                        d.set_limits(self.roster.config());
                        publish_status(&self.roster, d);
                    }
                    request.answer(outcome);
                }
                Some(()) = changed(&mut self.deploy) => {
                    if let Some(d) = &mut self.deploy {
                        apply_deploys(&mut self.roster, &self.wasm, d).await;
                        logs::describe_service(self.roster.config());
                    }
                }
            }
        };
        let graceful_timeout = self.roster.config().service.graceful_timeout;
        match &fatal {
            None => tracing::info!(
                "shutting down: no new pulls; waiting up to {graceful_timeout:?} for in-flight handlers"
            ),
            Some(reason) => tracing::error!("stopping: {}", ErrorChain(reason)),
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
                Ok(Err(e)) => tracing::warn!("could not flush the last acknowledgements: {}", ErrorChain(&e)),
                Err(_) => tracing::warn!(
                    "the last acknowledgements were not flushed within {FLUSH_WAIT:?} (is the server gone?); the server redelivers those messages after ack_wait"
                ),
            }
        }
        if let Some(traces) = self.traces.take() {
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
        let snapshot = self.stats.snapshot();
        logs::log_stats(&snapshot);
        match fatal {
            None => Ok(snapshot),
            Some(reason) => Err(Error::Fatal(reason)),
        }
    }
}

/// Waits until a fragment changes (never when the file names none).
async fn changed(deploy: &mut Option<Deploy>) -> Option<()> {
    match deploy {
        Some(d) => d.changed().await,
        None => std::future::pending().await,
    }
}

/// Applies the fragments that changed, key by key as needed, and answers
/// status requests with the outcome.
async fn apply_deploys(roster: &mut Roster, wasm: &Arc<WasmRuntime>, deploy: &mut Deploy) {
    deploy.rollout.apply(&mut Reloading { roster, wasm }).await;
    publish_status(roster, deploy);
}

/// Runs fragments as a reload of the file does.
struct Reloading<'a> {
    roster: &'a mut Roster,
    wasm: &'a Arc<WasmRuntime>,
}

impl Run for Reloading<'_> {
    async fn run(&mut self, fragments: Vec<Fragment>) -> Result<(), NotRun> {
        reload::apply(self.roster, self.wasm, &fragments)
            .await
            .map(|_| ())
            .map_err(|e| NotRun {
                reason: ErrorChain(&*e).to_string(),
                transient: e.is_transient(),
            })
    }
}

/// Answers status requests with what `roster` runs of `deploy`'s fragments.
fn publish_status(roster: &Roster, deploy: &Deploy) {
    let subscribers = (roster.subscribers.values()).map(|e| (&e.config, e.digest.as_str()));
    let endpoints = (roster.endpoints.values()).map(|e| (&e.config.handler, e.digest.as_str()));
    deploy.publish_status(subscribers.chain(endpoints).filter_map(|(config, digest)| {
        Some((config.fragment.as_ref()?, config.name.as_str(), digest))
    }));
}

/// Starts the service and runs it until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<StatsSnapshot, Error> {
    Service::start(config).await?.run(shutdown).await
}
