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
use crate::config::{ComponentSource, Config, SubscriberConfig};
use crate::error::ErrorChain;
use crate::nats::objects;
use crate::nats::setup::{self, OpenedBucket, SetupError, SubscriberSetup};
use crate::wasm::compile::Budget;
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
    /// Each added or replaced endpoint's buckets, opened, or why it cannot run.
    pub(crate) endpoint_set_ups: HashMap<String, Result<Vec<OpenedBucket>, NotRunning>>,
    /// What putting the file's schedules changed on the server.
    pub(crate) schedules: setup::ScheduleSync,
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
        let digests = self.digests_of(&new).await?;
        let change = self.change_to(wasm, &new, &digests)?;
        // Component files first: a broken one refuses the file before the
        // server is touched. Objects are read once their connection is open.
        let mut compiled = HashMap::new();
        for name in change.add.iter().chain(&change.replace) {
            let s = new.handler(name).expect("changed from the new file");
            if let ComponentSource::File(path) = &s.component {
                let bytes = std::fs::read(path).map_err(|e| ComponentError {
                    subscriber: s.name.clone(),
                    from: Box::new(s.component.clone()),
                    problem: ComponentProblem::Unreadable(e),
                })?;
                let loaded = wasm
                    .load_within(bytes, &s.component, &s.name, &budget(&new, s))
                    .await?;
                compiled.insert(s.name.clone(), loaded);
            }
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
        let mut endpoint_set_ups = HashMap::new();
        for name in change.add.iter().chain(&change.replace) {
            let s = new.handler(name).expect("changed from the new file");
            let endpoint = new.endpoint(name).is_some();
            // A tenant opened for this file replaces the running one.
            let tenant = s
                .tenant
                .as_ref()
                .and_then(|t| opened.get(t).or_else(|| self.tenants.get(t)));
            let set_up = match connection_in((&self.own, &self.own_quotas), s, tenant) {
                Err(reason) => Err(reason),
                Ok((conn, _)) => {
                    let ready = match &s.component {
                        ComponentSource::Object {
                            bucket,
                            name: object,
                            sha256,
                        } => fetch_and_load(
                            wasm,
                            &conn.jetstream,
                            s,
                            (bucket, object, sha256),
                            tenant.and_then(|t| t.config.quotas.component_size),
                            &budget(&new, s),
                        )
                        .await
                        .map(|loaded| {
                            compiled.insert(name.clone(), loaded);
                        }),
                        ComponentSource::File(_) => Ok(()),
                    };
                    let set_up = match ready {
                        Ok(()) if endpoint => setup::ensure_endpoint(&conn.jetstream, &new, s)
                            .await
                            .map(SetUp::Endpoint)
                            .map_err(PrepareError::from),
                        Ok(()) => setup::ensure_subscriber(&conn.jetstream, &new, s)
                            .await
                            .map(|s| SetUp::Subscriber(Box::new(s)))
                            .map_err(PrepareError::from),
                        Err(e) => Err(e),
                    };
                    match set_up {
                        Ok(set_up) => Ok(set_up),
                        Err(PrepareError::Setup(e)) if s.tenant.is_some() => {
                            Err(NotRunning::Setup(Arc::new(e)))
                        }
                        Err(e) => {
                            for (_, t) in opened.drain() {
                                self.close_tenant(t, Vec::new(), false);
                            }
                            return Err(e);
                        }
                    }
                }
            };
            match set_up {
                Ok(SetUp::Endpoint(buckets)) => {
                    endpoint_set_ups.insert(name.clone(), Ok(buckets));
                }
                Ok(SetUp::Subscriber(set_up)) => {
                    set_ups.insert(name.clone(), Ok(*set_up));
                }
                Err(reason) if endpoint => {
                    endpoint_set_ups.insert(name.clone(), Err(reason));
                }
                Err(reason) => {
                    set_ups.insert(name.clone(), Err(reason));
                }
            }
        }
        // Last, once nothing else can refuse the file: a refused reload
        // leaves the schedules as the running file has them.
        let mut schedules = match setup::sync_schedules(js, &new, None).await {
            Ok(sync) => sync,
            Err(e) => {
                for (_, t) in opened.drain() {
                    self.close_tenant(t, Vec::new(), false);
                }
                return Err(e.into());
            }
        };
        schedules.extend(self.sync_tenant_schedules(&new, &opened).await);
        Ok(Prepared {
            config: new,
            change,
            compiled,
            opened,
            set_ups,
            endpoint_set_ups,
            schedules,
        })
    }

    /// Puts each tenant's schedules of `new` with the tenant's identity,
    /// and removes those of tenants leaving the file, or left in the
    /// account a tenant moves away from. A tenant's failure is its own:
    /// logged, its schedules left as they were.
    async fn sync_tenant_schedules(
        &self,
        new: &Config,
        opened: &HashMap<String, TenantEntry>,
    ) -> setup::ScheduleSync {
        let mut synced = setup::ScheduleSync::default();
        let names: BTreeSet<&String> = (new.tenants.iter().map(|t| &t.name))
            .chain(self.tenants.keys())
            .collect();
        for name in names {
            if let (Some(reopened), Some(before)) = (opened.get(name), self.tenants.get(name)) {
                synced.extend(leave_account(new, name, before, reopened).await);
            }
            let has_schedules = new
                .schedules
                .iter()
                .any(|s| s.tenant.as_ref() == Some(name));
            // A tenant that needs no connection has none, and no schedules.
            let Some(entry) = opened.get(name).or_else(|| self.tenants.get(name)) else {
                continue;
            };
            let Ok(conn) = &entry.connection else {
                if has_schedules {
                    tracing::error!(tenant = %name, "tenant {name:?} is not connected: its schedules are not put");
                } else {
                    tracing::warn!(tenant = %name, "tenant {name:?} is not connected: schedules it may still hold from an earlier file are not looked for");
                }
                continue;
            };
            match setup::sync_schedules(&conn.jetstream, new, Some(name)).await {
                Ok(sync) => synced.extend(sync),
                Err(e) if has_schedules => {
                    tracing::error!(tenant = %name, "{}: tenant {name:?}'s schedules are left as they were", ErrorChain(&e))
                }
                // One without schedules was only looked through for old ones.
                Err(e) => {
                    tracing::warn!(tenant = %name, "{}: schedules tenant {name:?} may still hold from an earlier file are not looked for", ErrorChain(&e))
                }
            }
        }
        synced
    }

    /// The SHA-256 of the component each subscriber of `new` that runs now
    /// would run: a running subscriber whose component changed is replaced.
    /// An object pinned is its pin; one unpinned is looked up through the
    /// connection its subscriber runs on (none when that is not open).
    async fn digests_of(&self, new: &Config) -> Result<HashMap<String, String>, PrepareError> {
        let mut digests = HashMap::new();
        let handlers = (new.subscribers.iter())
            .chain(new.endpoints.iter().map(|e| &e.handler))
            .filter(|s| {
                self.subscribers.contains_key(&s.name) || self.endpoints.contains_key(&s.name)
            });
        for s in handlers {
            let fail = |problem| ComponentError {
                subscriber: s.name.clone(),
                from: Box::new(s.component.clone()),
                problem,
            };
            let digest = match &s.component {
                ComponentSource::File(path) => {
                    let bytes =
                        std::fs::read(path).map_err(|e| fail(ComponentProblem::Unreadable(e)))?;
                    crate::config::sha256_hex(&bytes)
                }
                ComponentSource::Object {
                    bucket,
                    name,
                    sha256,
                } => {
                    let Ok((conn, _)) = self.connection_of(s) else {
                        continue;
                    };
                    objects::digest_of(&conn.jetstream, bucket, name, sha256.as_deref())
                        .await
                        .map_err(|e| fail(ComponentProblem::Object(Box::new(e))))?
                }
            };
            digests.insert(s.name.clone(), digest);
        }
        Ok(digests)
    }

    /// What moving from the running file to `new`, whose components have
    /// `digests`, takes.
    fn change_to(
        &self,
        wasm: &WasmRuntime,
        new: &Config,
        digests: &HashMap<String, String>,
    ) -> Result<Change, PrepareError> {
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
                    endpoint: None,
                    digest: &e.digest,
                    runs: e.runs(),
                };
                (name.clone(), current)
            })
            .chain(self.endpoints.iter().map(|(name, e)| {
                let current = Current {
                    config: &e.config.handler,
                    endpoint: Some(&e.config),
                    digest: &e.digest,
                    runs: e.runs(),
                };
                (name.clone(), current)
            }))
            .collect();
        let connected: BTreeSet<String> = self
            .tenants
            .iter()
            .filter(|(_, t)| t.connection.is_ok())
            .map(|(n, _)| n.clone())
            .collect();
        Ok(Change::between(
            self.config.as_ref(),
            &running,
            &connected,
            new,
            digests,
        )?)
    }
}

/// What an added or replaced subscriber or endpoint was set up with.
enum SetUp {
    Subscriber(Box<SubscriberSetup>),
    Endpoint(Vec<OpenedBucket>),
}

/// Whose compile `s`'s component is, and how long it may take: its
/// tenant's `compile_time` quota (the service's own have none).
fn budget(config: &Config, s: &SubscriberConfig) -> Budget {
    Budget {
        tenant: s.tenant.clone(),
        limit: s
            .tenant
            .as_ref()
            .and_then(|t| config.tenant(t))
            .and_then(|t| t.quotas.compile_time),
    }
}

/// Reads `s`'s component, `name` pinned at `sha256` in object store
/// `bucket`, through `js` (its own connection), refusing one larger than
/// `most` bytes (its tenant's `component_size`), and compiles it within
/// `budget` — unless that version was compiled ahead.
async fn fetch_and_load(
    wasm: &Arc<WasmRuntime>,
    js: &async_nats::jetstream::Context,
    s: &SubscriberConfig,
    (bucket, name, sha256): (&str, &str, &Option<String>),
    most: Option<u64>,
    budget: &Budget,
) -> Result<Loaded, PrepareError> {
    if let Some(loaded) = sha256
        .as_deref()
        .and_then(|pin| wasm.load_ahead(pin, &s.component, &s.name, budget))
    {
        return Ok(loaded?);
    }
    let fetched = objects::fetch(js, bucket, name, sha256.as_deref(), most)
        .await
        .map_err(|e| ComponentError {
            subscriber: s.name.clone(),
            from: Box::new(s.component.clone()),
            problem: ComponentProblem::Object(Box::new(e)),
        })?;
    Ok(wasm
        .load_within(fetched.bytes, &s.component, &s.name, budget)
        .await?)
}

/// Removes tenant `name`'s schedules from the account it held them in
/// `before`, when it is `reopened` in another: the server would otherwise
/// go on firing them there. Nothing is removed when both connections
/// reach one account; when that cannot be told they are removed, and the
/// new connection's sync, which follows, puts them back (their timers
/// start over).
async fn leave_account(
    new: &Config,
    name: &str,
    before: &TenantEntry,
    reopened: &TenantEntry,
) -> setup::ScheduleSync {
    let (Ok(old), Ok(now)) = (&before.connection, &reopened.connection) else {
        return setup::ScheduleSync::default();
    };
    if old.same_account(now).await {
        return setup::ScheduleSync::default();
    }
    let mut without = new.clone();
    without
        .schedules
        .retain(|s| s.tenant.as_deref() != Some(name));
    match setup::sync_schedules(&old.jetstream, &without, Some(name)).await {
        Ok(left) => {
            if !left.removed.is_empty() {
                tracing::info!(tenant = %name, removed = ?left.removed, "schedules removed from the account tenant {name:?} moves away from");
            }
            left
        }
        Err(e) => {
            tracing::warn!(tenant = %name, "{}: schedules tenant {name:?} may still hold in the account it moves away from are not looked for", ErrorChain(&e));
            setup::ScheduleSync::default()
        }
    }
}
