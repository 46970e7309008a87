//! Compiled components on disk, so a component is compiled once per change
//! rather than at every start (a Python or JavaScript component takes
//! seconds to compile; loading its compiled form takes milliseconds).
//!
//! An entry is named by the SHA-256 of the component's bytes and a hash of
//! the engine's compatibility settings (wasmtime version and
//! configuration), so a changed component or a new runtime never loads a
//! stale entry. Location: `NATSAPP_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/natsapp-wasm`, else `~/.cache/natsapp-wasm`;
//! `NATSAPP_CACHE_DIR=off` disables it.
//!
//! Loading an entry runs the native code in it, so the folder must be the
//! running user's and writable by no one else: otherwise the runtime
//! refuses to start ([`ComponentCache::verify`]).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where compiled components are kept.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    /// The cache at the location the environment names (see the module docs).
    pub fn from_env() -> Self {
        Self::locate(|name| std::env::var_os(name).map(PathBuf::from))
    }

    fn locate(env: impl Fn(&str) -> Option<PathBuf>) -> Self {
        let dir = match env("NATSAPP_CACHE_DIR") {
            Some(p) if p.as_os_str() == "off" => None,
            Some(p) if !p.as_os_str().is_empty() => Some(p),
            _ => env("XDG_CACHE_HOME")
                .filter(|p| p.is_absolute())
                .or_else(|| env("HOME").map(|h| h.join(".cache")))
                .map(|base| base.join("natsapp-wasm")),
        };
        ComponentCache { dir }
    }

    /// A cache in `dir`, or none.
    pub fn at(dir: Option<PathBuf>) -> Self {
        ComponentCache { dir }
    }

    /// The folder, when caching is on.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Refuses a cache folder another user could write code into: it must
    /// be owned by the running user and not writable by group or others.
    /// A missing folder is fine (it is created private when first used).
    pub fn verify(&self) -> Result<(), UntrustedCache> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let meta = match std::fs::metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(UntrustedCache::Uninspectable {
                    dir: dir.clone(),
                    source,
                })
            }
        };
        trust(dir, &meta)
    }

    /// Removes every entry; returns how many were removed.
    pub fn clear(&self) -> std::io::Result<usize> {
        let Some(dir) = &self.dir else { return Ok(0) };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "cwasm") {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn entry(&self, engine: &Engine, content: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        Some(dir.join(format!("{content}-{:016x}.cwasm", engine_hash.finish())))
    }

    /// The compiled form of `bytes`, whose SHA-256 is `content`
    /// ([`sha256_hex`](crate::config::sha256_hex)): from the cache when
    /// present, else compiled and stored. Cache failures are logged and
    /// never fatal.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        content: &str,
    ) -> wasmtime::Result<(Component, CacheUse)> {
        self.load_or_compile_unless(engine, bytes, content, &AtomicBool::new(false))
    }

    /// Like [`load_or_compile`](Self::load_or_compile), storing nothing
    /// when `given_up` is set by the time the compile ends: a compile
    /// given up past its quota must not turn into a cache hit for the
    /// same component tried again.
    pub fn load_or_compile_unless(
        &self,
        engine: &Engine,
        bytes: &[u8],
        content: &str,
        given_up: &AtomicBool,
    ) -> wasmtime::Result<(Component, CacheUse)> {
        let Some(entry) = self.entry(engine, content) else {
            return Ok((Component::new(engine, bytes)?, CacheUse::Off));
        };
        if entry.exists() {
            // SAFETY: entries are written only by `serialize` below, into a
            // folder of the user's; wasmtime checks the engine compatibility
            // recorded in the file before using it.
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(c) => return Ok((c, CacheUse::Hit)),
                Err(e) => {
                    tracing::warn!(entry = %entry.display(), "ignoring an unusable compiled component: {e:#}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if given_up.load(Ordering::Relaxed) {
            return Ok((component, CacheUse::Miss));
        }
        if let Err(e) = store(&entry, &component) {
            tracing::warn!(entry = %entry.display(), "cannot cache the compiled component: {e:#}");
        } else if given_up.load(Ordering::Relaxed) {
            // Given up while it was stored.
            let _ = std::fs::remove_file(&entry);
        }
        Ok((component, CacheUse::Miss))
    }
}

/// What to do about a refused cache folder.
const CACHE_ADVICE: &str = "loading it would run native code from it (fix its owner and mode, choose another folder with NATSAPP_CACHE_DIR, or set NATSAPP_CACHE_DIR=off)";

/// A cache folder that could hold code written by someone else.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedCache {
    /// Its owner and mode cannot be read.
    #[error("refusing the compiled-component cache {}: cannot inspect it; {CACHE_ADVICE}", dir.display())]
    Uninspectable {
        /// The folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another user owns it.
    #[error("refusing the compiled-component cache {}: it is owned by uid {owner}, not by the running user (uid {me}); {CACHE_ADVICE}", dir.display())]
    OtherOwner {
        /// The folder.
        dir: PathBuf,
        /// Its owner.
        owner: u32,
        /// The running user.
        me: u32,
    },
    /// Group or others may write to it.
    #[error("refusing the compiled-component cache {}: its mode {mode:o} lets other users write to it; {CACHE_ADVICE}", dir.display())]
    Writable {
        /// The folder.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

#[cfg(unix)]
fn trust(dir: &Path, meta: &std::fs::Metadata) -> Result<(), UntrustedCache> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(UntrustedCache::OtherOwner {
            dir: dir.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(UntrustedCache::Writable {
            dir: dir.to_path_buf(),
            mode: meta.mode() & 0o777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn trust(_dir: &Path, _meta: &std::fs::Metadata) -> Result<(), UntrustedCache> {
    Ok(())
}

/// Whether a load used the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Loaded compiled code.
    Hit,
    /// Compiled and stored.
    Miss,
    /// Caching is off.
    Off,
}

fn store(entry: &Path, component: &Component) -> anyhow::Result<()> {
    let dir = entry.parent().expect("entries live in a folder");
    create_private_dir(dir)?;
    let compiled = component.serialize()?;
    let tmp = tempfile_in(dir)?;
    std::fs::write(&tmp, compiled)?;
    std::fs::rename(&tmp, entry).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

/// Creates `dir` (and its parents) readable and writable by the user only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// A fresh name in `dir` for writing before the rename that publishes it.
fn tempfile_in(dir: &Path) -> std::io::Result<PathBuf> {
    let unique = format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    Ok(dir.join(unique.replace(['(', ')'], "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<PathBuf> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| PathBuf::from(v))
        }
    }

    #[test]
    fn location() {
        let c = ComponentCache::locate(env(&[("NATSAPP_CACHE_DIR", "/c"), ("HOME", "/h")]));
        assert_eq!(c.dir(), Some(Path::new("/c")));
        let c = ComponentCache::locate(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]));
        assert_eq!(c.dir(), Some(Path::new("/x/natsapp-wasm")));
        let c = ComponentCache::locate(env(&[("HOME", "/h")]));
        assert_eq!(c.dir(), Some(Path::new("/h/.cache/natsapp-wasm")));
        let c = ComponentCache::locate(env(&[("NATSAPP_CACHE_DIR", "off"), ("HOME", "/h")]));
        assert_eq!(c.dir(), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_others_can_write_to_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::at(Some(dir.path().to_path_buf()));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        cache.verify().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = cache.verify().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("refusing the compiled-component cache {}: its mode 777 lets other users write to it", dir.path().display())),
            "{e}"
        );
        let missing = ComponentCache::at(Some(dir.path().join("not-yet")));
        missing.verify().unwrap();
    }

    #[test]
    fn compiles_once_then_loads_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::at(Some(dir.path().to_path_buf()));
        let engine = Engine::default();
        let wasm = b"\0asm\x0d\0\x01\0"; // the smallest component: empty
        let digest = crate::config::sha256_hex(wasm);
        let (_, first) = cache.load_or_compile(&engine, wasm, &digest).unwrap();
        let (_, second) = cache.load_or_compile(&engine, wasm, &digest).unwrap();
        assert_eq!((first, second), (CacheUse::Miss, CacheUse::Hit));
        // A corrupt entry is replaced, not fatal.
        let entry = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&entry, b"garbage").unwrap();
        assert_eq!(
            cache.load_or_compile(&engine, wasm, &digest).unwrap().1,
            CacheUse::Miss
        );
        assert_eq!(
            cache.load_or_compile(&engine, wasm, &digest).unwrap().1,
            CacheUse::Hit
        );
        assert_eq!(cache.clear().unwrap(), 1);
        assert_eq!(
            cache.load_or_compile(&engine, wasm, &digest).unwrap().1,
            CacheUse::Miss
        );
    }
}
