//! Confirming a delivery's pipelined outputs (`outputs.mode =
//! "pipelined"`) before it is settled: the settler waits for every PubAck
//! and acknowledges the input only when all were stored.
//!
//! An output whose PubAck fails for want of NATS (a timeout, an election)
//! is sent again with the same `Nats-Msg-Id`, as an immediate publish is,
//! so it is stored once. One that cannot be stored (too large for its
//! stream) fails the delivery: the input is redelivered, or dead-lettered
//! on its last delivery, and the outputs stored meanwhile are recognised by
//! their ids.

use crate::counters::SubscriberStats;
use crate::error::ErrorChain;
use crate::message::pipeline::Pending;
use crate::nats::publish::{PublishError, Route};
use crate::nats::unavailable::{retrying, Patience};
use crate::nats::wire::Wire;

/// An output that could not be stored; the others were awaited too.
#[derive(Debug, thiserror::Error)]
#[error("{stored} of {outputs} pipelined outputs stored; the first that was not: {source}")]
pub struct ConfirmFailed {
    /// Outputs confirmed stored.
    pub stored: usize,
    /// Outputs the delivery sent.
    pub outputs: usize,
    /// Why the first one that failed was not stored.
    #[source]
    pub source: PublishError,
}

/// Waits for the PubAck of every output in `pending`, sending again, while
/// `patience` lasts, those that failed for want of NATS. Counts each in the
/// subscriber's publish statistics and ends its span.
pub async fn confirm(
    pending: Vec<Pending>,
    wire: &Wire,
    stats: &SubscriberStats,
    patience: Patience,
    subscriber: &str,
) -> Result<(), ConfirmFailed> {
    let outputs = pending.len();
    let mut stored = 0;
    let mut first_failure = None;
    for output in pending {
        let acked = match output.ack.await {
            Err(e) if e.unavailable() => {
                let route = Route::JetStream(output.timeout);
                retrying(
                    || format!("subscriber {subscriber:?}: publish to {:?}", output.subject),
                    patience,
                    || {
                        let (headers, payload) = (output.headers.clone(), output.payload.clone());
                        wire.publish(route, output.subject.clone(), headers, payload)
                    },
                    PublishError::unavailable,
                    || wire.connected(),
                    |_| stats.nats_unavailable(),
                )
                .await
            }
            other => other,
        };
        stats.published(output.sent.elapsed(), acked.is_ok());
        if let Some(span) = output.span {
            span.finish(
                acked
                    .as_ref()
                    .err()
                    .map(|e| (e.kind(), ErrorChain(e).to_string())),
            );
        }
        match acked {
            Ok(_) => stored += 1,
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        None => Ok(()),
        Some(source) => Err(ConfirmFailed {
            stored,
            outputs,
            source,
        }),
    }
}
