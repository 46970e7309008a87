//! What the `deploy` and `rollback` commands do on NATS: put a fragment in
//! its key — creating the bucket, when asked, with the most history a
//! key-value bucket keeps, so that a rollback can reach back 64 revisions —
//! and put an earlier revision of a key again.

use crate::nats::unavailable;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use std::time::Duration;

/// Revisions a bucket created by `deploy` keeps per key: the most
/// JetStream key-value allows.
pub const HISTORY: i64 = 64;

/// Why a fragment could not be put, or a key rolled back.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The bucket cannot be opened.
    #[error("key-value bucket {bucket:?} cannot be opened (create it with --create)")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: jetstream::context::KeyValueError,
    },
    /// The bucket cannot be created.
    #[error("key-value bucket {bucket:?} cannot be created")]
    Create {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
    /// The key cannot be written or read.
    #[error("cannot {doing} {bucket}/{key}")]
    Key {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What was being done.
        doing: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The revision asked for is not in the key's history.
    #[error("{bucket}/{key} has no revision {revision} in its history (revisions kept: {kept})")]
    NoRevision {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The revision asked for.
        revision: u64,
        /// The revisions it has.
        kept: String,
    },
    /// The key has no earlier revision to go back to.
    #[error("{bucket}/{key} has no revision before its latest to roll back to")]
    NothingEarlier {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
}

/// How long a command keeps trying while NATS is unavailable (a node of
/// the cluster down, a bucket's stream electing a leader).
const PATIENCE: Duration = Duration::from_secs(60);

impl PublishError {
    /// Whether NATS, not what was asked, is at fault: worth trying again.
    pub fn unavailable(&self) -> bool {
        match self {
            PublishError::Bucket { source, .. } => {
                source.kind() == jetstream::context::KeyValueErrorKind::GetBucket
                    && !unavailable::stream_missing(source)
            }
            PublishError::Key { .. } => true,
            _ => false,
        }
    }
}

/// Runs `call` until it succeeds, fails for another reason than NATS
/// being unavailable, or [`PATIENCE`] runs out.
async fn patiently<T, F: std::future::Future<Output = Result<T, PublishError>>>(
    js: &jetstream::Context,
    what: impl Fn() -> String,
    call: impl FnMut() -> F,
) -> Result<T, PublishError> {
    unavailable::patiently(
        &js.client(),
        PATIENCE,
        what,
        call,
        PublishError::unavailable,
    )
    .await
}

/// Puts `text` in `bucket`/`key` (creating the bucket with `replicas` when
/// it is missing and `create` is given); the key's new revision. Tried
/// again while NATS is unavailable.
pub async fn put(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    text: &str,
    create: Option<usize>,
) -> Result<u64, PublishError> {
    patiently(
        js,
        || format!("putting {bucket}/{key}"),
        || put_once(js, bucket, key, text, create),
    )
    .await
}

async fn put_once(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    text: &str,
    create: Option<usize>,
) -> Result<u64, PublishError> {
    let store = match (js.get_key_value(bucket).await, create) {
        (Ok(store), _) => store,
        (Err(e), Some(replicas)) if unavailable::stream_missing(&e) => js
            .create_key_value(kv::Config {
                bucket: bucket.to_string(),
                history: HISTORY,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|source| PublishError::Create {
                bucket: bucket.to_string(),
                source,
            })?,
        (Err(source), _) => {
            return Err(PublishError::Bucket {
                bucket: bucket.to_string(),
                source,
            })
        }
    };
    store
        .put(key, text.to_string().into())
        .await
        .map_err(|e| PublishError::Key {
            bucket: bucket.to_string(),
            key: key.to_string(),
            doing: "put",
            source: Box::new(e),
        })
}

/// A rollback done: the revision put again, and the new revision it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolledBack {
    /// The revision whose fragment was put again.
    pub to: u64,
    /// The key's revision now.
    pub revision: u64,
}

/// Puts revision `revision` of `bucket`/`key` (default: the one before the
/// latest) again, as the key's newest revision. Tried again while NATS is
/// unavailable.
pub async fn rollback(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    revision: Option<u64>,
) -> Result<RolledBack, PublishError> {
    patiently(
        js,
        || format!("rolling {bucket}/{key} back"),
        || rollback_once(js, bucket, key, revision),
    )
    .await
}

async fn rollback_once(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    revision: Option<u64>,
) -> Result<RolledBack, PublishError> {
    let failed = |doing, source: Box<dyn std::error::Error + Send + Sync>| PublishError::Key {
        bucket: bucket.to_string(),
        key: key.to_string(),
        doing,
        source,
    };
    let store = js
        .get_key_value(bucket)
        .await
        .map_err(|source| PublishError::Bucket {
            bucket: bucket.to_string(),
            source,
        })?;
    let mut history = store
        .history(key)
        .await
        .map_err(|e| failed("read the history of", Box::new(e)))?;
    let mut puts = Vec::new();
    while let Some(entry) = history.next().await {
        let entry = entry.map_err(|e| failed("read the history of", Box::new(e)))?;
        if entry.operation == kv::Operation::Put {
            puts.push(entry);
        }
    }
    // The history is read through a consumer a lagging replica of the
    // bucket may serve (a node just back): it must reach the latest
    // revision, or it is read again.
    let latest = store
        .entry(key)
        .await
        .map_err(|e| failed("read the latest revision of", Box::new(e)))?
        .map(|e| e.revision);
    if latest.is_some() && puts.last().map(|e| e.revision) < latest {
        return Err(failed(
            "read the whole history of",
            format!("it ends before revision {}", latest.unwrap_or(0)).into(),
        ));
    }
    let target = match revision {
        Some(r) => {
            puts.iter()
                .find(|e| e.revision == r)
                .ok_or_else(|| PublishError::NoRevision {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    revision: r,
                    kept: puts
                        .iter()
                        .map(|e| e.revision.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?
        }
        None => puts.len().checked_sub(2).map(|i| &puts[i]).ok_or_else(|| {
            PublishError::NothingEarlier {
                bucket: bucket.to_string(),
                key: key.to_string(),
            }
        })?,
    };
    let new = store
        .put(key, target.value.clone())
        .await
        .map_err(|e| failed("put", Box::new(e)))?;
    Ok(RolledBack {
        to: target.revision,
        revision: new,
    })
}
