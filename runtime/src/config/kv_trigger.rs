//! `watch = { kv, keys, start }`: a subscriber whose messages are a
//! key-value bucket's changes. A bucket is the stream `KV_<bucket>` whose
//! subjects are `$KV.<bucket>.<key>`, so a watch is a stream subscriber
//! on that stream, filtered to the keys, starting where `start` says; every
//! semantic of a stream subscriber (retries, dead letters, quotas) holds.

use serde::Deserialize;

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchStart {
    /// `"new"` (default): changes made after the durable is created.
    New,
    /// `"last"`: each matching key's latest value, then changes.
    Last,
    /// `"all"`: every change the bucket's history still holds, then changes.
    All,
}

impl WatchStart {
    /// As written in service.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchStart::New => "new",
            WatchStart::Last => "last",
            WatchStart::All => "all",
        }
    }
}

/// `watch = { … }`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The bucket.
    pub bucket: String,
    /// The keys, a subject pattern relative to the bucket.
    pub keys: String,
    /// Where its durable starts.
    pub start: WatchStart,
}

/// The stream that holds bucket `bucket`.
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The subjects of keys `keys` of bucket `bucket`.
pub fn kv_subject(bucket: &str, keys: &str) -> String {
    format!("$KV.{bucket}.{keys}")
}
