//! Step 5–6 of the data flow: one message end to end. Wraps the delivery,
//! runs the handler, decides the disposition (`nats::ack::disposition`) and
//! applies it: ack, nak, term, or a dead-letter copy then term.

use crate::config::SubscriberConfig;
use crate::nats::ack::{disposition, Disposition, Outcome, Policy};
use crate::nats::publish;
use crate::stats::{Settled, SubscriberStats};
use crate::wasm::host::{InFlight, SubscriberHost};
use crate::wasm::invoke::Handler;
use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use std::sync::Arc;
use std::time::Instant;

/// Headers set on a dead-letter copy.
pub mod dead_letter_headers {
    /// Why the message was terminated.
    pub const REASON: &str = "Natsapp-Reason";
    /// The subscriber that gave up.
    pub const SUBSCRIBER: &str = "Natsapp-Subscriber";
    /// The original subject.
    pub const SUBJECT: &str = "Natsapp-Subject";
    /// The original stream.
    pub const STREAM: &str = "Natsapp-Stream";
    /// The original stream sequence.
    pub const SEQUENCE: &str = "Natsapp-Sequence";
    /// Deliveries made.
    pub const DELIVERED: &str = "Natsapp-Delivered";
}

/// Everything one subscriber needs on the message path.
pub struct Subscriber {
    /// Its configuration.
    pub config: SubscriberConfig,
    /// Its compiled handler.
    pub handler: Handler,
    /// Capabilities and NATS handles shared with the guest's stores.
    pub host: Arc<SubscriberHost>,
    /// Its counters.
    pub stats: Arc<SubscriberStats>,
    /// Settling policy.
    pub policy: Policy,
}

/// The longest reason sent with a term (the server logs it in advisories).
const MAX_REASON: usize = 1024;

fn one_line(s: &str) -> String {
    let mut s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > MAX_REASON {
        let cut = (0..=MAX_REASON)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        s.truncate(cut);
    }
    s
}

/// Terminates `message`, telling the server why.
pub async fn term_with_reason(
    client: &async_nats::Client,
    message: &jetstream::Message,
    reason: &str,
) -> Result<(), String> {
    let reply = message.reply.clone().ok_or("not a JetStream message")?;
    client
        .publish(reply, format!("+TERM {}", one_line(reason)).into())
        .await
        .map_err(|e| e.to_string())
}

impl Subscriber {
    /// Handles one delivery and settles it.
    pub async fn dispatch(&self, message: jetstream::Message) {
        let msg = match InFlight::new(message) {
            Ok(msg) => Arc::new(msg),
            Err((message, e)) => {
                tracing::error!(subscriber = %self.config.name, "not a JetStream delivery ({e}); asking for redelivery");
                self.stats.started();
                let ok = message.ack_with(AckKind::Nak(None)).await.is_ok();
                self.stats
                    .settled(if ok { Settled::Naked } else { Settled::Error });
                return;
            }
        };
        self.stats.started();
        let started = Instant::now();
        let outcome = self.handler.invoke(msg.clone()).await;
        self.stats.finished(started.elapsed());
        let name = &self.config.name;
        let seq = msg.sequence;
        let delivered = msg.delivery.delivered;
        match &outcome {
            Outcome::Ok => {}
            Outcome::Retry { delay, reason } => {
                self.stats.retried();
                tracing::info!(subscriber = %name, seq, delivered, ?delay, "handler asked for a retry: {reason}");
            }
            Outcome::Reject(reason) => {
                self.stats.rejected();
                tracing::warn!(subscriber = %name, seq, delivered, "handler rejected the message: {reason}");
            }
            Outcome::Failed { cause, detail } => {
                self.stats.failed(*cause);
                tracing::warn!(subscriber = %name, seq, delivered, cause = cause.as_str(), "handler failed: {detail}");
            }
        }
        let decision = disposition(&outcome, msg.settled_by_guest(), delivered, &self.policy);
        self.settle(&msg, decision).await;
    }

    async fn settle(&self, msg: &InFlight, decision: Disposition) {
        let m = &msg.message;
        let (how, result) = match decision {
            Disposition::Leave => (Settled::ByGuest, Ok(())),
            Disposition::Ack if self.config.double_ack => (
                Settled::Acked,
                m.double_ack().await.map_err(|e| e.to_string()),
            ),
            Disposition::Ack => (Settled::Acked, m.ack().await.map_err(|e| e.to_string())),
            Disposition::Nak(delay) => (
                Settled::Naked,
                m.ack_with(AckKind::Nak(delay))
                    .await
                    .map_err(|e| e.to_string()),
            ),
            Disposition::Term {
                reason,
                dead_letter: false,
            } => (
                Settled::Termed,
                term_with_reason(&self.host.client, m, &reason).await,
            ),
            Disposition::Term {
                reason,
                dead_letter: true,
            } => match self.dead_letter(msg, &reason).await {
                Ok(()) => (
                    Settled::DeadLettered,
                    term_with_reason(&self.host.client, m, &reason).await,
                ),
                Err(e) => {
                    tracing::error!(subscriber = %self.config.name, seq = msg.sequence, "dead-letter copy failed, so the message is kept and redelivered: {e}");
                    let delay = self.policy.backoff_step(msg.delivery.delivered);
                    (
                        Settled::Naked,
                        m.ack_with(AckKind::Nak(delay))
                            .await
                            .map_err(|e| e.to_string()),
                    )
                }
            },
        };
        match result {
            Ok(()) => self.stats.settled(how),
            Err(e) => {
                self.stats.settled(Settled::Error);
                tracing::warn!(subscriber = %self.config.name, seq = msg.sequence, "could not settle the message ({how:?}): {e}; the server redelivers it after ack_wait");
            }
        }
    }

    /// Copies the message to the dead-letter subject with why and where from.
    async fn dead_letter(&self, msg: &InFlight, reason: &str) -> Result<(), publish::PublishError> {
        use dead_letter_headers::*;
        let Some(subject) = &self.config.dead_letter else {
            return Ok(());
        };
        let mut headers = HeaderMap::new();
        if let Some(original) = &msg.message.headers {
            for (name, values) in original.iter() {
                let n: &str = name.as_ref();
                if n.starts_with("Nats-") {
                    continue;
                }
                for v in values {
                    headers.append(name.clone(), v.clone());
                }
            }
        }
        headers.insert(REASON, one_line(reason).as_str());
        headers.insert(SUBSCRIBER, self.config.name.as_str());
        headers.insert(SUBJECT, msg.message.subject.as_str());
        headers.insert(STREAM, msg.stream.as_str());
        headers.insert(SEQUENCE, msg.sequence.to_string().as_str());
        headers.insert(DELIVERED, msg.delivery.delivered.to_string().as_str());
        headers.insert(
            "Nats-Msg-Id",
            format!(
                "dlq:{}:{}:{}",
                msg.stream, self.config.durable, msg.sequence
            )
            .as_str(),
        );
        let route = self.host.routes.route(subject.as_str());
        publish::publish(
            &self.host.client,
            &self.host.jetstream,
            route,
            subject.to_string(),
            headers,
            msg.message.payload.clone(),
        )
        .await
        .map(|_| ())
    }
}
