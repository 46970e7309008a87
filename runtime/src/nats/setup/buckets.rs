//! Key-value buckets: a subscriber's `kv` grants are opened at start, on
//! its own connection (a tenant's buckets live in the tenant's account).
//! A bucket listed in `[[buckets]]` is declared when missing and verified
//! when present; one that is not listed must exist.

use super::*;
use crate::config::{BucketConfig, KvAccess};
use async_nats::jetstream::kv;
use std::time::Duration;

/// A bucket opened for a subscriber, with what it may do there.
pub struct OpenedBucket {
    /// The bucket's name.
    pub name: String,
    /// Its store, on the subscriber's wire.
    pub store: crate::nats::wire::BucketStore,
    /// The access the subscriber is granted.
    pub access: KvAccess,
    /// The largest value the bucket accepts, when it sets one.
    pub max_value_size: Option<u64>,
}

/// The settings of the bucket stream `existing` that differ from `want`.
pub fn bucket_diffs(want: &BucketConfig, existing: &stream::Config) -> Vec<String> {
    let mut diffs = Vec::new();
    if want.history != existing.max_messages_per_subject {
        diffs.push(format!(
            "history: server has {}, file says {}",
            existing.max_messages_per_subject, want.history
        ));
    }
    placement_diffs(want.storage, want.replicas, existing, &mut diffs);
    if want.max_age.unwrap_or(Duration::ZERO) != existing.max_age {
        diffs.push(format!(
            "max_age: server has {:?}, file says {:?}",
            existing.max_age,
            want.max_age.unwrap_or(Duration::ZERO)
        ));
    }
    let limit = |v: Option<u64>| v.map_or(-1, |n| n as i64);
    if limit(want.max_bytes) != existing.max_bytes {
        diffs.push(format!(
            "max_bytes: server has {}, file says {}",
            existing.max_bytes,
            limit(want.max_bytes)
        ));
    }
    if limit(want.max_value_size) != i64::from(existing.max_message_size) {
        diffs.push(format!(
            "max_value_size: server has {}, file says {}",
            existing.max_message_size,
            limit(want.max_value_size)
        ));
    }
    diffs
}

/// Opens every bucket `sub` is granted on `js`, declaring or verifying the
/// ones listed in `[[buckets]]`.
pub async fn open_buckets(
    js: &jetstream::Context,
    config: &Config,
    sub: &SubscriberConfig,
) -> Result<Vec<OpenedBucket>, SetupError> {
    let mut opened = Vec::with_capacity(sub.kv.len());
    for (name, access) in &sub.kv {
        let declared = config.bucket_for(name, &sub.tenant);
        let stream_name = format!("KV_{name}");
        let existing = match js.get_stream(&stream_name).await {
            Ok(mut s) => Some(
                s.info()
                    .await
                    .map_err(|e| server(format!("cannot read bucket {name:?}"), e, false))?
                    .config
                    .clone(),
            ),
            Err(e) if is_stream_not_found(&e) => None,
            Err(e) => return Err(server(format!("cannot look up bucket {name:?}"), e, false)),
        };
        match (existing, declared) {
            (Some(have), Some(want)) => {
                let diffs = bucket_diffs(want, &have);
                if !diffs.is_empty() {
                    return Err(SetupError::BucketDiffers {
                        bucket: name.clone(),
                        diffs,
                    });
                }
            }
            (Some(_), None) => {}
            (None, Some(want)) if want.declare => {
                js.create_key_value(kv::Config {
                    bucket: name.clone(),
                    history: want.history,
                    max_age: want.max_age.unwrap_or(Duration::ZERO),
                    max_bytes: want.max_bytes.map_or(-1, |n| n as i64),
                    max_value_size: want.max_value_size.map_or(-1, |n| n as i32),
                    storage: want.storage.map_or(StorageType::File, storage_of),
                    num_replicas: want.replicas.unwrap_or(1),
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    use async_nats::jetstream::context::CreateKeyValueErrorKind as Kind;
                    let invalid = matches!(
                        e.kind(),
                        Kind::InvalidStoreName
                            | Kind::TooLongHistory
                            | Kind::JetStream
                            | Kind::LimitMarkersNotSupported
                    );
                    server(format!("cannot declare bucket {name:?}"), e, invalid)
                })?;
                tracing::info!(bucket = %name, "declared key-value bucket");
            }
            (None, _) => {
                return Err(SetupError::BucketMissing {
                    bucket: name.clone(),
                    subscriber: sub.name.clone(),
                })
            }
        }
        let store = js
            .get_key_value(name)
            .await
            .map_err(|e| server(format!("cannot open bucket {name:?}"), e, false))?;
        let max_value_size = u64::try_from(store.stream.cached_info().config.max_message_size).ok();
        opened.push(OpenedBucket {
            name: name.clone(),
            store: crate::nats::wire::BucketStore::Server(Box::new(store)),
            access: *access,
            max_value_size,
        });
    }
    Ok(opened)
}
