//! Step 5 of the data flow: one delivery end to end. Skips what must not
//! run (a message already finished here, a delivery past `max_deliver`),
//! runs the handler, logs and counts its outcome, and hands the decision
//! (`settle::disposition`) to the subscriber's settler.

use crate::config::SubscriberConfig;
use crate::settle::{disposition, past_max_deliver, InFlight, Outcome, Settler};
use crate::wasm::host::SubscriberHost;
use crate::wasm::invoke::Handler;
use std::sync::Arc;
use std::time::Instant;

/// Everything one subscriber needs on the message path.
pub struct Subscriber {
    /// Its configuration.
    pub config: SubscriberConfig,
    /// Its compiled handler.
    pub handler: Handler,
    /// Capabilities and NATS handles shared with the guest's stores.
    pub host: Arc<SubscriberHost>,
    /// Cancelled when it must stop pulling: the service stops, or its
    /// tenant's connection is gone for good.
    pub stop: tokio_util::sync::CancellationToken,
    /// Its handlers running now: a subscriber retired by a reload is gone
    /// once they have settled.
    pub tasks: tokio_util::task::TaskTracker,
    /// Its last pull request being read to its end, handing back what it
    /// still delivers.
    pub handing_back: tokio_util::task::TaskTracker,
    /// Set when a reload retires it (rather than the service stopping): its
    /// last pull request is read until it expires.
    pub retiring: std::sync::atomic::AtomicBool,
}

impl Subscriber {
    /// Its settler.
    pub fn settler(&self) -> &Settler {
        &self.host.settler
    }

    /// Handles one delivery and settles it.
    pub async fn dispatch(&self, msg: Arc<InFlight>) {
        let settler = self.settler();
        let stats = &settler.stats;
        stats.started();
        if settler.ledger.already_finished(msg.sequence) {
            settler.already_finished(&msg).await;
            return;
        }
        let delivered = msg.delivery.delivered;
        if let Some(decision) = past_max_deliver(delivered, settler.policy()) {
            stats.past_max_deliver();
            tracing::warn!(subscriber = %self.config.name, seq = msg.sequence, delivered, "delivered past max_deliver: its last handled delivery did not finish; settling it without the handler");
            settler.apply(&msg, decision).await;
            return;
        }
        let started = Instant::now();
        let outcome = self.handler.invoke(msg.clone()).await;
        stats.finished(started.elapsed());
        let name = &self.config.name;
        let seq = msg.sequence;
        match &outcome {
            Outcome::Ok => {}
            Outcome::Retry { delay, reason } => {
                stats.retried();
                tracing::info!(subscriber = %name, seq, delivered, ?delay, "handler asked for a retry: {reason}");
            }
            Outcome::Reject(reason) => {
                stats.rejected();
                tracing::warn!(subscriber = %name, seq, delivered, "handler rejected the message: {reason}");
            }
            Outcome::Failed { cause, detail } => {
                stats.failed(*cause);
                tracing::warn!(subscriber = %name, seq, delivered, cause = cause.as_str(), "handler failed: {detail}");
            }
        }
        let decision = disposition(&outcome, &msg.by_guest(), delivered, settler.policy());
        settler.apply(&msg, decision).await;
    }
}
