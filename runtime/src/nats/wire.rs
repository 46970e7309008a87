//! Where a subscriber's traffic goes: a NATS server, or — for
//! `natsapp-wasm invoke` and `natsapp_wasm::testing` — this process, through
//! an [`InProcess`] stand-in that records what a handler sends and answers
//! it. Everything above (`settle`, the host's publisher and key-value) goes
//! through a [`Wire`], so a handler run on one local message takes the
//! runtime's own call path with only the last hop swapped.

use super::ack::{self, Ack, AckError};
use super::batch::{self, BatchMessage, BatchSlots, CommitError, Committed};
use super::connect::LastConnect;
use super::publish::{self, Acked, PublishError, Route};
use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// A subscriber's way to NATS. One per subscriber, so the size of the
/// server variant does not matter.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Wire {
    /// A connection to a server.
    Server {
        /// Core NATS.
        client: async_nats::Client,
        /// JetStream on the same connection.
        jetstream: jetstream::Context,
        /// The atomic batches the connection may have open per stream.
        batch_slots: Arc<BatchSlots>,
        /// When the connection was last made (again).
        last_connect: Arc<LastConnect>,
    },
    /// This process, recording.
    Local(Arc<dyn InProcess>),
}

/// The PubAck of a publish sent with [`Wire::send_to_stream`].
pub type PubAckFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<Acked>, PublishError>> + Send>,
>;

/// NATS inside this process: what a [`Wire::Local`] sends to. Its calls
/// answer at once, so they are not async.
pub trait InProcess: Send + Sync {
    /// The largest message it accepts.
    fn max_payload(&self) -> usize;
    /// Publishes by `route`; returns the PubAck of a JetStream publish.
    fn publish(
        &self,
        route: Route,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Option<Acked>, PublishError>;
    /// Stores `messages` in `stream` all together or not at all.
    fn commit_batch(
        &self,
        stream: &str,
        messages: &[BatchMessage],
    ) -> Result<Committed, CommitError>;
    /// Answers a request, or says why nobody does.
    fn request(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Reply, RequestError>;
    /// Records an acknowledgement of the message being handled.
    fn acked(&self, reply: &Subject, what: Ack);
}

/// A key-value bucket inside this process, with JetStream's revision rules.
pub trait InProcessBucket: Send + Sync {
    /// The live value of `key`, if any.
    fn get(&self, key: &str) -> Option<KvEntry>;
    /// Writes `value`; returns its revision.
    fn put(&self, key: &str, value: Bytes) -> u64;
    /// Writes `value` if `key` has no live value.
    fn create(&self, key: &str, value: Bytes) -> Option<u64>;
    /// Writes `value` if `key`'s last revision is `revision`.
    fn update(&self, key: &str, value: Bytes, revision: u64) -> Option<u64>;
    /// Deletes `key`'s value.
    fn delete(&self, key: &str);
}

/// A request's answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Its payload.
    pub payload: Bytes,
    /// Its headers.
    pub headers: Option<HeaderMap>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer within the timeout.
    #[error("no answer in time")]
    TimedOut,
    /// Nobody listens on the subject.
    #[error("no responders on {0:?}")]
    NoResponders(String),
    /// The subject is not one.
    #[error("invalid request subject {subject:?}")]
    Invalid {
        /// The subject.
        subject: String,
        /// The client's error.
        #[source]
        source: async_nats::RequestError,
    },
    /// Anything else (the connection, the server).
    #[error("the request to {subject:?} failed")]
    Failed {
        /// The subject.
        subject: String,
        /// The client's error.
        #[source]
        source: async_nats::RequestError,
    },
}

impl Wire {
    /// The server's connection, sharing `batch_slots` with every wire on it.
    pub fn server(
        client: async_nats::Client,
        jetstream: jetstream::Context,
        batch_slots: Arc<BatchSlots>,
        last_connect: Arc<LastConnect>,
    ) -> Self {
        Wire::Server {
            client,
            jetstream,
            batch_slots,
            last_connect,
        }
    }

    /// Whether the connection is up (always, in this process).
    pub fn connected(&self) -> bool {
        match self {
            Wire::Server { client, .. } => matches!(
                client.connection_state(),
                async_nats::connection::State::Connected
            ),
            Wire::Local(_) => true,
        }
    }

    /// When the connection was last made, the first time included (never,
    /// in this process, which has no connection to lose).
    pub fn last_connect(&self) -> Option<std::time::Instant> {
        match self {
            Wire::Server { last_connect, .. } => Some(last_connect.at()),
            Wire::Local(_) => None,
        }
    }

    /// The largest message the server accepts.
    pub fn max_payload(&self) -> usize {
        match self {
            Wire::Server { client, .. } => client.server_info().max_payload,
            Wire::Local(local) => local.max_payload(),
        }
    }

    /// Publishes by `route`; returns the PubAck of a JetStream publish.
    pub async fn publish(
        &self,
        route: Route,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Option<Acked>, PublishError> {
        match self {
            Wire::Server {
                client, jetstream, ..
            } => publish::publish(client, jetstream, route, subject, headers, payload).await,
            Wire::Local(local) => local.publish(route, subject, headers, payload),
        }
    }

    /// Sends a publish to the stream that captures `subject` without
    /// waiting for its PubAck, which the returned future resolves to within
    /// `timeout`, as [`Wire::publish`] does (at once in this process).
    pub async fn send_to_stream(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<PubAckFuture, PublishError> {
        match self {
            Wire::Server { jetstream, .. } => {
                let ack = publish::send_to_stream(jetstream, subject, headers, payload).await?;
                let subject = subject.to_string();
                let late = PublishError::Timeout {
                    subject: subject.clone(),
                    timeout,
                };
                // Awaited on a task of its own: async-nats holds one of the
                // wire's 5,000 PubAck permits per pending PubAck until
                // its future is polled to the end, and handlers fanning out
                // at once, their PubAcks awaited only after they return,
                // would otherwise take them all and wait for each other.
                let acked = tokio::spawn(async move {
                    match tokio::time::timeout(timeout, ack).await {
                        Ok(ack) => publish::confirmed(ack, &subject, timeout).map(Some),
                        Err(_) => Err(PublishError::Timeout { subject, timeout }),
                    }
                });
                // Cancelled only as the runtime shuts down.
                Ok(Box::pin(async move { acked.await.unwrap_or(Err(late)) }))
            }
            Wire::Local(local) => {
                let route = Route::JetStream(timeout);
                let acked = local.publish(route, subject.to_string(), headers, payload)?;
                Ok(Box::pin(std::future::ready(Ok(acked))))
            }
        }
    }

    /// Stores `messages` in `stream` all together or not at all, once one
    /// of the connection's batch slots on the stream is free; waits up to
    /// `timeout` for each of the server's answers.
    pub async fn commit_batch(
        &self,
        stream: &str,
        messages: &[BatchMessage],
        timeout: Duration,
    ) -> Result<Committed, CommitError> {
        match self {
            Wire::Server {
                client,
                batch_slots,
                ..
            } => {
                let _slot = batch_slots.take(stream).await;
                batch::commit(client, stream, messages, timeout).await
            }
            Wire::Local(local) => local.commit_batch(stream, messages),
        }
    }

    /// Sends a request and waits up to `timeout` for its answer.
    pub async fn request(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let client = match self {
            Wire::Server { client, .. } => client,
            Wire::Local(local) => return local.request(subject, headers, payload),
        };
        let request = async_nats::Request::new()
            .payload(payload)
            .headers(headers)
            .timeout(Some(timeout));
        match client.send_request(subject.clone(), request).await {
            Ok(reply) => Ok(Reply {
                payload: reply.payload,
                headers: reply.headers,
            }),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::TimedOut => RequestError::TimedOut,
                async_nats::RequestErrorKind::NoResponders => RequestError::NoResponders(subject),
                async_nats::RequestErrorKind::InvalidSubject => {
                    RequestError::Invalid { subject, source: e }
                }
                _ => RequestError::Failed { subject, source: e },
            }),
        }
    }

    /// Sends `what` to a delivery's ack subject `reply`.
    pub async fn ack(&self, reply: &Subject, what: &Ack) -> Result<(), AckError> {
        match self {
            Wire::Server { client, .. } => ack::send(client, reply, what).await,
            Wire::Local(local) => {
                local.acked(reply, what.clone());
                Ok(())
            }
        }
    }

    /// Sends an ack and waits up to `wait` for the server to confirm it.
    pub async fn ack_confirmed(&self, reply: &Subject, wait: Duration) -> Result<(), AckError> {
        match self {
            Wire::Server { client, .. } => ack::send_confirmed(client, reply, wait).await,
            Wire::Local(local) => {
                local.acked(reply, Ack::Ack);
                Ok(())
            }
        }
    }
}

/// One key-value bucket a subscriber is granted, on its wire.
#[derive(Clone)]
pub enum BucketStore {
    /// A JetStream bucket.
    Server(Box<kv::Store>),
    /// A bucket in this process.
    Local(Arc<dyn InProcessBucket>),
}

/// A key-value entry: its value and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The value.
    pub value: Bytes,
    /// The revision that wrote it.
    pub revision: u64,
}

/// Why a key-value call failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The server did not answer in time.
    #[error("timed out")]
    TimedOut(#[source] KvFailure),
    /// The server refused it or could not be reached.
    #[error(transparent)]
    Failed(KvFailure),
}

impl KvError {
    /// Whether it failed for want of NATS. `Certainly` when nothing was
    /// written (no stream leader answered: a write may be made again as
    /// it is); `Perhaps` when the answer did not come in time (a write may
    /// have been stored: only a read, a put or a delete may be made again).
    pub fn unavailable(&self) -> Unavailable {
        match self {
            KvError::TimedOut(_) => Unavailable::Perhaps,
            KvError::Failed(failure) if no_leader(failure) => Unavailable::Certainly,
            KvError::Failed(_) => Unavailable::No,
        }
    }
}

/// Whether a failed key-value call was for want of NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// NATS was there: the call failed for its own reason.
    No,
    /// NATS did not answer in time: a write may or may not be stored.
    Perhaps,
    /// No server took the call: nothing was written.
    Certainly,
}

/// Whether a call was refused for want of a stream leader, at any depth of
/// the error's causes: no responders (a write reports it as "no stream"),
/// or JetStream saying it cannot answer now. Nothing was done then.
fn no_leader(e: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context;
    let mut next = Some(e);
    while let Some(e) = next {
        let refused = e
            .downcast_ref::<context::PublishError>()
            .is_some_and(|e| matches!(e.kind(), context::PublishErrorKind::StreamNotFound))
            || e.downcast_ref::<async_nats::RequestError>()
                .is_some_and(|e| matches!(e.kind(), async_nats::RequestErrorKind::NoResponders))
            || e.downcast_ref::<async_nats::jetstream::Error>()
                .is_some_and(|api| super::publish::UNAVAILABLE_CODES.contains(&api.error_code().0));
        if refused {
            return true;
        }
        next = e.source();
    }
    false
}

/// What async-nats said about a failed key-value call.
#[derive(Debug, thiserror::Error)]
pub enum KvFailure {
    /// A `get`.
    #[error(transparent)]
    Entry(#[from] kv::EntryError),
    /// A `put`.
    #[error(transparent)]
    Put(#[from] kv::PutError),
    /// A `create`.
    #[error(transparent)]
    Create(#[from] kv::CreateError),
    /// An `update` or a `delete`.
    #[error(transparent)]
    Update(#[from] kv::UpdateError),
}

/// A failed call, by whether it timed out.
fn kv_error(e: impl Into<KvFailure>) -> KvError {
    let failure = e.into();
    if timed_out(&failure) {
        KvError::TimedOut(failure)
    } else {
        KvError::Failed(failure)
    }
}

/// Whether a call failed for want of an answer in time. async-nats
/// reports a timeout under the kind of whichever request timed out, at any
/// depth of the error's causes, so each cause's kind is read.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::{context, stream};
    let mut next = Some(e);
    while let Some(e) = next {
        let timeout = e
            .downcast_ref::<kv::EntryError>()
            .is_some_and(|e| matches!(e.kind(), kv::EntryErrorKind::TimedOut))
            || e.downcast_ref::<kv::UpdateError>()
                .is_some_and(|e| matches!(e.kind(), kv::UpdateErrorKind::TimedOut))
            || e.downcast_ref::<context::PublishError>()
                .is_some_and(|e| matches!(e.kind(), context::PublishErrorKind::TimedOut))
            || e.downcast_ref::<context::RequestError>()
                .is_some_and(|e| matches!(e.kind(), context::RequestErrorKind::TimedOut))
            || e.downcast_ref::<stream::DirectGetError>()
                .is_some_and(|e| matches!(e.kind(), stream::DirectGetErrorKind::TimedOut))
            || e.downcast_ref::<async_nats::RequestError>()
                .is_some_and(|e| matches!(e.kind(), async_nats::RequestErrorKind::TimedOut));
        if timeout {
            return true;
        }
        next = e.source();
    }
    false
}

impl BucketStore {
    /// The live value of `key`, if any.
    pub async fn get(&self, key: String) -> Result<Option<KvEntry>, KvError> {
        match self {
            BucketStore::Server(store) => match store.entry(key).await {
                Ok(Some(e)) if e.operation == kv::Operation::Put => Ok(Some(KvEntry {
                    value: e.value,
                    revision: e.revision,
                })),
                Ok(_) => Ok(None),
                Err(e) => Err(kv_error(e)),
            },
            BucketStore::Local(b) => Ok(b.get(&key)),
        }
    }

    /// Writes `value` under `key`; returns its revision.
    pub async fn put(&self, key: String, value: Bytes) -> Result<u64, KvError> {
        match self {
            BucketStore::Server(store) => store.put(key, value).await.map_err(kv_error),
            BucketStore::Local(b) => Ok(b.put(&key, value)),
        }
    }

    /// Writes `value` under `key` if it has no live value; `None` if it has.
    pub async fn create(&self, key: String, value: Bytes) -> Result<Option<u64>, KvError> {
        match self {
            BucketStore::Server(store) => match store.create(key, value).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(kv_error(e)),
            },
            BucketStore::Local(b) => Ok(b.create(&key, value)),
        }
    }

    /// Writes `value` under `key` if its last revision is `revision`;
    /// `None` if it is not.
    pub async fn update(
        &self,
        key: String,
        value: Bytes,
        revision: u64,
    ) -> Result<Option<u64>, KvError> {
        match self {
            BucketStore::Server(store) => match store.update(key, value, revision).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(kv_error(e)),
            },
            BucketStore::Local(b) => Ok(b.update(&key, value, revision)),
        }
    }

    /// Deletes `key`'s value.
    pub async fn delete(&self, key: String) -> Result<(), KvError> {
        match self {
            BucketStore::Server(store) => store.delete(key).await.map_err(kv_error),
            BucketStore::Local(b) => {
                b.delete(&key);
                Ok(())
            }
        }
    }
}
