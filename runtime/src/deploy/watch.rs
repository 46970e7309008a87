//! Reading and watching the keys that hold service fragments: the
//! fragments there now (read once at start, so a replica starts from NATS
//! alone), then every change after, as every replica sees it. A bucket
//! that does not exist yet holds nothing: the watch waits for it.

use crate::config::{Fragment, FragmentKey, KvKeys};
use crate::error::ErrorChain;
use crate::nats::unavailable;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a watch waits before looking for its bucket, or watching
/// again after its watch ended.
const RETRY: Duration = Duration::from_secs(1);
/// How often the keys are read anew besides the watch: a watch whose
/// consumer stalled (its node gone) must not keep a replica on an old
/// revision.
const RESYNC: Duration = Duration::from_secs(5);

/// A change of one key: its new fragment, or `None` when it was deleted.
#[derive(Debug, Clone)]
pub struct Change {
    /// The key.
    pub key: FragmentKey,
    /// Its new fragment (`None`: deleted or purged).
    pub fragment: Option<Fragment>,
}

/// Why the fragments of a bucket could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the fragments in key-value bucket {bucket:?}")]
pub struct ReadError {
    /// The bucket.
    pub bucket: String,
    /// Why.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn fragment(tenant: &Option<String>, entry: kv::Entry) -> Option<Fragment> {
    (entry.operation == kv::Operation::Put).then(|| Fragment {
        key: FragmentKey {
            tenant: tenant.clone(),
            bucket: entry.bucket,
            key: entry.key,
        },
        revision: entry.revision,
        text: String::from_utf8_lossy(&entry.value).into_owned(),
    })
}

/// The fragments `source` holds now, read through `js` (the identity of
/// `tenant`, or the platform's): none when its bucket does not exist yet.
pub async fn read(
    js: &jetstream::Context,
    tenant: &Option<String>,
    source: &KvKeys,
) -> Result<Vec<Fragment>, ReadError> {
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| ReadError {
        bucket: source.bucket.clone(),
        source: e,
    };
    let store = match js.get_key_value(&source.bucket).await {
        Ok(store) => store,
        Err(e) if unavailable::stream_missing(&e) => return Ok(Vec::new()),
        Err(e) => return Err(fail(Box::new(e))),
    };
    let mut keys = store.keys().await.map_err(|e| fail(Box::new(e)))?;
    let mut fragments = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| fail(Box::new(e)))?;
        if !source.matches(&key) {
            continue;
        }
        if let Some(entry) = store.entry(key).await.map_err(|e| fail(Box::new(e)))? {
            fragments.extend(fragment(tenant, entry));
        }
    }
    Ok(fragments)
}

/// Sends every change of `source` after the revisions in `known` (key →
/// revision) to `changes`, read through `js`; waits for the bucket when it
/// does not exist yet, and watches again when a watch ends. Returns when
/// `changes` is closed.
pub async fn watch(
    js: jetstream::Context,
    tenant: Option<String>,
    source: KvKeys,
    mut known: HashMap<String, u64>,
    changes: mpsc::UnboundedSender<Change>,
) {
    let mut waited = false;
    loop {
        if changes.is_closed() {
            return;
        }
        let store = match js.get_key_value(&source.bucket).await {
            Ok(store) => store,
            Err(e) => {
                if !waited {
                    tracing::info!(bucket = %source.bucket, "waiting for the key-value bucket of fragments: {}", ErrorChain(&e));
                    waited = true;
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut entries = match store.watch_with_history(&source.keys).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(bucket = %source.bucket, "cannot watch the fragments: {}", ErrorChain(&e));
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC, RESYNC);
        loop {
            let entry = tokio::select! {
                entry = entries.next() => entry,
                _ = resync.tick() => {
                    if !resync_keys(&js, &tenant, &source, &mut known, &changes).await {
                        return;
                    }
                    continue;
                }
            };
            let Some(entry) = entry else { break };
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!(bucket = %source.bucket, "the watch of the fragments failed: {}", ErrorChain(&e));
                    break;
                }
            };
            if known.get(&entry.key).is_some_and(|r| *r >= entry.revision) {
                continue;
            }
            let deleted = entry.operation != kv::Operation::Put;
            if deleted && !known.contains_key(&entry.key) {
                continue;
            }
            known.insert(entry.key.clone(), entry.revision);
            let key = FragmentKey {
                tenant: tenant.clone(),
                bucket: entry.bucket.clone(),
                key: entry.key.clone(),
            };
            if changes
                .send(Change {
                    key,
                    fragment: fragment(&tenant, entry),
                })
                .is_err()
            {
                return;
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Reads the keys of `source` anew and sends what the watch missed: keys
/// at a newer revision than `known`, and keys gone. False when `changes`
/// is closed.
async fn resync_keys(
    js: &jetstream::Context,
    tenant: &Option<String>,
    source: &KvKeys,
    known: &mut HashMap<String, u64>,
    changes: &mpsc::UnboundedSender<Change>,
) -> bool {
    let fragments = match read(js, tenant, source).await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(bucket = %source.bucket, "cannot read the fragments anew: {}", ErrorChain(&e));
            return true;
        }
    };
    let mut present = std::collections::HashSet::new();
    for f in fragments {
        present.insert(f.key.key.clone());
        if known.get(&f.key.key).is_some_and(|r| *r >= f.revision) {
            continue;
        }
        tracing::info!(key = %f.key, revision = f.revision, "a change the watch had not delivered");
        known.insert(f.key.key.clone(), f.revision);
        let change = Change {
            key: f.key.clone(),
            fragment: Some(f),
        };
        if changes.send(change).is_err() {
            return false;
        }
    }
    let gone: Vec<String> = known
        .keys()
        .filter(|k| !present.contains(*k))
        .cloned()
        .collect();
    for key in gone {
        known.remove(&key);
        let change = Change {
            key: FragmentKey {
                tenant: tenant.clone(),
                bucket: source.bucket.clone(),
                key,
            },
            fragment: None,
        };
        if changes.send(change).is_err() {
            return false;
        }
    }
    true
}
