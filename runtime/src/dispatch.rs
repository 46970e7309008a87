//! Step 5 of the data flow: one delivery end to end. Skips what must not
//! run (a message already finished here, a delivery past `max_deliver`),
//! runs the handler, logs and counts its outcome, and hands the decision
//! (`settle::disposition`) to the subscriber's settler.

use crate::config::SubscriberConfig;
use crate::message::{InFlight, Outcome};
use crate::settle::ledger::Busy;
use crate::settle::{past_max_deliver, Settler};
use crate::wasm::host::SubscriberHost;
use crate::wasm::invoke::Handler;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Everything one subscriber needs on the message path.
pub struct Subscriber {
    /// Its configuration.
    pub config: SubscriberConfig,
    /// Its compiled handler.
    pub handler: Handler,
    /// Capabilities and NATS handles shared with the guest's stores.
    pub host: Arc<SubscriberHost>,
    /// Its tenant's `concurrency` quota, shared with the tenant's other
    /// subscribers: a free handler slot also takes one of these.
    pub tenant_slots: Option<Arc<tokio::sync::Semaphore>>,
    /// JetStream on its connection: its consumer is pulled, watched and
    /// recreated through it.
    pub jetstream: async_nats::jetstream::Context,
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

/// Whether the connection was made anew after a handler began at `since`,
/// within two `ack_wait`s of now: a server that restarts redelivers what it
/// had pending within one, so a redelivery later than that is a late
/// in-progress signal again, whatever happened before.
fn reconnected_lately(last_connect: Option<Instant>, since: Instant, ack_wait: Duration) -> bool {
    last_connect.is_some_and(|at| at > since && at.elapsed() <= ack_wait * 2)
}

impl Subscriber {
    /// Its settler.
    pub fn settler(&self) -> &Settler {
        &self.host.settler
    }

    /// Handles one delivery and settles it, inside its `process` span when
    /// traces are on (log events then carry the trace id).
    pub async fn dispatch(&self, msg: Arc<InFlight>) {
        let Some(tracer) = &self.host.tracer else {
            self.handle(&msg).await;
            return;
        };
        let trace = msg.trace.get_or_init(|| tracer.process(&msg));
        let span = tracing::info_span!("message", trace_id = %trace.trace_id());
        let handled = self.handle(&msg).instrument(span).await;
        trace.finish(tracer, handled.outcome, handled.error.as_deref());
    }

    /// Says why `msg` came while `busy`, its earlier delivery's handler,
    /// still runs here: at warning level only when nothing but a late
    /// in-progress signal explains it.
    fn log_redelivered_while_running(&self, msg: &InFlight, busy: &Busy) {
        let (name, seq, delivered) = (&self.config.name, msg.sequence, msg.delivery.delivered);
        if delivered == 1 {
            // A first delivery of a message already running here: the
            // server has no record of the earlier delivery (a restart lost
            // it, or a new consumer leader never heard of it).
            tracing::info!(subscriber = %name, seq, "delivered anew while its handler still runs here (the server lost its record of the earlier delivery): this delivery waits for that handler");
        } else if reconnected_lately(
            self.settler().last_connect(),
            busy.since,
            self.config.ack_wait,
        ) {
            // The connection was made anew since that handler began, and
            // lately: the server restarted (and may have kept an older
            // state of the durable than the in-progress signals had
            // reached) or the outage outlasted ack_wait.
            tracing::info!(subscriber = %name, seq, delivered, "delivered again after the connection was lost or the server restarted, while its handler still runs here: this delivery waits for that handler");
        } else {
            tracing::warn!(subscriber = %name, seq, delivered, "delivered again while its handler still runs here (its in-progress signals did not reach the server in time): this delivery waits for that handler");
        }
    }

    async fn handle(&self, msg: &Arc<InFlight>) -> Handled {
        let settler = self.settler();
        let stats = &settler.stats;
        stats.started();
        if msg.delivery.delivered == 1 && is_redriven(&msg.message) {
            stats.redriven();
        }
        // Also when its handling starts, for the ledger: one clock read.
        let started = Instant::now();
        // The server delivered it again while its handler still runs here:
        // this delivery waits for that one and follows its result.
        let mut waited = false;
        let _running = loop {
            match settler.ledger.start(msg.sequence, started) {
                Ok(running) => break running,
                Err(busy) => {
                    waited = true;
                    stats.redelivered_while_running();
                    self.log_redelivered_while_running(msg, &busy);
                    settler.in_progress_while(msg, busy.ended()).await;
                }
            }
        };
        if settler.ledger.already_finished(msg.sequence) {
            settler.already_finished(msg).await;
            return Handled {
                outcome: "replayed",
                error: None,
            };
        }
        if waited {
            // The handler it waited for did not finish the message (a
            // retry, a failure): redelivered after its backoff step, as
            // that result asked, rather than handled again at once.
            let step = settler.policy().backoff_step(msg.delivery.delivered);
            settler.hand_back(msg, step).await;
            return Handled {
                outcome: "handed_back",
                error: None,
            };
        }
        let delivered = msg.delivery.delivered;
        if let Some(decision) = past_max_deliver(delivered, settler.policy()) {
            stats.past_max_deliver();
            tracing::warn!(subscriber = %self.config.name, seq = msg.sequence, delivered, "delivered past max_deliver: its last handled delivery did not finish; settling it without the handler");
            let outcome = decision.name();
            settler.apply(msg, decision).await;
            return Handled {
                outcome,
                error: Some("past_max_deliver".into()),
            };
        }
        let outcome = self.handler.invoke(msg.clone()).await;
        stats.finished(started.elapsed(), &outcome);
        let name = &self.config.name;
        let seq = msg.sequence;
        let error = match &outcome {
            Outcome::Ok => None,
            Outcome::Retry { delay, reason } => {
                tracing::info!(subscriber = %name, seq, delivered, ?delay, "handler asked for a retry: {reason}");
                None
            }
            Outcome::Reject(reason) => {
                tracing::warn!(subscriber = %name, seq, delivered, "handler rejected the message: {reason}");
                Some("rejected".to_string())
            }
            Outcome::Failed { cause, detail } => {
                tracing::warn!(subscriber = %name, seq, delivered, cause = cause.as_str(), "handler failed: {detail}");
                Some(cause.as_str().to_string())
            }
        };
        let (decision, not_committed) = settler.conclude(msg, &outcome).await;
        let error = error.or(not_committed);
        let outcome = decision.name();
        settler.apply(msg, decision).await;
        Handled { outcome, error }
    }
}

/// How a delivery ended, for its trace.
struct Handled {
    /// How it was settled.
    outcome: &'static str,
    /// Why the handler did not succeed, when it failed or rejected it.
    error: Option<String>,
}

/// Whether `message` was put back from the dead letters by `redrive`.
fn is_redriven(message: &async_nats::Message) -> bool {
    message.headers.as_ref().is_some_and(|h| {
        h.get(crate::settle::dead_letter::headers::REDRIVEN)
            .is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redelivery_is_put_down_to_a_reconnect_only_soon_after_one_that_followed_the_start() {
        let ack_wait = Duration::from_secs(10);
        let started = Instant::now() - Duration::from_secs(5);
        let lately = Instant::now() - Duration::from_secs(1);
        let long_ago = Instant::now() - Duration::from_secs(25);
        let before_start = started - Duration::from_secs(1);
        assert!(reconnected_lately(Some(lately), started, ack_wait));
        // No reconnect since the handler began: a late in-progress signal.
        assert!(!reconnected_lately(Some(before_start), started, ack_wait));
        // A reconnect since, but more than two ack_waits ago.
        assert!(!reconnected_lately(
            Some(long_ago),
            long_ago - Duration::from_secs(1),
            ack_wait
        ));
        // In this process there is no connection to lose.
        assert!(!reconnected_lately(None, started, ack_wait));
    }
}
