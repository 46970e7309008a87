//! JetStream's atomic batch publish (nats-server 2.12+, ADR-50): messages
//! to one stream stored all together or not at all. Every message carries
//! `Nats-Batch-Id` and `Nats-Batch-Sequence`; the first is sent as a
//! request (a stream that refuses batches says so at once), the last
//! carries `Nats-Batch-Commit` and its answer is the batch's PubAck.
//!
//! Written here rather than taken from `jetstream-extra`: that crate
//! refuses `Nats-Msg-Id` in a batch, and the ids are what lets a
//! redelivery recognise a batch already committed.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most messages the server takes in one batch.
pub const MAX_MESSAGES: usize = 1000;

/// Batches one connection keeps open on one stream at once. The server
/// allows 50 per stream; the rest is left to other connections (replicas).
pub const SLOTS_PER_STREAM: usize = 32;

/// One message of a batch.
#[derive(Debug, Clone)]
pub struct BatchMessage {
    /// Its subject (one the stream captures).
    pub subject: String,
    /// Its headers (its `Nats-Msg-Id` among them).
    pub headers: HeaderMap,
    /// Its payload.
    pub payload: Bytes,
}

/// The PubAck of a committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The stream that stored it.
    pub stream: String,
    /// The stream sequence of its last message.
    pub last_sequence: u64,
    /// How many messages the server says it stored.
    pub count: u64,
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A message's `Nats-Msg-Id` is already stored in the stream (error
    /// 10201): the server rejects the whole batch.
    #[error("stream {stream:?} already holds a message id of the batch")]
    AlreadyStored {
        /// The stream.
        stream: String,
    },
    /// The stream has as many batches open as the server allows (10210).
    #[error("stream {stream:?} has too many batches in flight")]
    Busy {
        /// The stream.
        stream: String,
    },
    /// No answer to the commit in time: it may or may not be stored.
    #[error("no PubAck for the batch to stream {stream:?} within {timeout:?}")]
    Timeout {
        /// The stream.
        stream: String,
        /// The wait.
        timeout: Duration,
    },
    /// The stream stored a batch's first message on its own: the server or
    /// the stream does not take atomic batches.
    #[error("stream {stream:?} stored the batch's first message on its own: atomic batches need nats-server 2.12 or newer and a stream with allow_atomic")]
    NotAtomic {
        /// The stream.
        stream: String,
    },
    /// The server refused the batch (atomic publish disabled, too large, …).
    #[error("stream {stream:?} refused the batch: {description} (error {code})")]
    Refused {
        /// The stream.
        stream: String,
        /// The server's error code.
        code: u64,
        /// The server's description.
        description: String,
    },
    /// The connection could not send a staged message of it.
    #[error("cannot send the batch to stream {stream:?}")]
    Send {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: async_nats::client::PublishError,
    },
    /// A request of it (its first message, or the commit) failed.
    #[error("cannot send the batch to stream {stream:?}")]
    Request {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: async_nats::RequestError,
    },
    /// The server's answer is not a JetStream answer.
    #[error("stream {stream:?} answered the batch with something unreadable: {answer}")]
    Unreadable {
        /// The stream.
        stream: String,
        /// The answer, as text.
        answer: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The commit's answer is about another batch.
    #[error("stream {stream:?} answered the commit for another batch")]
    OtherBatch {
        /// The stream.
        stream: String,
    },
    /// The PubAck counts another number of messages than the batch held.
    #[error("stream {stream:?} counts {counted} messages of the batch's {sent}")]
    Miscounted {
        /// The stream.
        stream: String,
        /// What the PubAck counts.
        counted: u64,
        /// What was sent.
        sent: usize,
    },
}

impl CommitError {
    /// Whether it failed for want of NATS (no answer in time, no stream
    /// leader to answer, JetStream unavailable for now, the connection
    /// down): the same batch, whose ids make a second commit of it refused
    /// as already stored, may be sent again.
    pub fn unavailable(&self) -> bool {
        match self {
            CommitError::Timeout { .. } | CommitError::Send { .. } => true,
            CommitError::Refused { code, .. } => super::publish::UNAVAILABLE_CODES.contains(code),
            CommitError::Request { source, .. } => matches!(
                source.kind(),
                async_nats::RequestErrorKind::TimedOut | async_nats::RequestErrorKind::NoResponders
            ),
            _ => false,
        }
    }
}

/// The server's code for a batch holding an id already stored.
const DUPLICATE_MESSAGE_ID: u64 = 10201;
/// The server's code for too many batches in flight on the stream.
const TOO_MANY_INFLIGHT: u64 = 10210;

/// The server's answer to a batch message.
#[derive(Deserialize)]
struct Answer {
    error: Option<ApiError>,
    seq: Option<u64>,
    count: Option<u64>,
    batch: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    err_code: u64,
    description: String,
}

/// Per stream, the batches this connection may have open at once.
#[derive(Debug, Default)]
pub struct BatchSlots {
    streams: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl BatchSlots {
    /// Waits for a slot on `stream`.
    pub async fn take(&self, stream: &str) -> OwnedSemaphorePermit {
        let slots = self
            .streams
            .lock()
            .expect("batch slots lock")
            .entry(stream.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(SLOTS_PER_STREAM)))
            .clone();
        slots.acquire_owned().await.expect("never closed")
    }
}

/// Publishes `messages` to `stream` as one atomic batch and waits up to
/// `timeout` for each answer.
pub async fn commit(
    client: &async_nats::Client,
    stream: &str,
    messages: &[BatchMessage],
    timeout: Duration,
) -> Result<Committed, CommitError> {
    let batch_id = nuid::next().to_string();
    let total = messages.len();
    for (i, m) in messages.iter().enumerate() {
        let sequence = i + 1;
        // Copied, not moved: a batch refused as busy is sent again.
        let mut headers = m.headers.clone();
        headers.insert("Nats-Batch-Id", batch_id.as_str());
        headers.insert("Nats-Batch-Sequence", sequence.to_string().as_str());
        let last = sequence == total;
        if last {
            headers.insert("Nats-Batch-Commit", "1");
        }
        if sequence > 1 && !last {
            client
                .publish_with_headers(m.subject.clone(), headers, m.payload.clone())
                .await
                .map_err(|source| CommitError::Send {
                    stream: stream.to_string(),
                    source,
                })?;
            continue;
        }
        let request = async_nats::Request::new()
            .payload(m.payload.clone())
            .headers(headers)
            .timeout(Some(timeout));
        let reply = client
            .send_request(m.subject.clone(), request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::TimedOut => CommitError::Timeout {
                    stream: stream.to_string(),
                    timeout,
                },
                _ => CommitError::Request {
                    stream: stream.to_string(),
                    source: e,
                },
            })?;
        if !last && reply.payload.is_empty() {
            continue;
        }
        let answer: Answer =
            serde_json::from_slice(&reply.payload).map_err(|source| CommitError::Unreadable {
                stream: stream.to_string(),
                answer: String::from_utf8_lossy(&reply.payload).into_owned(),
                source,
            })?;
        if let Some(error) = answer.error {
            return Err(match error.err_code {
                DUPLICATE_MESSAGE_ID => CommitError::AlreadyStored {
                    stream: stream.to_string(),
                },
                TOO_MANY_INFLIGHT => CommitError::Busy {
                    stream: stream.to_string(),
                },
                code => CommitError::Refused {
                    stream: stream.to_string(),
                    code,
                    description: error.description,
                },
            });
        }
        if !last {
            // A PubAck for a staged message: it was stored as a plain one.
            return Err(CommitError::NotAtomic {
                stream: stream.to_string(),
            });
        }
        if answer.batch.as_deref() != Some(batch_id.as_str()) {
            return Err(CommitError::OtherBatch {
                stream: stream.to_string(),
            });
        }
        return Ok(Committed {
            stream: stream.to_string(),
            last_sequence: answer.seq.unwrap_or(0),
            count: answer.count.unwrap_or(0),
        });
    }
    // Nothing to store: stored, all of it.
    Ok(Committed {
        stream: stream.to_string(),
        last_sequence: 0,
        count: 0,
    })
}
