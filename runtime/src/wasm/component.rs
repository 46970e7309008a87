//! Loading a handler component: compile once, link against the host's
//! imports and check the export, so a component that does not implement the
//! world fails before the first pull with a message naming what is missing.

use super::host::{HostState, ServicePre};
use super::WasmRuntime;
use std::path::Path;

/// The WIT package version this runtime implements; components built
/// against any earlier 0.1 version link to it too.
pub const PACKAGE: &str = "natsapp:handler@0.1.1";
/// The export a handler must provide.
pub const HANDLER_EXPORT: &str = "natsapp:handler/handler@0.1.1";

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
#[error("component {} (subscriber {subscriber:?}): {message}", path.display())]
pub struct ComponentError {
    /// The subscriber.
    pub subscriber: String,
    /// The file.
    pub path: std::path::PathBuf,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl WasmRuntime {
    /// Compiles `path` and pre-instantiates it against the host's imports.
    pub fn load(&self, path: &Path, subscriber: &str) -> Result<Loaded, ComponentError> {
        let fail = |message: String| ComponentError {
            subscriber: subscriber.to_string(),
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        if bytes.starts_with(b"\0asm\x01\0\0\0") {
            return Err(fail(
                "this is a core WebAssembly module, not a component: build for wasm32-wasip2 \
                 (or wrap it with `wasm-tools component new`)"
                    .into(),
            ));
        }
        let started = std::time::Instant::now();
        let digest = crate::config::sha256_hex(&bytes);
        let (component, cached) = self
            .cache
            .load_or_compile(&self.engine, &bytes, &digest)
            .map_err(|e| fail(format!("not a valid WebAssembly component: {e:#}")))?;
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
                fail(format!(
                    "its imports do not match what the runtime provides: {e:#}"
                ))
            } else {
                fail(format!(
                    "imports {}, which the runtime does not provide",
                    unknown.join(", ")
                ))
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
            fail(format!("does not export {HANDLER_EXPORT} ({hint}): {e:#}"))
        })?;
        let counted = match cached {
            super::cache::CacheUse::Hit => 0,
            super::cache::CacheUse::Miss => 1,
            super::cache::CacheUse::Off => 2,
        };
        self.loads[counted].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(subscriber, component = %path.display(), ?cached, "component ready in {:?}", started.elapsed());
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
