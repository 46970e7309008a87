//! What the `deploy` and `rollback` commands do on NATS: put a fragment in
//! its key — creating the bucket, when asked, with the most history a
//! key-value bucket keeps, so that a rollback can reach back 64 revisions —
//! and put an earlier revision of a key again.

use async_nats::jetstream::{self, kv};
use futures::StreamExt;

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

/// Puts `text` in `bucket`/`key` (creating the bucket with `replicas` when
/// it is missing and `create` is given); the key's new revision.
pub async fn put(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    text: &str,
    create: Option<usize>,
) -> Result<u64, PublishError> {
    let store = match (js.get_key_value(bucket).await, create) {
        (Ok(store), _) => store,
        (Err(e), Some(replicas))
            if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket =>
        {
            js.create_key_value(kv::Config {
                bucket: bucket.to_string(),
                history: HISTORY,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|source| PublishError::Create {
                bucket: bucket.to_string(),
                source,
            })?
        }
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
/// latest) again, as the key's newest revision.
pub async fn rollback(
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
