//! Between a key's change and its apply: the components a changed
//! fragment names as objects are read through the connection that watches
//! its bucket and compiled ahead (`wasm::compile`) — one key's changes in
//! order, different keys at once. The apply, which runs every key's
//! fragment with the file, then only links them: one tenant's slow
//! component holds up its own key, never another's. A compile past its
//! tenant's `compile_time` refuses the change here, before it is tried.

use super::watch::Change;
use crate::config::{named_objects, ComponentSource, Config, FragmentKey};
use crate::error::ErrorChain;
use crate::nats::objects;
use crate::wasm::compile::{Budget, CompileError};
use crate::wasm::component::{ComponentError, ComponentProblem};
use crate::wasm::WasmRuntime;
use async_nats::jetstream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A change whose components were compiled ahead, or why it is refused.
pub struct Ready {
    /// The change.
    pub change: Change,
    /// Why it is refused before it is tried (`None`: try it).
    pub refused: Option<ComponentError>,
}

/// What a tenant's quotas allow compiling ahead.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// `quotas.component_size`
    pub component_size: Option<u64>,
    /// `quotas.compile_time`
    pub compile_time: Option<Duration>,
}

/// Each tenant's [`Limits`], as the running file sets them.
#[derive(Debug, Clone, Default)]
pub struct TenantLimits(Arc<RwLock<HashMap<String, Limits>>>);

impl TenantLimits {
    /// Takes the quotas of `config`'s tenants.
    pub fn set(&self, config: &Config) {
        let limits = config
            .tenants
            .iter()
            .map(|t| {
                let limits = Limits {
                    component_size: t.quotas.component_size,
                    compile_time: t.quotas.compile_time,
                };
                (t.name.clone(), limits)
            })
            .collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    fn of(&self, tenant: &Option<String>) -> Limits {
        let limits = self.0.read().unwrap_or_else(|e| e.into_inner());
        tenant
            .as_ref()
            .and_then(|t| limits.get(t).copied())
            .unwrap_or_default()
    }
}

/// The connection each bucket is watched through, by (tenant, bucket).
pub type Watchers = HashMap<(Option<String>, String), jetstream::Context>;

/// Compiles ahead the components of each change from `changes`, then
/// sends it on to `ready`; returns when `changes` ends.
pub async fn forward(
    mut changes: mpsc::UnboundedReceiver<Change>,
    watchers: Watchers,
    limits: TenantLimits,
    wasm: Arc<WasmRuntime>,
    ready: mpsc::UnboundedSender<Ready>,
) {
    let mut last: HashMap<FragmentKey, JoinHandle<()>> = HashMap::new();
    // Each key's latest change, by arrival: an older one is not compiled.
    let latest: Arc<Mutex<HashMap<FragmentKey, u64>>> = Arc::default();
    let mut arrivals = 0u64;
    while let Some(change) = changes.recv().await {
        last.retain(|_, task| !task.is_finished());
        let before = last.remove(&change.key);
        let key = change.key.clone();
        arrivals += 1;
        let arrival = arrivals;
        lock(&latest).insert(key.clone(), arrival);
        let latest = latest.clone();
        let js = watchers
            .get(&(key.tenant.clone(), key.bucket.clone()))
            .cloned();
        let (limits, wasm, ready) = (limits.of(&key.tenant), wasm.clone(), ready.clone());
        let task = tokio::spawn(async move {
            // A key's changes go on in the order they came.
            if let Some(before) = before {
                let _ = before.await;
            }
            let superseded = lock(&latest).get(&change.key) != Some(&arrival);
            let refused = match js {
                Some(js) if !superseded => compile_ahead(&change, &js, limits, &wasm).await.err(),
                _ => None,
            };
            let _ = ready.send(Ready { change, refused });
        });
        last.insert(key, task);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads and compiles the objects `change`'s fragment names for
/// subscribers that run on the connection of its bucket, `js`. Only a
/// compile past the tenant's quota refuses it here; anything else wrong
/// is left to the apply, which says so in its own words.
async fn compile_ahead(
    change: &Change,
    js: &jetstream::Context,
    limits: Limits,
    wasm: &WasmRuntime,
) -> Result<(), ComponentError> {
    let Some(fragment) = &change.fragment else {
        return Ok(());
    };
    let tenant = &change.key.tenant;
    let budget = Budget {
        tenant: tenant.clone(),
        limit: limits.compile_time,
    };
    let ours = named_objects(&fragment.text)
        .into_iter()
        .filter(|o| o.tenant.is_none() || &o.tenant == tenant);
    for named in ours {
        let ComponentSource::Object {
            bucket,
            name,
            sha256,
        } = &named.source
        else {
            continue;
        };
        let fetched = match objects::fetch(
            js,
            bucket,
            name,
            sha256.as_deref(),
            limits.component_size,
        )
        .await
        {
            Ok(fetched) => fetched,
            Err(e) => {
                tracing::debug!(key = %change.key, "not compiled ahead: {}", ErrorChain(&e));
                continue;
            }
        };
        tracing::info!(
            "compiling the component of subscriber {:?} of {} revision {} ahead of its apply",
            named.subscriber,
            change.key,
            fragment.revision
        );
        match wasm.compile_ahead(fetched.bytes, &budget).await {
            Ok(_) => {}
            Err(problem @ ComponentProblem::Compile(CompileError::TooSlow { .. })) => {
                return Err(ComponentError {
                    subscriber: named.subscriber,
                    from: Box::new(named.source),
                    problem,
                });
            }
            Err(e) => {
                tracing::debug!(key = %change.key, "not compiled ahead: {}", ErrorChain(&e))
            }
        }
    }
    Ok(())
}
