//! Loading a handler component: compile once, link against the host's
//! imports and check the export, so a component that does not implement the
//! world fails before the first pull with a message naming what is missing.

use super::cache::CacheUse;
use super::compile::{Budget, CompileError};
use super::host::{HostState, ServicePre};
use super::WasmRuntime;
use crate::config::ComponentSource;
use std::path::Path;
use wasmtime::component::Component;

/// The WIT package version this runtime implements; components built
/// against any earlier 0.1 version link to it too.
pub const PACKAGE: &str = "natsapp:handler@0.1.3";
/// The export a handler must provide.
pub const HANDLER_EXPORT: &str = "natsapp:handler/handler@0.1.3";
/// The export a handler may provide (0.1.3), and its function: run on
/// instances made ahead of need, before their message.
pub const WARM_UP_EXPORT: (&str, &str) = ("natsapp:handler/warm-up@0.1.3", "warm");

/// Import prefixes the host provides.
const PROVIDED: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/",
    "wasi:config/store@0.2.0-rc.1",
    "natsapp:handler/types@0.1.",
    "natsapp:handler/publisher@0.1.",
    "natsapp:handler/keyvalue@0.1.",
];

/// A compiled handler and the SHA-256 of the file it came from.
pub struct Loaded {
    /// Pre-instantiated against the host's imports.
    pub pre: ServicePre<HostState>,
    /// The file's SHA-256 in hex: a reload replaces a subscriber whose
    /// component bytes changed.
    pub digest: String,
    /// The interfaces it imports, as named in the component.
    pub imports: Vec<String>,
}

/// A component that cannot serve as a handler.
#[derive(Debug, thiserror::Error)]
#[error("component {from} (subscriber {subscriber:?})")]
pub struct ComponentError {
    /// The subscriber.
    pub subscriber: String,
    /// Where it comes from.
    pub from: Box<ComponentSource>,
    /// What is wrong and how to fix it.
    #[source]
    pub problem: ComponentProblem,
}

/// What is wrong with a component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentProblem {
    /// The file cannot be read.
    #[error("cannot read it")]
    Unreadable(#[source] std::io::Error),
    /// The object cannot be read from its object store, or is not the one named.
    #[error(transparent)]
    Object(Box<crate::nats::objects::ObjectError>),
    /// A core module where a component belongs.
    #[error("this is a core WebAssembly module, not a component: build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)")]
    CoreModule,
    /// Not a component wasmtime can compile.
    #[error("not a valid WebAssembly component")]
    Invalid(#[source] BoxError),
    /// It imports interfaces the host does not provide.
    #[error("imports {}, which the runtime does not provide", .names.join(", "))]
    UnknownImports {
        /// The imports, with the version the runtime provides where it has one.
        names: Vec<String>,
        /// What linking said.
        #[source]
        source: BoxError,
    },
    /// Its imports have other types than the host's.
    #[error("its imports do not match what the runtime provides")]
    ImportsMismatch(#[source] BoxError),
    /// Compiling it on the compile threads failed or took too long.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// It does not export the handler.
    #[error("does not export {HANDLER_EXPORT} ({hint})")]
    NoHandler {
        /// What it exports instead.
        hint: String,
        /// What the bindings said.
        #[source]
        source: BoxError,
    },
}

impl ComponentProblem {
    /// Whether the compiler, not the component, failed: its thread could
    /// not start, or it panicked.
    pub fn is_compiler_failure(&self) -> bool {
        matches!(self, ComponentProblem::Compile(CompileError::Ended(_)))
    }
}

/// Makes `subscriber`'s component, `from`, the subject of a problem.
fn failing<'a>(
    subscriber: &'a str,
    from: &'a ComponentSource,
) -> impl Fn(ComponentProblem) -> ComponentError + 'a {
    move |problem| ComponentError {
        subscriber: subscriber.to_string(),
        from: Box::new(from.clone()),
        problem,
    }
}

/// An error from wasmtime, with its chain of causes.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl WasmRuntime {
    /// Compiles the file `path` and pre-instantiates it against the host's imports.
    pub fn load(&self, path: &Path, subscriber: &str) -> Result<Loaded, ComponentError> {
        let from = ComponentSource::File(path.to_path_buf());
        match std::fs::read(path) {
            Ok(bytes) => self.load_bytes(&bytes, &from, subscriber),
            Err(e) => Err(ComponentError {
                subscriber: subscriber.to_string(),
                from: Box::new(from),
                problem: ComponentProblem::Unreadable(e),
            }),
        }
    }

    /// Compiles `bytes`, read `from` a file or an object store, and
    /// pre-instantiates them against the host's imports.
    pub fn load_bytes(
        &self,
        bytes: &[u8],
        from: &ComponentSource,
        subscriber: &str,
    ) -> Result<Loaded, ComponentError> {
        let fail = failing(subscriber, from);
        if bytes.starts_with(b"\0asm\x01\0\0\0") {
            return Err(fail(ComponentProblem::CoreModule));
        }
        let started = std::time::Instant::now();
        let digest = crate::config::sha256_hex(bytes);
        let (component, cached) = self
            .cache
            .load_or_compile(&self.engine, bytes, &digest)
            .map_err(|e| fail(ComponentProblem::Invalid(e.into())))?;
        self.link(component, cached, digest, from, subscriber, started)
    }

    /// Like [`load_bytes`](Self::load_bytes), compiling on the compile
    /// threads within `budget` (see [`compile`](super::compile)), or
    /// linking a component compiled ahead.
    pub async fn load_within(
        &self,
        bytes: Vec<u8>,
        from: &ComponentSource,
        subscriber: &str,
        budget: &Budget,
    ) -> Result<Loaded, ComponentError> {
        let fail = failing(subscriber, from);
        let started = std::time::Instant::now();
        let digest = crate::config::sha256_hex(&bytes);
        let (component, cached) = match self.compiler.ahead(&budget.tenant, &digest) {
            Some(ahead) => ahead,
            None => self
                .compile_within(bytes, digest.clone(), budget)
                .await
                .map_err(fail)?,
        };
        self.link(component, cached, digest, from, subscriber, started)
    }

    /// The component of SHA-256 `digest` linked, when it was compiled
    /// ahead for the same tenant and is kept: its bytes need not be read
    /// again.
    pub fn load_ahead(
        &self,
        digest: &str,
        from: &ComponentSource,
        subscriber: &str,
        budget: &Budget,
    ) -> Option<Result<Loaded, ComponentError>> {
        let started = std::time::Instant::now();
        let (component, cached) = self.compiler.ahead(&budget.tenant, digest)?;
        Some(self.link(
            component,
            cached,
            digest.to_string(),
            from,
            subscriber,
            started,
        ))
    }

    /// Compiles `bytes` within `budget` before an apply needs them, keeping
    /// the result for it; returns their SHA-256.
    pub async fn compile_ahead(
        &self,
        bytes: Vec<u8>,
        budget: &Budget,
    ) -> Result<String, ComponentProblem> {
        let digest = crate::config::sha256_hex(&bytes);
        if self.compiler.ahead(&budget.tenant, &digest).is_none() {
            let compiled = self.compile_within(bytes, digest.clone(), budget).await?;
            self.compiler
                .keep_ahead(budget.tenant.clone(), digest.clone(), compiled);
        }
        Ok(digest)
    }

    async fn compile_within(
        &self,
        bytes: Vec<u8>,
        digest: String,
        budget: &Budget,
    ) -> Result<(Component, CacheUse), ComponentProblem> {
        if bytes.starts_with(b"\0asm\x01\0\0\0") {
            return Err(ComponentProblem::CoreModule);
        }
        Ok(self
            .compiler
            .compile(&self.engine, &self.cache, bytes.into(), digest, budget)
            .await?)
    }

    /// Pre-instantiates `component` against the host's imports and checks
    /// that it exports the handler.
    fn link(
        &self,
        component: Component,
        cached: CacheUse,
        digest: String,
        from: &ComponentSource,
        subscriber: &str,
        started: std::time::Instant,
    ) -> Result<Loaded, ComponentError> {
        let fail = failing(subscriber, from);
        let ty = component.component_type();
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            let unknown: Vec<String> = ty
                .imports(&self.engine)
                .map(|(name, _)| name)
                .filter(|name| !PROVIDED.iter().any(|p| name.starts_with(p)))
                .map(|name| {
                    if name.starts_with("natsapp:handler/") {
                        format!("{name} (this runtime provides {PACKAGE})")
                    } else {
                        name.to_string()
                    }
                })
                .collect();
            if unknown.is_empty() {
                fail(ComponentProblem::ImportsMismatch(e.into()))
            } else {
                fail(ComponentProblem::UnknownImports {
                    names: unknown,
                    source: e.into(),
                })
            }
        })?;
        let pre = ServicePre::new(instance_pre).map_err(|e| {
            let exports: Vec<String> = ty
                .exports(&self.engine)
                .map(|(name, _)| name.to_string())
                .collect();
            let hint = match exports
                .iter()
                .find(|n| n.starts_with("natsapp:handler/handler"))
            {
                Some(other) => {
                    format!("it exports {other}, built against another version of the package")
                }
                None if exports.is_empty() => "it exports nothing".to_string(),
                None => format!("its exports: {}", exports.join(", ")),
            };
            fail(ComponentProblem::NoHandler {
                hint,
                source: e.into(),
            })
        })?;
        let counted = match cached {
            CacheUse::Hit => 0,
            CacheUse::Miss => 1,
            CacheUse::Off => 2,
        };
        self.loads[counted].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(subscriber, component = %from, sha256 = %digest, ?cached, "component ready in {:?}", started.elapsed());
        let imports = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        Ok(Loaded {
            pre,
            digest,
            imports,
        })
    }
}
