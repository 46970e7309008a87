//! Hot reload: what a running service adds around the move to a file
//! that start-up makes too (`prepare`, `commit`): the file is read again
//! (SIGHUP, `natsapp-wasm reload`, [`Reloader`]), the outcome is counted and
//! logged, and a refused reload leaves the previous configuration running.
//! Subscribers whose configuration, component bytes, tenant or publish
//! routes changed are replaced (the new version pulls once the old one's
//! in-flight messages are settled), removed ones are retired, new ones
//! start; a tenant opens its connection with its first subscriber and
//! drains it after its last. `[service]` and `[nats]` need a restart.

pub use super::change::Summary;
use super::prepare::PrepareError;
use super::Roster;
use crate::config::{Config, ConfigError, Fragment};
use crate::error::ErrorChain;
use crate::nats::connect::{self, ConnectError};
use crate::nats::gather::{self, GatherError, Patience};
use crate::wasm::component::ComponentProblem;
use crate::wasm::WasmRuntime;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Why a reload was refused. The previous configuration keeps running.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file cannot be applied: a component, a stream, a durable, or a
    /// change that needs a restart.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The service is not running (any more).
    #[error("the service is not running")]
    NotRunning,
}

impl ReloadError {
    /// Whether NATS being unavailable, not the file or its components,
    /// kept it from applying: the same file may apply when tried again.
    pub fn is_transient(&self) -> bool {
        match self {
            ReloadError::Prepare(PrepareError::Setup(e)) => !e.is_configuration(),
            ReloadError::Prepare(PrepareError::Component(c)) => {
                matches!(&c.problem, ComponentProblem::Object(o) if o.unavailable())
            }
            _ => false,
        }
    }
}

/// Why `natsapp-wasm reload` could not ask the running replicas.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No connection to NATS.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The question could not be asked.
    #[error(transparent)]
    Gather(#[from] GatherError),
}

impl AskError {
    /// True when the file, not the server, is at fault.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            AskError::Connect(ConnectError::BadUrl { .. } | ConnectError::Credentials { .. })
        )
    }
}

/// What a replica answers on `<service>.reload`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// The service name.
    pub service: String,
    /// The replica's `$SRV` id.
    pub id: String,
    /// True when the reload was applied.
    pub applied: bool,
    /// What it changed, when applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Why it was refused, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long `natsapp-wasm reload` waits for the first answer: a reload
/// compiles changed components before it answers.
pub const FIRST_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
/// How long it keeps listening for more replicas after an answer.
pub const MORE_ANSWERS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks every running replica of `config`'s service, over its `[nats]`
/// connection, to reload, and gathers their answers.
pub async fn ask_running(config: &Config) -> Result<Vec<Answer>, AskError> {
    let (ended, _ends) = mpsc::unbounded_channel();
    let name = format!("{} reload", config.service.name);
    let client = connect::connect(&name, &config.nats, ended).await?.client;
    let subject = format!("{}.reload", config.service.name);
    let patience = Patience {
        first: FIRST_ANSWER_WAIT,
        more: MORE_ANSWERS_WAIT,
        enough: None,
    };
    Ok(gather::answers(&client, &subject, patience).await?)
}

/// A reload asked for, and where its outcome goes.
pub(crate) struct Request {
    answer: oneshot::Sender<Result<Summary, Arc<ReloadError>>>,
}

impl Request {
    pub(crate) fn answer(self, outcome: Result<Summary, Arc<ReloadError>>) {
        let _ = self.answer.send(outcome);
    }
}

/// Asks a running service to reload; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    requests: mpsc::Sender<Request>,
}

impl Reloader {
    /// A reloader and the queue its requests arrive on.
    pub(crate) fn channel() -> (Reloader, mpsc::Receiver<Request>) {
        let (requests, queue) = mpsc::channel(8);
        (Reloader { requests }, queue)
    }

    /// Reloads the service's file and components; resolves when the reload
    /// is applied (subscribers replaced or removed may still be settling
    /// their last messages) or refused.
    pub async fn reload(&self) -> Result<Summary, Arc<ReloadError>> {
        let (answer, outcome) = oneshot::channel();
        self.requests
            .send(Request { answer })
            .await
            .map_err(|_| Arc::new(ReloadError::NotRunning))?;
        outcome
            .await
            .map_err(|_| Arc::new(ReloadError::NotRunning))?
    }
}

/// Reloads `roster`'s file with `fragments` from key-value keys, and its
/// components, and applies them; counted and logged.
pub(crate) async fn apply(
    roster: &mut Roster,
    wasm: &Arc<WasmRuntime>,
    fragments: &[Fragment],
) -> Result<Summary, Arc<ReloadError>> {
    let path = roster.config().path.clone();
    tracing::info!(file = %path.display(), fragments = fragments.len(), "reloading");
    match try_apply(roster, wasm, fragments).await {
        Ok(summary) => {
            roster.registry.reloads.applied.fetch_add(1, Relaxed);
            tracing::info!(file = %path.display(), "reload applied: {summary}");
            Ok(summary)
        }
        Err(e) => {
            roster.registry.reloads.refused.fetch_add(1, Relaxed);
            tracing::error!(file = %path.display(), "reload refused, the previous configuration keeps running: {}", ErrorChain(&e));
            Err(Arc::new(e))
        }
    }
}

async fn try_apply(
    roster: &mut Roster,
    wasm: &Arc<WasmRuntime>,
    fragments: &[Fragment],
) -> Result<Summary, ReloadError> {
    let new = Config::load_with(
        &roster.config().path,
        |name| std::env::var(name).ok(),
        fragments,
    )?;
    let prepared = roster.prepare(wasm, new).await?;
    Ok(roster.commit(prepared))
}
