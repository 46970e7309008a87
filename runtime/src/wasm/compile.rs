//! Compiling components off the message path. Compiles run on threads of
//! their own at a lower OS priority, so handlers go first when the cores
//! are busy; at most `slots` run at once and each tenant's one at a time,
//! so one tenant's huge component holds one slot, never all. A tenant's
//! compile that outlasts its `compile_time` quota is given up: a compile
//! cannot be interrupted, so its thread ends in the background, holding
//! its tenant's turn until then. Components compiled ahead of a deploy's
//! apply are kept by digest for a while, so the apply only links them.

use super::cache::{CacheUse, ComponentCache};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};
use wasmtime::component::Component;
use wasmtime::Engine;

/// How long a component compiled ahead is kept for the apply that needs it.
const KEPT_AHEAD: Duration = Duration::from_secs(300);
/// The nice value compile threads run at: below the message path's.
const NICE: i32 = 10;

/// Why a compile gave no component.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Compiling it took longer than its tenant's quota allows.
    #[error("compiling it took longer than tenant {tenant:?}'s compile_time quota ({limit:?}) allows; it was given up")]
    TooSlow {
        /// The tenant.
        tenant: String,
        /// Its `compile_time` quota.
        limit: std::time::Duration,
    },
    /// The compile ended without a result (its thread could not start, or panicked).
    #[error("compiling it ended without a result")]
    Ended(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Not a component wasmtime can compile.
    #[error("not a valid WebAssembly component")]
    Invalid(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Whose component a compile is, and how long it may take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Budget {
    /// The tenant (`None`: the service's own).
    pub tenant: Option<String>,
    /// Its `compile_time` quota (`None`: no limit).
    pub limit: Option<Duration>,
}

/// The compile slots, each tenant's turn, and the components compiled ahead.
pub(super) struct Compiler {
    slots: Arc<Semaphore>,
    turns: Mutex<HashMap<Option<String>, Arc<Semaphore>>>,
    /// By tenant and digest: a tenant links only what was read from its
    /// own account.
    ahead: Mutex<HashMap<(Option<String>, String), Kept>>,
}

/// A component compiled ahead, and since when it is kept.
struct Kept {
    compiled: (Component, CacheUse),
    since: Instant,
}

impl Compiler {
    /// As many slots as cores, at least two: with one, a tenant's huge
    /// component would hold up everyone's.
    pub(super) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Compiler {
            slots: Arc::new(Semaphore::new(cores.max(2))),
            turns: Mutex::default(),
            ahead: Mutex::default(),
        }
    }

    /// The component compiled ahead for `tenant` from bytes of SHA-256
    /// `digest`, if kept.
    pub(super) fn ahead(
        &self,
        tenant: &Option<String>,
        digest: &str,
    ) -> Option<(Component, CacheUse)> {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        ahead.retain(|_, kept| kept.since.elapsed() < KEPT_AHEAD);
        ahead
            .get(&(tenant.clone(), digest.to_string()))
            .map(|kept| kept.compiled.clone())
    }

    /// Keeps `component` for the apply that will need it, and lets go of
    /// those kept too long (their apply did not come).
    pub(super) fn keep_ahead(
        &self,
        tenant: Option<String>,
        digest: String,
        compiled: (Component, CacheUse),
    ) {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        ahead.retain(|_, kept| kept.since.elapsed() < KEPT_AHEAD);
        let since = Instant::now();
        ahead.insert((tenant, digest), Kept { compiled, since });
    }

    /// Compiles `bytes` (of SHA-256 `digest`) within `budget`, or loads
    /// them from `cache`.
    pub(super) async fn compile(
        &self,
        engine: &Engine,
        cache: &ComponentCache,
        bytes: Arc<[u8]>,
        digest: String,
        budget: &Budget,
    ) -> Result<(Component, CacheUse), CompileError> {
        let turn = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            turns
                .entry(budget.tenant.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(1)))
                .clone()
        };
        // The quota counts the compile alone: waiting for the tenant's
        // earlier compile (one given up included) or for a slot does not.
        let turn = turn.acquire_owned().await.expect("turns are never closed");
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("slots are never closed");
        let (done, result) = oneshot::channel();
        let (engine, cache) = (engine.clone(), cache.clone());
        let given_up = Arc::new(AtomicBool::new(false));
        let giving_up = given_up.clone();
        std::thread::Builder::new()
            .name("natsapp-compile".into())
            .spawn(move || {
                lower_priority();
                let _held = (turn, slot);
                let compiled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    cache.load_or_compile_unless(&engine, &bytes, &digest, &given_up)
                }));
                let _ = done.send(match compiled {
                    Ok(compiled) => compiled.map_err(|e| CompileError::Invalid(e.into())),
                    Err(panic) => Err(CompileError::Ended(panic_message(&*panic).into())),
                });
            })
            .map_err(|e| CompileError::Ended(Box::new(e)))?;
        let result = match budget.limit {
            None => result.await,
            Some(limit) => tokio::time::timeout(limit, result).await.map_err(|_| {
                giving_up.store(true, Ordering::Relaxed);
                CompileError::TooSlow {
                    tenant: budget.tenant.clone().unwrap_or_default(),
                    limit,
                }
            })?,
        };
        result.expect("the compile thread sends its result, a panic included")
    }
}

/// What a panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => format!("the compiler panicked: {s}"),
        (None, Some(s)) => format!("the compiler panicked: {s}"),
        (None, None) => "the compiler panicked".to_string(),
    }
}

/// Sets the calling thread's nice value to [`NICE`]. On Linux a nice
/// value is a thread's own, so this leaves the rest of the process alone.
pub(super) fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority only read their arguments.
        let tid = unsafe { libc::gettid() };
        let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) };
        if failed != 0 {
            tracing::debug!(
                "cannot lower a compile thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Runs wasmtime's parallel compilation on threads at [`NICE`] too. The
/// first call in a process sets the pool up; later calls change nothing.
pub(super) fn lower_parallel_compilation() {
    let built = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("natsapp-compile-{i}"))
        .start_handler(|_| lower_priority())
        .build_global();
    if let Err(e) = built {
        tracing::debug!("compile threads were set up before: {e}");
    }
}
