//! Key-value buckets (JetStream KV) granted to the subscriber in
//! service.toml: `kv = { PAYMENTS = "rw", PRICES = "ro" }`.
//!
//! ```ignore
//! use natsapp_guest::kv::Bucket;
//!
//! let payments = Bucket::new("PAYMENTS");
//! // One winner per key, across replicas: a second create gets `None`.
//! if payments.create(&format!("charged.{id}"), b"1")?.is_none() {
//!     return Ok(()); // already charged by an earlier delivery
//! }
//! ```

use super::bindings::natsapp::handler::keyvalue;
use super::HostError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A stored value and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// The write's revision: what [`Bucket::update`] compares.
    pub revision: u64,
}

/// A bucket, by name. Nothing is checked until the first call: a bucket the
/// subscriber is not granted fails every call with [`HostError::Denied`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket(String);

impl Bucket {
    /// The bucket `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Bucket(name.into())
    }

    /// The key's current value, `None` when it has none.
    pub fn get(&self, key: &str) -> Result<Option<Entry>, HostError> {
        Ok(keyvalue::get(&self.0, key)?.map(|e| Entry { value: e.value, revision: e.revision }))
    }

    /// The key's current value decoded from JSON; `None` when it has none.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, HostError> {
        match self.get(key)? {
            Some(e) => serde_json::from_slice(&e.value)
                .map(Some)
                .map_err(|err| HostError::Invalid(format!("value of {key:?} is not the JSON expected: {err}"))),
            None => Ok(None),
        }
    }

    /// Stores `value` whatever was there; returns its revision.
    pub fn put(&self, key: &str, value: impl AsRef<[u8]>) -> Result<u64, HostError> {
        Ok(keyvalue::put(&self.0, key, value.as_ref())?)
    }

    /// Stores `value` as JSON whatever was there; returns its revision.
    pub fn put_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<u64, HostError> {
        let data = serde_json::to_vec(value).map_err(|e| HostError::Invalid(format!("cannot encode JSON: {e}")))?;
        self.put(key, data)
    }

    /// Stores `value` only if the key has none; `None` when it has one
    /// (another writer came first) and nothing was written.
    pub fn create(&self, key: &str, value: impl AsRef<[u8]>) -> Result<Option<u64>, HostError> {
        Ok(keyvalue::create(&self.0, key, value.as_ref())?)
    }

    /// Stores `value` only if the key's revision is still `revision`
    /// (compare-and-swap); `None` when another write came in between.
    pub fn update(&self, key: &str, value: impl AsRef<[u8]>, revision: u64) -> Result<Option<u64>, HostError> {
        Ok(keyvalue::update(&self.0, key, value.as_ref(), revision)?)
    }

    /// Deletes the key's value.
    pub fn delete(&self, key: &str) -> Result<(), HostError> {
        Ok(keyvalue::delete(&self.0, key)?)
    }
}

/// What a change to a key did, for a subscriber with `watch = { kv = … }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A value was put: the message's data is the value.
    Put,
    /// The key was deleted (its history kept); the data is empty.
    Delete,
    /// The key was purged (its history dropped); the data is empty.
    Purge,
}

impl Operation {
    /// `"put"`, `"delete"` or `"purge"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Put => "put",
            Operation::Delete => "delete",
            Operation::Purge => "purge",
        }
    }

    /// From the `KV-Operation` header a bucket's stream stores with a
    /// change (absent on a put).
    pub(crate) fn from_header(value: Option<&str>) -> Operation {
        match value {
            Some("DEL") => Operation::Delete,
            Some("PURGE") => Operation::Purge,
            _ => Operation::Put,
        }
    }
}

/// The key a bucket's change is about: a bucket is the stream
/// `KV_<bucket>` whose subjects are `$KV.<bucket>.<key>`.
pub(crate) fn key_of<'a>(stream: &str, subject: &'a str) -> Option<&'a str> {
    let bucket = stream.strip_prefix("KV_")?;
    subject.strip_prefix("$KV.")?.strip_prefix(bucket)?.strip_prefix('.')
}
