//! The fallible half of moving the service to a file, at start-up and on
//! every reload: everything that can fail — components compiled, streams
//! and publishers' streams declared or verified, tenants connected, each
//! added or replaced subscriber's durable, buckets and dead-letter stream
//! set up — is done here, before anything running changes. A failure of
//! the service's own (a component, a stream, a service subscriber's
//! durable) refuses the whole file; a tenant's failure is its own: its
//! subscribers are prepared as not running and the rest goes ahead.

use super::change::{Change, Current, NeedsRestart};
use super::{connection_in, NotRunning, Roster, TenantEntry};
use crate::config::Config;
use crate::nats::setup::{self, SetupError, SubscriberSetup};
use crate::wasm::component::{ComponentError, ComponentProblem, Loaded};
use crate::wasm::WasmRuntime;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Why a file cannot be applied. Nothing running changed.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The change needs a restart.
    #[error(transparent)]
    NeedsRestart(#[from] NeedsRestart),
    /// A component cannot serve as a handler.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// Compiling a component did not finish (its task panicked or was cancelled).
    #[error("compiling the component of subscriber {subscriber:?} did not finish")]
    Compile {
        /// The subscriber.
        subscriber: String,
        /// What ended the compilation.
        #[source]
        source: tokio::task::JoinError,
    },
    /// Streams, consumers or buckets of the service's own do not match the
    /// file, or the server refused them.
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// A file made ready to run: what [`Roster::commit`] swaps in.
pub(crate) struct Prepared {
    /// The file.
    pub(crate) config: Config,
    /// What moves.
    pub(crate) change: Change,
    /// The components of the subscribers added or replaced.
    pub(crate) compiled: HashMap<String, Loaded>,
    /// The tenants whose connection opened (or failed to) for this file.
    pub(crate) opened: HashMap<String, TenantEntry>,
    /// Each added or replaced subscriber's set-up, or why it cannot run.
    pub(crate) set_ups: HashMap<String, Result<SubscriberSetup, NotRunning>>,
}

impl Prepared {
    /// Why the first subscriber of the file that will not run will not.
    pub(crate) fn first_not_running(&self) -> Option<NotRunning> {
        self.config
            .subscribers
            .iter()
            .find_map(|s| self.set_ups.get(&s.name)?.as_ref().err().cloned())
    }
}

impl Roster {
    /// Does everything that can fail of what running `new` takes.
    pub(crate) async fn prepare(
        &self,
        wasm: &Arc<WasmRuntime>,
        new: Config,
    ) -> Result<Prepared, PrepareError> {
        for capped in new.capped() {
            tracing::warn!("{}: {capped}", new.path.display());
        }
        let change = self.change_to(wasm, &new)?;
        let mut compiled = HashMap::new();
        for name in change.add.iter().chain(&change.replace) {
            let s = new.subscriber(name).expect("changed from the new file");
            let (wasm, path, subscriber) = (wasm.clone(), s.component.clone(), s.name.clone());
            let loaded = tokio::task::spawn_blocking(move || wasm.load(&path, &subscriber))
                .await
                .map_err(|source| PrepareError::Compile {
                    subscriber: s.name.clone(),
                    source,
                })??;
            compiled.insert(s.name.clone(), loaded);
        }
        let js = &self.own.jetstream;
        setup::ensure_streams(js, &new).await?;
        setup::check_publishers(js, &new).await?;
        setup::warn_duplicate_windows(js, &new).await;

        let mut opened = HashMap::new();
        for name in &change.open_tenants {
            let t = new.tenant(name).expect("changed from the new file");
            opened.insert(name.clone(), self.open_tenant(&new, t).await);
        }
        let mut set_ups = HashMap::new();
        for name in change.add.iter().chain(&change.replace) {
            let s = new.subscriber(name).expect("changed from the new file");
            // A tenant opened for this file replaces the running one.
            let tenant = s
                .tenant
                .as_ref()
                .and_then(|t| opened.get(t).or_else(|| self.tenants.get(t)));
            let set_up = match connection_in((&self.own, &self.own_quotas), s, tenant) {
                Err(reason) => Err(reason),
                Ok((conn, _)) => match setup::ensure_subscriber(&conn.jetstream, &new, s).await {
                    Ok(set_up) => Ok(set_up),
                    Err(e) if s.tenant.is_none() => {
                        for (_, t) in opened.drain() {
                            self.close_tenant(t, Vec::new(), false);
                        }
                        return Err(e.into());
                    }
                    Err(e) => Err(NotRunning::Setup(Arc::new(e))),
                },
            };
            set_ups.insert(name.clone(), set_up);
        }
        Ok(Prepared {
            config: new,
            change,
            compiled,
            opened,
            set_ups,
        })
    }

    /// What moving from the running file to `new` takes.
    fn change_to(&self, wasm: &WasmRuntime, new: &Config) -> Result<Change, PrepareError> {
        wasm.fits(new).map_err(|source| NeedsRestart::Engine {
            file: new.path.clone(),
            source,
        })?;
        let running: HashMap<String, Current<'_>> = self
            .subscribers
            .iter()
            .map(|(name, e)| {
                let current = Current {
                    config: &e.config,
                    digest: &e.digest,
                    runs: e.runs(),
                };
                (name.clone(), current)
            })
            .collect();
        let connected: BTreeSet<String> = self
            .tenants
            .iter()
            .filter(|(_, t)| t.connection.is_ok())
            .map(|(n, _)| n.clone())
            .collect();
        // A running subscriber whose component bytes changed is replaced.
        let mut digests = HashMap::new();
        for s in new
            .subscribers
            .iter()
            .filter(|s| running.contains_key(&s.name))
        {
            let bytes = std::fs::read(&s.component).map_err(|e| ComponentError {
                subscriber: s.name.clone(),
                path: s.component.clone(),
                problem: ComponentProblem::Unreadable(e),
            })?;
            digests.insert(s.name.clone(), crate::config::sha256_hex(&bytes));
        }
        Ok(Change::between(
            self.config.as_ref(),
            &running,
            &connected,
            new,
            &digests,
        )?)
    }
}
