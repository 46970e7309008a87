//! Step 1a of reading service.toml: `[service] include` — more
//! `[[tenants]]`, `[[subscribers]]`, `[[streams]]`, `[[buckets]]`,
//! `[[publishers]]` and `[[schedules]]` from other files, so each tenant can
//! own a file.
//! Patterns resolve against the including file's folder (`*` and `?`
//! match within a name); a pattern that matches nothing is fine unless it
//! names a file without wildcards. Relative paths inside an
//! included file resolve against that file's folder.

use super::interpolate::interpolate;
use super::raw::{RawBucket, RawFile, RawInclude, RawIncludeEntry, RawStream};
use super::{interpolation_error, syntax_error, ConfigError, Problem};
use std::path::{Path, PathBuf};

/// Reads every file `raw.service.include` names and appends what it
/// declares to `raw`, marking where each came from.
pub(super) fn read_includes(
    path: &Path,
    raw: &mut RawFile,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let patterns: Vec<(usize, String)> = raw
        .service
        .include
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| match entry {
            RawIncludeEntry::Files(pattern) => Some((i, pattern.clone())),
            RawIncludeEntry::Kv(_) => None,
        })
        .collect();
    for (i, pattern) in &patterns {
        for file in matches(dir, pattern).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![Problem {
                key: format!("service.include[{i}]"),
                message,
            }],
        })? {
            let included = read(&file, env)?;
            let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
            for mut t in included.tenants {
                if let Some(c) = &mut t.nats.credentials {
                    *c = rebase(&base, c);
                }
                if let Some(tls) = &mut t.nats.tls {
                    for p in [&mut tls.ca, &mut tls.cert, &mut tls.key]
                        .into_iter()
                        .flatten()
                    {
                        *p = rebase(&base, p);
                    }
                }
                t.origin = Some(file.clone());
                raw.tenants.push(t);
            }
            for mut s in included.subscribers {
                if let Some(path) = s.component.path_mut() {
                    *path = rebase(&base, path);
                }
                s.origin = Some(file.clone());
                raw.subscribers.push(s);
            }
            for mut e in included.endpoints {
                if let Some(path) = e.component.path_mut() {
                    *path = rebase(&base, path);
                }
                e.origin = Some(file.clone());
                raw.endpoints.push(e);
            }
            add_streams_and_buckets(raw, included.streams, included.buckets, &file);
            for mut p in included.publishers {
                p.origin = Some(file.clone());
                raw.publishers.push(p);
            }
            for mut s in included.schedules {
                s.origin = Some(file.clone());
                raw.schedules.push(s);
            }
        }
    }
    Ok(())
}

/// Appends `streams` and `buckets`, from `origin`, to `raw`.
pub(super) fn add_streams_and_buckets(
    raw: &mut RawFile,
    streams: Vec<RawStream>,
    buckets: Vec<RawBucket>,
    origin: &Path,
) {
    for mut st in streams {
        st.origin = Some(origin.to_path_buf());
        raw.streams.push(st);
    }
    for mut b in buckets {
        b.origin = Some(origin.to_path_buf());
        raw.buckets.push(b);
    }
}

fn rebase(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn read(file: &Path, env: &impl Fn(&str) -> Option<String>) -> Result<RawInclude, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let text = interpolate(&text, env).map_err(|e| interpolation_error(file, &text, e))?;
    let de = toml::Deserializer::parse(&text).map_err(|e| syntax_error(file, &text, "", &e))?;
    serde_path_to_error::deserialize(de)
        .map_err(|e| syntax_error(file, &text, &e.path().to_string(), e.inner()))
}

/// The files `pattern` names under `dir`, sorted.
fn matches(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = rebase(dir, Path::new(pattern));
    let text = full.to_string_lossy();
    let literal = !pattern.contains(['*', '?', '[']);
    let mut files: Vec<PathBuf> = glob::glob(&text)
        .map_err(|e| format!("invalid pattern {pattern:?}: {e}"))?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if literal && files.is_empty() {
        return Err(format!("{} does not exist", full.display()));
    }
    Ok(files)
}
