//! Rebuild and reload when a source of the project changes. The project's
//! files are polled (their size and modification time): a handler project
//! has tens of files, and a poll behaves the same on every file system and
//! in containers, where inotify often does not.

use super::Build;
use natsapp_wasm::reload::Reloader;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Folders that hold build output or installed packages, not sources
/// (besides every folder whose name starts with a dot: .git, .venv,
/// .pytest_cache, .build).
const NOT_SOURCES: &[&str] = &["target", "node_modules", "deps", "__pycache__", "venv"];

/// Files a build writes itself.
const BUILD_OUTPUTS: &[&str] = &["Cargo.lock"];

type Snapshot = BTreeMap<PathBuf, (SystemTime, u64)>;

/// Every source file under `dir` with its modification time and size.
fn snapshot(dir: &Path) -> Snapshot {
    let mut files = Snapshot::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if !name.starts_with('.') && !NOT_SOURCES.contains(&name.as_ref()) {
                    pending.push(path);
                }
            } else if !name.ends_with(".wasm") && !BUILD_OUTPUTS.contains(&name.as_ref()) {
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                files.insert(path, (modified, meta.len()));
            }
        }
    }
    files
}

/// The files that differ between two snapshots.
fn changed(before: &Snapshot, after: &Snapshot) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    paths.extend(before.keys().filter(|p| !after.contains_key(*p)).cloned());
    paths
}

/// Polls `dir` every `poll`; once a change has settled (no further change
/// for one poll), rebuilds and, when the build succeeds, reloads.
pub async fn rebuild_on_change(dir: PathBuf, build: Build, reloader: Reloader, poll: Duration) {
    let mut seen = snapshot(&dir);
    loop {
        tokio::time::sleep(poll).await;
        let now = snapshot(&dir);
        let mut paths = changed(&seen, &now);
        if paths.is_empty() {
            continue;
        }
        // Editors write a file in steps, and a change often touches several.
        let mut settled = now;
        loop {
            tokio::time::sleep(poll).await;
            let again = snapshot(&dir);
            if again == settled {
                break;
            }
            paths.extend(changed(&settled, &again));
            settled = again;
        }
        paths.sort();
        paths.dedup();
        // What changes from here on, during the build too, is the next change.
        seen = settled;
        let shown: Vec<String> = paths
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap_or(p).display().to_string())
            .collect();
        tracing::info!("dev: changed: {}", shown.join(", "));
        if build.run().await {
            match reloader.reload().await {
                Ok(summary) => tracing::info!("dev: reloaded: {summary}"),
                Err(e) => tracing::error!(
                    "dev: the reload was refused: {}",
                    natsapp_wasm::error::ErrorChain(e.as_ref())
                ),
            }
        } else {
            tracing::warn!("dev: still running the previous build");
        }
    }
}
