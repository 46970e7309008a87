//! Committing a delivery's atomic outputs (`outputs.mode = "atomic"`)
//! before it is settled: each stream's held batch in turn, then the held
//! core publishes. The settler commits when the outcome keeps the outputs
//! (`disposition::commits`) and acks only after this returns `Ok`.

use crate::counters::SubscriberStats;
use crate::error::ErrorChain;
use crate::nats::batch::{CommitError, Committed};
use crate::nats::publish::Route;
use crate::nats::unavailable::{retrying, Patience};
use crate::nats::wire::Wire;
use crate::outputs::held::Held;
use std::time::Duration;

/// Tries of a batch the server refuses for having too many batches in
/// flight on the stream (other connections' share of its 50).
const BUSY_ATTEMPTS: u32 = 8;
/// The pause after the first such refusal, doubled after each (the other
/// batches take milliseconds each): 40 ms to 1.3 s, 2.5 s in all.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// How one stream's batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamCommit {
    /// Stored; the PubAck.
    Committed(Committed),
    /// An earlier delivery of the input committed its batch to the stream.
    AlreadyStored {
        /// The stream.
        stream: String,
    },
}

/// A stream's batch that could not be committed; the batches before it were.
#[derive(Debug, thiserror::Error)]
#[error("{committed} of {batches} atomic batches committed, then: {source}")]
pub struct CommitFailed {
    /// Batches stored (or found stored) before this one.
    pub committed: usize,
    /// Batches the delivery had.
    pub batches: usize,
    /// Why this one was not.
    #[source]
    pub source: CommitError,
}

/// Commits each stream's batch of `held` in the order the handler first
/// published to the stream, then sends the core publishes. Stops at the
/// first batch that fails: those before it stay stored (each batch is
/// atomic on its own; outputs to two streams are not one transaction).
pub async fn commit(
    held: Held,
    wire: &Wire,
    stats: &SubscriberStats,
    patience: Patience,
) -> Result<Vec<StreamCommit>, CommitFailed> {
    let (batches, core) = held.into_parts();
    let total = batches.len();
    let mut done = Vec::with_capacity(total);
    for batch in batches {
        let mut attempt = 0;
        let ended = loop {
            let sent = retrying(
                || format!("the commit of an atomic batch to stream {:?}", batch.stream),
                patience,
                || wire.commit_batch(&batch.stream, &batch.messages, batch.timeout),
                CommitError::unavailable,
                || wire.connected(),
                |_| stats.nats_unavailable(),
            )
            .await;
            match sent {
                Err(CommitError::Busy { .. }) if attempt + 1 < BUSY_ATTEMPTS => {
                    attempt += 1;
                    stats.batch_busy();
                    tokio::time::sleep(BUSY_PAUSE * (1 << attempt)).await;
                }
                Ok(c) if c.count != batch.messages.len() as u64 => {
                    break Err(CommitError::Miscounted {
                        stream: batch.stream.clone(),
                        counted: c.count,
                        sent: batch.messages.len(),
                    })
                }
                Ok(c) => break Ok(StreamCommit::Committed(c)),
                Err(CommitError::AlreadyStored { stream }) => {
                    break Ok(StreamCommit::AlreadyStored { stream })
                }
                Err(e) => break Err(e),
            }
        };
        match ended {
            Ok(c) => done.push(c),
            Err(source) => {
                return Err(CommitFailed {
                    committed: done.len(),
                    batches: total,
                    source,
                })
            }
        }
    }
    for m in core {
        let subject = m.subject.clone();
        if let Err(e) = wire
            .publish(Route::Core, m.subject, m.headers, m.payload)
            .await
        {
            tracing::warn!(
                "core publish to {subject:?} after the commit failed: {}",
                ErrorChain(&e)
            );
        }
    }
    Ok(done)
}
