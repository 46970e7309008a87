//! Host of `natsapp:handler/keyvalue`: JetStream key-value buckets, limited
//! to the subscriber's `kv` grants. Every call is checked before anything
//! reaches the wire: the bucket must be granted (writes need `"rw"`), the
//! key must be one JetStream accepts and at most [`MAX_KEY_BYTES`], the
//! value no larger than the bucket's `max_value_size` (else the server's
//! largest payload). Writes count against `publishes_per_message` and the
//! tenant's publish quotas, like publishes.

use super::generated::natsapp::handler::keyvalue::{Entry, Host};
use super::generated::natsapp::handler::types::Error;
use super::{HostState, SubscriberHost};
use crate::config::KvAccess;
use crate::counters::{KvOp, KvOutcome};
use crate::error::ErrorChain;
use crate::message::InFlight;
use crate::nats::setup::OpenedBucket;
use crate::nats::unavailable::retrying;
use crate::nats::wire::{BucketStore, KvError, Unavailable};
use std::collections::HashMap;
use wasmtime::component::{HasData, Linker};

/// The longest key a guest may use, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The buckets one subscriber is granted, opened at start.
#[derive(Default)]
pub struct KeyValue {
    buckets: HashMap<String, Bucket>,
}

struct Bucket {
    store: BucketStore,
    access: KvAccess,
    max_value_size: Option<u64>,
}

impl KeyValue {
    /// The state of the buckets in `opened`.
    pub fn new(opened: Vec<OpenedBucket>) -> Self {
        KeyValue {
            buckets: opened
                .into_iter()
                .map(|b| {
                    (
                        b.name,
                        Bucket {
                            store: b.store,
                            access: b.access,
                            max_value_size: b.max_value_size,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The granted buckets and their access, by name.
    pub fn grants(&self) -> impl Iterator<Item = (&str, KvAccess)> {
        self.buckets.iter().map(|(n, b)| (n.as_str(), b.access))
    }
}

/// What a key-value call sees of its store: the subscriber (its grants,
/// quotas and statistics) and the message being handled (its call budget).
pub struct KeyValueView<'a> {
    sub: &'a SubscriberHost,
    msg: &'a InFlight,
}

struct KeyValueData;

impl HasData for KeyValueData {
    type Data<'a> = KeyValueView<'a>;
}

/// Links `natsapp:handler/keyvalue` over each store's [`KeyValueView`].
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    super::generated::natsapp::handler::keyvalue::add_to_linker::<HostState, KeyValueData>(
        linker,
        |h| KeyValueView {
            sub: &h.sub,
            msg: &h.msg,
        },
    )
}

/// Checks `key` against what JetStream accepts as a key.
fn check_key(key: &str) -> Result<(), Error> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::Invalid(format!(
            "key of {} bytes is longer than {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    let valid = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c));
    if !valid {
        return Err(Error::Invalid(format!(
            "{key:?} is not a key: use letters, digits and - / _ = . (not first or last, not twice in a row)"
        )));
    }
    Ok(())
}

impl KeyValueView<'_> {
    /// The bucket `name` for `op`, if the subscriber may do that there.
    fn bucket(&self, name: &str, op: KvOp) -> Result<&Bucket, Error> {
        let subscriber = &*self.sub.name;
        let Some(bucket) = self.sub.kv.buckets.get(name) else {
            return Err(Error::Denied(format!(
                "subscriber {subscriber:?} is not granted bucket {name:?} (kv = {{ … }} in service.toml)"
            )));
        };
        if op != KvOp::Get && bucket.access != KvAccess::Rw {
            return Err(Error::Denied(format!(
                "subscriber {subscriber:?} may only read bucket {name:?} (kv = {{ {name} = \"ro\" }}): {} is a write",
                op.as_str()
            )));
        }
        Ok(bucket)
    }

    /// The checks before a write of `value` under `key` in `name`: grant,
    /// key, value size, call budget and publish quotas.
    fn writable(&self, name: &str, key: &str, value: &[u8], op: KvOp) -> Result<&Bucket, Error> {
        let bucket = self.bucket(name, op)?;
        check_key(key)?;
        let max = bucket
            .max_value_size
            .unwrap_or(self.sub.wire.max_payload() as u64);
        if value.len() as u64 > max {
            return Err(Error::Invalid(format!(
                "a value of {} bytes is larger than bucket {name:?} accepts ({max} bytes)",
                value.len()
            )));
        }
        self.sub.count_call(self.msg)?;
        self.sub.pay(key.len() + value.len())?;
        Ok(bucket)
    }

    /// Counts a finished call, and its outcome.
    fn counted<T>(
        &self,
        op: KvOp,
        result: Result<T, Error>,
        outcome: KvOutcome,
    ) -> Result<T, Error> {
        let outcome = match &result {
            Ok(_) => outcome,
            Err(Error::Denied(_) | Error::Invalid(_)) => KvOutcome::Denied,
            Err(_) => KvOutcome::Failed,
        };
        self.sub.settler.stats.kv(op, outcome);
        result
    }

    /// Runs a call of `op` on `bucket`, made again while NATS is
    /// unavailable: any call when nothing was written, only reads, puts and
    /// deletes when an answer did not come in time (a create or update may
    /// have been stored then, and made again it would lose to itself).
    async fn patiently<T, F>(
        &self,
        op: KvOp,
        bucket: &str,
        call: impl FnMut() -> F,
    ) -> Result<T, KvError>
    where
        F: std::future::Future<Output = Result<T, KvError>>,
    {
        let repeatable = !matches!(op, KvOp::Create | KvOp::Update);
        let (sub, msg) = (self.sub, self.msg);
        let _call = msg.nats_call();
        retrying(
            || {
                format!(
                    "subscriber {:?}: {} in bucket {bucket:?}",
                    &*sub.name,
                    op.as_str()
                )
            },
            sub.settler.patience(msg),
            call,
            |e| match e.unavailable() {
                Unavailable::Certainly => true,
                Unavailable::Perhaps => repeatable,
                Unavailable::No => false,
            },
            || sub.wire.connected(),
            |waited| sub.waited_for_nats(msg, waited),
        )
        .await
    }

    /// Counts a conditional write: `None` is a write that lost.
    fn conditional(
        &self,
        op: KvOp,
        result: Result<Option<u64>, Error>,
    ) -> Result<Option<u64>, Error> {
        let outcome = match result {
            Ok(None) => KvOutcome::Conflict,
            _ => KvOutcome::Ok,
        };
        self.counted(op, result, outcome)
    }
}

/// The guest's view of a failure of a call on `bucket`.
fn failure(bucket: &str) -> impl Fn(KvError) -> Error + '_ {
    move |e| match e {
        KvError::TimedOut(_) => Error::Timeout,
        KvError::Failed(e) => Error::Other(format!("bucket {bucket:?}: {}", ErrorChain(&e))),
    }
}

impl Host for KeyValueView<'_> {
    async fn get(
        &mut self,
        bucket: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<Entry>, Error>> {
        let result = async {
            let b = self.bucket(&bucket, KvOp::Get)?;
            check_key(&key)?;
            let entry = self
                .patiently(KvOp::Get, &bucket, async || b.store.get(key.clone()).await)
                .await
                .map_err(failure(&bucket))?;
            Ok(entry.map(|e| Entry {
                value: e.value.to_vec(),
                revision: e.revision,
            }))
        }
        .await;
        Ok(self.counted(KvOp::Get, result, KvOutcome::Ok))
    }

    async fn put(
        &mut self,
        bucket: String,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let result = async {
            let b = self.writable(&bucket, &key, &value, KvOp::Put)?;
            let value = bytes::Bytes::from(value);
            self.patiently(KvOp::Put, &bucket, || {
                b.store.put(key.clone(), value.clone())
            })
            .await
            .map_err(failure(&bucket))
        }
        .await;
        Ok(self.counted(KvOp::Put, result, KvOutcome::Ok))
    }

    async fn create(
        &mut self,
        bucket: String,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<Option<u64>, Error>> {
        let result = async {
            let b = self.writable(&bucket, &key, &value, KvOp::Create)?;
            let value = bytes::Bytes::from(value);
            self.patiently(KvOp::Create, &bucket, || {
                b.store.create(key.clone(), value.clone())
            })
            .await
            .map_err(failure(&bucket))
        }
        .await;
        Ok(self.conditional(KvOp::Create, result))
    }

    async fn update(
        &mut self,
        bucket: String,
        key: String,
        value: Vec<u8>,
        revision: u64,
    ) -> wasmtime::Result<Result<Option<u64>, Error>> {
        let result = async {
            let b = self.writable(&bucket, &key, &value, KvOp::Update)?;
            let value = bytes::Bytes::from(value);
            self.patiently(KvOp::Update, &bucket, || {
                b.store.update(key.clone(), value.clone(), revision)
            })
            .await
            .map_err(failure(&bucket))
        }
        .await;
        Ok(self.conditional(KvOp::Update, result))
    }

    async fn delete(&mut self, bucket: String, key: String) -> wasmtime::Result<Result<(), Error>> {
        let result = async {
            let b = self.writable(&bucket, &key, &[], KvOp::Delete)?;
            self.patiently(KvOp::Delete, &bucket, || b.store.delete(key.clone()))
                .await
                .map_err(failure(&bucket))
        }
        .await;
        Ok(self.counted(KvOp::Delete, result, KvOutcome::Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_before_the_wire() {
        for ok in ["a", "order-17", "users/42", "a.b.c", "k=v_1"] {
            assert_eq!(check_key(ok), Ok(()), "{ok:?}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a*", "a>", "ü"] {
            assert!(matches!(check_key(bad), Err(Error::Invalid(_))), "{bad:?}");
        }
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            check_key(&long),
            Err(Error::Invalid(format!(
                "key of {} bytes is longer than {MAX_KEY_BYTES}",
                MAX_KEY_BYTES + 1
            )))
        );
    }
}
