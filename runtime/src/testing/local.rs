//! NATS inside this process, for running a handler on one message without
//! a server (`natsapp-wasm invoke`, `natsapp_wasm::testing`): publishes to
//! a subject a stream captures get a PubAck (with the stream's name, a
//! sequence, and de-duplication on `Nats-Msg-Id`), requests are answered
//! from canned replies or find no responders, key-value buckets live in
//! memory with JetStream's revision rules, and everything — the input's
//! acknowledgements included — is recorded in order as [`Event`]s.

use crate::config::{Config, Subject};
use crate::nats::ack::Ack;
use crate::nats::batch::{BatchMessage, CommitError, Committed};
use crate::nats::publish::{Acked, PublishError, PublishFailure, Route};
use crate::nats::wire::{InProcess, InProcessBucket, KvEntry, Reply, RequestError};
use crate::nats::{header_pairs, header_size};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// NATS's default largest message, which the local wire enforces too.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// The name a stream gets in a PubAck when no `[[streams]]` or
/// `[[publishers]]` entry names the one that captures the subject.
const UNNAMED_STREAM: &str = "LOCAL";

/// A publish a handler made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its subject.
    pub subject: String,
    /// Its headers (the runtime's `Nats-Msg-Id` included).
    pub headers: Vec<(String, String)>,
    /// Its payload.
    pub payload: Bytes,
    /// The PubAck, when a stream captures the subject (else a core publish).
    pub stored: Option<Acked>,
}

/// A request a handler sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: Bytes,
    /// The answer, or why none came.
    pub answer: Result<Bytes, NoResponders>,
}

/// A key-value write a handler made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    /// The bucket.
    pub bucket: String,
    /// put, create, update or delete.
    pub op: &'static str,
    /// The key.
    pub key: String,
    /// The value written (none for a delete).
    pub value: Option<Bytes>,
    /// The revision stored; `None` for a conditional write that lost
    /// (create of a live key, update of a stale revision).
    pub revision: Option<u64>,
}

/// Nobody answers requests on a subject: no canned reply matches it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no responders on {subject:?}")]
pub struct NoResponders {
    /// The request's subject.
    pub subject: String,
}

/// Something a handler's run sent, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A publish.
    Published(Published),
    /// A request and its answer, or why it got none.
    Requested(Request),
    /// An acknowledgement of the input: the guest's own, the runtime's
    /// in-progress heartbeat, or its settlement.
    Acknowledged(Ack),
    /// A key-value write.
    KvWrite(KvWrite),
}

type Events = Arc<Mutex<Vec<Event>>>;

fn record(events: &Events, event: Event) {
    events.lock().expect("events lock").push(event);
}

/// NATS inside this process.
pub struct LocalWire {
    max_payload: usize,
    /// Which stream captures a subject, by pattern, in the file's order.
    streams: Vec<(Subject, String)>,
    /// Canned answers to requests, by subject pattern.
    replies: Vec<(Subject, Bytes)>,
    buckets: HashMap<String, Arc<LocalBucket>>,
    stored: Mutex<Stored>,
    events: Events,
}

/// What the local streams hold: a sequence per stream, and the PubAck of
/// every `Nats-Msg-Id` stored (for de-duplication).
#[derive(Default)]
struct Stored {
    sequences: HashMap<String, u64>,
    ids: HashMap<(String, String), Acked>,
}

impl LocalWire {
    /// A local wire naming streams as `config` does, answering requests
    /// from `replies` (subject pattern, payload), with an empty in-memory
    /// bucket for each name in `buckets`.
    pub fn new(config: &Config, replies: Vec<(Subject, Bytes)>, buckets: &[String]) -> Self {
        let publishers = config
            .publishers
            .iter()
            .filter_map(|p| Some((p.subject.clone(), p.stream.as_ref()?.to_string())));
        let streams = config.streams.iter().flat_map(|s| {
            s.subjects
                .iter()
                .map(|subject| (subject.clone(), s.name.to_string()))
        });
        let events = Events::default();
        LocalWire {
            max_payload: DEFAULT_MAX_PAYLOAD,
            streams: publishers.chain(streams).collect(),
            replies,
            buckets: buckets
                .iter()
                .map(|name| {
                    let bucket = LocalBucket {
                        name: name.clone(),
                        keys: Mutex::default(),
                        events: events.clone(),
                    };
                    (name.clone(), Arc::new(bucket))
                })
                .collect(),
            stored: Mutex::default(),
            events,
        }
    }

    /// The in-memory bucket `name`, when it has one.
    pub fn bucket(&self, name: &str) -> Option<Arc<LocalBucket>> {
        self.buckets.get(name).cloned()
    }

    /// Everything sent since the last call, in order.
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().expect("events lock"))
    }

    /// Stores a message on `subject` in the stream that captures it.
    fn store(&self, subject: &str, headers: &HeaderMap) -> Acked {
        let stream = self
            .streams
            .iter()
            .find(|(pattern, _)| pattern.matches(subject))
            .map_or(UNNAMED_STREAM, |(_, name)| name.as_str())
            .to_string();
        self.store_in(stream, headers)
    }

    /// Stores a message in `stream`, de-duplicated on its `Nats-Msg-Id`.
    fn store_in(&self, stream: String, headers: &HeaderMap) -> Acked {
        let mut stored = self.stored.lock().expect("stored lock");
        let id = headers
            .get("Nats-Msg-Id")
            .map(|v| (stream.clone(), v.as_str().to_string()));
        if let Some(first) = id.as_ref().and_then(|id| stored.ids.get(id)) {
            return Acked {
                duplicate: true,
                ..first.clone()
            };
        }
        let sequence = stored.sequences.entry(stream.clone()).or_default();
        *sequence += 1;
        let ack = Acked {
            stream,
            sequence: *sequence,
            duplicate: false,
        };
        if let Some(id) = id {
            stored.ids.insert(id, ack.clone());
        }
        ack
    }
}

impl InProcess for LocalWire {
    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn publish(
        &self,
        route: Route,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Option<Acked>, PublishError> {
        let pairs = header_pairs(Some(&headers));
        let size = payload.len() + header_size(&headers);
        if size > self.max_payload {
            return Err(PublishError::Invalid {
                subject,
                source: PublishFailure::TooLarge {
                    size,
                    max: self.max_payload,
                },
            });
        }
        let stored = match route {
            Route::Core => None,
            Route::JetStream(_) => Some(self.store(&subject, &headers)),
        };
        record(
            &self.events,
            Event::Published(Published {
                subject,
                headers: pairs,
                payload,
                stored: stored.clone(),
            }),
        );
        Ok(stored)
    }

    /// Stores `messages` in `stream` as the server stores an atomic batch:
    /// none of them when one's `Nats-Msg-Id` is already stored there.
    fn commit_batch(
        &self,
        stream: &str,
        messages: &[BatchMessage],
    ) -> Result<Committed, CommitError> {
        {
            let stored = self.stored.lock().expect("stored lock");
            let mut ids = std::collections::HashSet::new();
            for m in messages {
                if let Some(id) = m.headers.get("Nats-Msg-Id") {
                    let key = (stream.to_string(), id.as_str().to_string());
                    if stored.ids.contains_key(&key) || !ids.insert(key) {
                        return Err(CommitError::AlreadyStored {
                            stream: stream.to_string(),
                        });
                    }
                }
            }
        }
        let count = messages.len() as u64;
        let mut last_sequence = 0;
        for m in messages {
            let ack = self.store_in(stream.to_string(), &m.headers);
            last_sequence = ack.sequence;
            record(
                &self.events,
                Event::Published(Published {
                    subject: m.subject.clone(),
                    headers: header_pairs(Some(&m.headers)),
                    payload: m.payload.clone(),
                    stored: Some(ack),
                }),
            );
        }
        Ok(Committed {
            stream: stream.to_string(),
            last_sequence,
            count,
        })
    }

    fn request(
        &self,
        subject: String,
        _headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Reply, RequestError> {
        let answer = self
            .replies
            .iter()
            .find(|(pattern, _)| pattern.matches(&subject))
            .map(|(_, answer)| answer.clone())
            .ok_or_else(|| NoResponders {
                subject: subject.clone(),
            });
        record(
            &self.events,
            Event::Requested(Request {
                subject,
                payload,
                answer: answer.clone(),
            }),
        );
        answer
            .map(|payload| Reply {
                payload,
                headers: None,
            })
            .map_err(|e| RequestError::NoResponders(e.subject))
    }

    fn acked(&self, _reply: &async_nats::Subject, what: Ack) {
        record(&self.events, Event::Acknowledged(what));
    }
}

/// A key-value bucket in memory, with JetStream's rules: one revision
/// counter for the bucket, a delete leaves a marker, `create` succeeds on
/// an absent or deleted key, `update` only on the key's last revision.
pub struct LocalBucket {
    name: String,
    /// Key → (live value, or `None` after a delete; last revision).
    keys: Mutex<BTreeMap<String, (Option<Bytes>, u64)>>,
    events: Events,
}

impl LocalBucket {
    /// The live value of `key`.
    pub fn get(&self, key: &str) -> Option<KvEntry> {
        let keys = self.keys.lock().expect("bucket lock");
        let (value, revision) = keys.get(key)?;
        Some(KvEntry {
            value: value.clone()?,
            revision: *revision,
        })
    }

    /// Every live key and value, in key order.
    pub fn entries(&self) -> Vec<(String, KvEntry)> {
        let keys = self.keys.lock().expect("bucket lock");
        keys.iter()
            .filter_map(|(k, (v, revision))| {
                Some((
                    k.clone(),
                    KvEntry {
                        value: v.clone()?,
                        revision: *revision,
                    },
                ))
            })
            .collect()
    }

    /// Writes without recording: what a run starts with.
    pub fn seed(&self, key: &str, value: Bytes) {
        self.write(key, Some(value));
    }

    /// Writes `value` (a delete marker when `None`) under `key` when
    /// `allowed` says so of the key's state (live, last revision), all under
    /// one lock; returns the new revision.
    fn write_if(
        &self,
        key: &str,
        value: Option<Bytes>,
        allowed: impl FnOnce(bool, u64) -> bool,
    ) -> Option<u64> {
        let mut keys = self.keys.lock().expect("bucket lock");
        let (live, last) = keys
            .get(key)
            .map_or((false, 0), |(v, revision)| (v.is_some(), *revision));
        if !allowed(live, last) {
            return None;
        }
        let revision = keys.values().map(|(_, r)| *r).max().unwrap_or(0) + 1;
        keys.insert(key.to_string(), (value, revision));
        Some(revision)
    }

    fn write(&self, key: &str, value: Option<Bytes>) -> u64 {
        self.write_if(key, value, |_, _| true)
            .expect("an unconditional write")
    }

    fn recorded(&self, op: &'static str, key: &str, value: Option<Bytes>, revision: Option<u64>) {
        record(
            &self.events,
            Event::KvWrite(KvWrite {
                bucket: self.name.clone(),
                op,
                key: key.to_string(),
                value,
                revision,
            }),
        );
    }
}

impl InProcessBucket for LocalBucket {
    fn get(&self, key: &str) -> Option<KvEntry> {
        LocalBucket::get(self, key)
    }

    fn put(&self, key: &str, value: Bytes) -> u64 {
        let revision = self.write(key, Some(value.clone()));
        self.recorded("put", key, Some(value), Some(revision));
        revision
    }

    fn create(&self, key: &str, value: Bytes) -> Option<u64> {
        let revision = self.write_if(key, Some(value.clone()), |live, _| !live);
        self.recorded("create", key, Some(value), revision);
        revision
    }

    fn update(&self, key: &str, value: Bytes, expected: u64) -> Option<u64> {
        let revision = self.write_if(key, Some(value.clone()), |_, last| last == expected);
        self.recorded("update", key, Some(value), revision);
        revision
    }

    fn delete(&self, key: &str) {
        let revision = self.write(key, None);
        self.recorded("delete", key, None, Some(revision));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> LocalBucket {
        LocalBucket {
            name: "B".into(),
            keys: Mutex::default(),
            events: Events::default(),
        }
    }

    #[test]
    fn buckets_follow_jetstream_revision_rules() {
        let b = bucket();
        assert_eq!(b.create("k", "1".into()), Some(1));
        assert_eq!(
            b.create("k", "2".into()),
            None,
            "a live key is not created again"
        );
        assert_eq!(b.update("k", "3".into(), 7), None, "a stale revision loses");
        assert_eq!(b.update("k", "3".into(), 1), Some(2));
        assert_eq!(
            b.put("other", "x".into()),
            3,
            "one revision counter per bucket"
        );
        b.delete("k");
        assert_eq!(b.get("k"), None);
        assert_eq!(
            b.create("k", "4".into()),
            Some(5),
            "a deleted key may be created again"
        );
        assert_eq!(
            b.get("k"),
            Some(KvEntry {
                value: "4".into(),
                revision: 5
            })
        );
        assert_eq!(b.events.lock().unwrap().len(), 7);
    }
}
