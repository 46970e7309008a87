//! Builds the Python, JavaScript and C guests side by side, each at most
//! once per change of what it is built from, on this machine.
//!
//! A built component is kept in a folder outside the clone, named by the
//! SHA-256 of its sources, its SDK, the WIT package and the versions of the
//! tools that build it: a fresh clone (as CI makes) copies what an earlier
//! build already made instead of spending a minute in componentize-py and
//! componentize-js again, and any change to an input builds anew. Location:
//! `NATSAPP_GUEST_CACHE`, else `$XDG_CACHE_HOME/natsapp-wasm-guests`, else
//! `~/.cache/natsapp-wasm-guests`; `NATSAPP_GUEST_CACHE=off` always builds.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One component built by an external tool.
pub struct Recipe {
    /// What it is, for error messages: "the Python guest guests/python/noop".
    pub what: String,
    /// Files and folders the component is built from (folders walked whole,
    /// without `node_modules` and `__pycache__`).
    pub inputs: Vec<PathBuf>,
    /// The versions of the tools that build it, as they print them.
    pub tools: Vec<String>,
    /// The build, which writes `out`.
    pub command: Command,
    /// Where the component is written.
    pub out: PathBuf,
    /// What to install when the build fails.
    pub hint: &'static str,
}

/// Where built components are kept, or `None` when the cache is off.
fn cache_dir() -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=NATSAPP_GUEST_CACHE");
    match std::env::var_os("NATSAPP_GUEST_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|base| base.join("natsapp-wasm-guests")),
    }
}

/// The first line a tool prints for `args` (its version), named by the
/// tool's file name so that clones in other folders share entries.
pub fn tool_version(tool: &Path, args: &[&str]) -> String {
    let name = tool.file_name().unwrap_or_default().to_string_lossy();
    match Command::new(tool).args(args).output() {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            format!("{name}: {}", text.lines().next().unwrap_or_default())
        }
        Err(e) => format!("{name}: {e}"),
    }
}

/// Builds every recipe, as many at once as there are cores; panics with
/// the first failure's output. Inputs are hashed by their path under
/// `root`, so clones in other folders share entries.
pub fn build_all(root: &Path, recipes: Vec<Recipe>) {
    let dir = cache_dir();
    if let Some(d) = &dir {
        // A cache that cannot be made only costs time: build without it.
        let _ = std::fs::create_dir_all(d);
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = AtomicUsize::new(0);
    let recipes: Vec<Mutex<Recipe>> = recipes.into_iter().map(Mutex::new).collect();
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers.min(recipes.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(recipe) = recipes.get(i) else { break };
                let mut recipe = recipe.lock().unwrap();
                if let Err(e) = build_one(&mut recipe, root, dir.as_deref()) {
                    failures.lock().unwrap().push(e);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    if let Some(first) = failures.first() {
        panic!("{first}");
    }
}

fn build_one(recipe: &mut Recipe, root: &Path, dir: Option<&Path>) -> Result<(), String> {
    for input in &recipe.inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    let cached = dir.map(|d| d.join(format!("{}.wasm", key(recipe, root))));
    if let Some(c) = &cached {
        if std::fs::copy(c, &recipe.out).is_ok() {
            return Ok(());
        }
    }
    let output = recipe
        .command
        .output()
        .map_err(|e| format!("cannot build {}: {e} ({})", recipe.what, recipe.hint))?;
    if !output.status.success() {
        return Err(format!(
            "building {} failed ({}):\n{}{}",
            recipe.what,
            recipe.hint,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if let Some(c) = &cached {
        // Written beside the entry and renamed, so a concurrent build
        // never copies half a component.
        let partial = c.with_extension(format!("partial.{}", std::process::id()));
        if std::fs::copy(&recipe.out, &partial).is_ok() {
            let _ = std::fs::rename(&partial, c);
        }
        let _ = std::fs::remove_file(&partial);
    }
    Ok(())
}

/// SHA-256 (hex) of the recipe's tools and every input file's path (under
/// `root`) and bytes.
fn key(recipe: &Recipe, root: &Path) -> String {
    let mut hash = Sha256::new();
    for tool in &recipe.tools {
        hash.update(tool.as_bytes());
        hash.update([0]);
    }
    for input in &recipe.inputs {
        hash_path(&mut hash, root, input);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_path(hash: &mut Sha256, root: &Path, path: &Path) {
    let relative = path.strip_prefix(root).unwrap_or(path);
    hash.update(relative.as_os_str().as_encoded_bytes());
    hash.update([0]);
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for entry in entries {
            let name = entry.file_name().unwrap_or_default();
            if name != "node_modules" && name != "__pycache__" {
                hash_path(hash, root, &entry);
            }
        }
    } else {
        let bytes = std::fs::read(path).unwrap_or_default();
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
}
