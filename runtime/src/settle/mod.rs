//! Step 6 of the data flow: settling. Every acknowledgement a delivery gets
//! — ack, nak, term, in-progress, and the dead-letter copy before a term —
//! is written here and counted here, whoever asked for it: the runtime after
//! `handle` (`disposition`), the guest during it, the in-progress heartbeat,
//! and the scheduler at shutdown.
//!
//! The promise kept here: no delivery leaves the consumer without a
//! handler's success, a dead-letter copy (when `dead_letter` is set), or a
//! term the configuration asked for. The server's `max_deliver` is one more
//! than the file's (see `SubscriberConfig::server_max_deliver`), so any
//! handled delivery may be nak'd safely; the extra one is only settled.

pub mod commit;
pub mod confirm;
pub mod dead_letter;
pub mod disposition;
pub mod ledger;

use crate::config::{defaults, OutputsMode, Subject, SubscriberConfig};
use crate::counters::{Settled, SubscriberStats};
use crate::error::ErrorChain;
use crate::message::{ByGuest, FailureCause, InFlight, NotADelivery, Outcome};
use crate::nats::ack::{Ack, AckError};
use crate::nats::publish::{PublishError, PublishRoutes, Route};
use crate::nats::unavailable::{retrying, Patience};
use crate::nats::wire::Wire;
use commit::StreamCommit;
pub use disposition::{disposition, past_max_deliver, Disposition, Policy, TermCause};
use ledger::AckLedger;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long a confirmed ack (`double_ack`) waits for the server.
const CONFIRM_WAIT: Duration = Duration::from_secs(10);
/// Longest pause between attempts to dead-letter a message on its last delivery.
const MAX_COPY_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Why a guest's own ack, nak or term was refused.
#[derive(Debug, thiserror::Error)]
pub enum GuestSettleError {
    /// It was settled before.
    #[error("the message is already settled")]
    AlreadySettled,
    /// The acknowledgement could not be sent.
    #[error(transparent)]
    Unavailable(#[from] AckError),
}

/// A guest's own settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestSettle {
    /// `msg.ack()`
    Ack,
    /// `msg.nak(delay)`
    Nak(Option<Duration>),
    /// `msg.term(reason)`
    Term(Option<String>),
}

/// Settles one subscriber's deliveries.
pub struct Settler {
    subscriber: Arc<str>,
    durable: String,
    wire: Wire,
    dead_letter: Option<(Subject, Duration)>,
    policy: Policy,
    double_ack: bool,
    /// `outputs.mode`: with `"atomic"` the handler's outputs are committed
    /// before the input is settled, with `"pipelined"` their PubAcks are
    /// awaited then; in both the guest's own ack or nak waits for that.
    outputs: OutputsMode,
    /// How often a delivery whose outputs are being committed is reported
    /// in progress (as the handler's heartbeat does while it runs).
    progress_every: Duration,
    /// The subscriber's counters.
    pub stats: Arc<SubscriberStats>,
    /// What the subscriber has finished.
    pub ledger: Arc<AckLedger>,
}

impl Settler {
    /// The settler of `sub`, sending acknowledgements and dead-letter
    /// copies over `wire`.
    /// A settler replacing `previous` (a reload) shares its statistics and
    /// finished-message ledger: the subscriber keeps its figures and still
    /// recognises a message its predecessor finished.
    pub fn new(
        sub: &SubscriberConfig,
        wire: Wire,
        routes: &PublishRoutes,
        previous: Option<&Settler>,
    ) -> Self {
        let dead_letter = sub.dead_letter.clone().map(|subject| {
            let wait = match routes.route(subject.as_str()) {
                Route::JetStream(wait) => wait,
                Route::Core => defaults::PUBLISH_TIMEOUT,
            };
            (subject, wait)
        });
        Settler {
            subscriber: sub.name.as_str().into(),
            durable: sub.durable.to_string(),
            wire,
            dead_letter,
            policy: Policy {
                max_deliver: sub.max_deliver,
                backoff: sub.backoff.clone(),
                dead_letter: sub.dead_letter.is_some(),
            },
            double_ack: sub.double_ack,
            outputs: sub.outputs_mode,
            progress_every: sub.progress_every(),
            stats: previous.map_or_else(Default::default, |p| p.stats.clone()),
            ledger: previous.map_or_else(Default::default, |p| p.ledger.clone()),
        }
    }

    /// The policy decisions are made with.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// When its connection was last made (`None` in this process).
    pub fn last_connect(&self) -> Option<std::time::Instant> {
        self.wire.last_connect()
    }

    /// How long a call made for `msg` keeps trying while NATS is
    /// unavailable: on its last handled delivery until NATS answers (a
    /// failure would dead-letter it for NATS's sake), else at most
    /// [`PATIENCE`](crate::nats::unavailable::PATIENCE).
    pub fn patience(&self, msg: &InFlight) -> Patience {
        if self
            .policy
            .max_deliver
            .is_some_and(|max| msg.delivery.delivered >= max)
        {
            Patience::UntilAnswered
        } else {
            Patience::AtMost(crate::nats::unavailable::PATIENCE)
        }
    }

    /// Whether the server will not deliver `msg` again after this delivery.
    fn last_delivery(&self, msg: &InFlight) -> bool {
        self.policy
            .max_deliver
            .is_some_and(|max| msg.delivery.delivered > max)
    }

    async fn send(&self, msg: &InFlight, what: Ack) -> Result<(), AckError> {
        self.wire.ack(msg.ack_subject(), &what).await
    }

    /// How `msg` is settled after `handle` ended with `outcome`, and why
    /// its outputs were not stored when that failed. With atomic outputs,
    /// first commits what the handler published when the outcome keeps it;
    /// with pipelined outputs, first waits for their PubAcks. A commit or
    /// an output that fails turns the decision into a redelivery.
    pub async fn conclude(
        &self,
        msg: &InFlight,
        outcome: &Outcome,
    ) -> (Disposition, Option<String>) {
        let by_guest = msg.by_guest();
        let delivered = msg.delivery.delivered;
        let decision = disposition(outcome, &by_guest, delivered, &self.policy);
        match self.outputs {
            OutputsMode::Immediate => (decision, None),
            OutputsMode::Pipelined => self.confirm(msg, outcome, &by_guest, decision).await,
            OutputsMode::Atomic => self.commit(msg, outcome, &by_guest, decision).await,
        }
    }

    /// Waits for the PubAcks of `msg`'s pipelined outputs; when one was not
    /// stored and `outcome` would keep the outputs, the delivery fails.
    async fn confirm(
        &self,
        msg: &InFlight,
        outcome: &Outcome,
        by_guest: &ByGuest,
        decision: Disposition,
    ) -> (Disposition, Option<String>) {
        let pending = msg.pipeline.take();
        if pending.is_empty() {
            return (decision, None);
        }
        let confirming = confirm::confirm(
            pending,
            &self.wire,
            &self.stats,
            self.patience(msg),
            &self.subscriber,
        );
        let Err(e) = self.in_progress_while(msg, confirming).await else {
            return (decision, None);
        };
        if !disposition::commits(outcome, by_guest) {
            tracing::info!(subscriber = %self.subscriber, seq = msg.sequence, "{}; the message is not acknowledged anyway", ErrorChain(&e));
            return (decision, None);
        }
        self.outputs_failed(msg, FailureCause::Output, ErrorChain(&e).to_string())
    }

    /// The decision for `msg` when its handler succeeded but its outputs
    /// were not all stored: a failure of `cause`, counted and logged.
    fn outputs_failed(
        &self,
        msg: &InFlight,
        cause: FailureCause,
        detail: String,
    ) -> (Disposition, Option<String>) {
        self.stats.failed(cause);
        tracing::warn!(subscriber = %self.subscriber, seq = msg.sequence, "{detail}");
        let failed = Outcome::Failed { cause, detail };
        let delivered = msg.delivery.delivered;
        let decision = disposition(&failed, &ByGuest::Nothing, delivered, &self.policy);
        (decision, Some(cause.as_str().to_string()))
    }

    /// Commits `msg`'s atomic outputs when `outcome` keeps them; a commit
    /// that fails fails the delivery.
    async fn commit(
        &self,
        msg: &InFlight,
        outcome: &Outcome,
        by_guest: &ByGuest,
        decision: Disposition,
    ) -> (Disposition, Option<String>) {
        let held = std::mem::take(&mut *msg.held.lock().expect("held lock"));
        if held.is_empty() || !disposition::commits(outcome, by_guest) {
            return (decision, None);
        }
        let outputs = held.len();
        let committing = commit::commit(held, &self.wire, &self.stats, self.patience(msg));
        match self.in_progress_while(msg, committing).await {
            Ok(batches) => {
                for b in batches {
                    match b {
                        StreamCommit::Committed(c) => {
                            self.stats.batch_committed(c.count);
                            tracing::debug!(subscriber = %self.subscriber, seq = msg.sequence, stream = %c.stream, count = c.count, last_sequence = c.last_sequence, "committed an atomic batch");
                        }
                        StreamCommit::AlreadyStored { stream } => {
                            self.stats.batch_already_stored();
                            tracing::info!(subscriber = %self.subscriber, seq = msg.sequence, %stream, "this message's outputs to the stream were committed by an earlier delivery; this delivery's are dropped");
                        }
                    }
                }
                (decision, None)
            }
            Err(e) => {
                let detail = format!("committing {outputs} held outputs: {}", ErrorChain(&e));
                self.outputs_failed(msg, FailureCause::Commit, detail)
            }
        }
    }

    /// Runs `work` on `msg`'s behalf while its handler does not run,
    /// reporting it in progress meanwhile: a commit may wait for a batch
    /// slot, busy streams and NATS, a dead-letter copy for NATS, a second
    /// delivery for the handler of the first.
    pub async fn in_progress_while<T>(&self, msg: &InFlight, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        let first = tokio::time::Instant::now() + self.progress_every;
        let mut progress = tokio::time::interval_at(first, self.progress_every);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = progress.tick() => {
                    if let Err(e) = self.send(msg, Ack::Progress).await {
                        tracing::debug!("in-progress signal failed: {}", ErrorChain(&e));
                    }
                }
            }
        }
    }

    /// Applies the runtime's decision and counts it.
    pub async fn apply(&self, msg: &InFlight, decision: Disposition) {
        let result = match decision {
            Disposition::Leave => Ok(Settled::ByGuest),
            Disposition::Ack => self.ack(msg).await.map(|()| Settled::Acked),
            Disposition::Nak(delay) => self
                .send(msg, Ack::Nak(delay))
                .await
                .map(|()| Settled::Naked),
            Disposition::Term {
                reason,
                dead_letter: false,
                ..
            } => self.term(msg, reason).await.map(|()| Settled::Termed),
            Disposition::Term {
                reason,
                cause,
                dead_letter: true,
            } => self.dead_letter_and_term(msg, reason, cause).await,
        };
        match result {
            Ok(how) => self.stats.settled(how),
            Err(e) => {
                self.stats.settled(Settled::Error);
                tracing::warn!(subscriber = %self.subscriber, seq = msg.sequence, "{}; the server redelivers the message after ack_wait", ErrorChain(&e));
            }
        }
    }

    async fn ack(&self, msg: &InFlight) -> Result<(), AckError> {
        if self.double_ack {
            self.wire
                .ack_confirmed(msg.ack_subject(), CONFIRM_WAIT)
                .await?;
        } else {
            self.send(msg, Ack::Ack).await?;
        }
        self.ledger.finished(msg.sequence, msg.ledger_generation);
        Ok(())
    }

    async fn term(&self, msg: &InFlight, reason: String) -> Result<(), AckError> {
        self.send(msg, Ack::Term(reason)).await?;
        self.ledger.finished(msg.sequence, msg.ledger_generation);
        Ok(())
    }

    /// Copies `msg` to the dead-letter subject, then terms it. When the
    /// copy fails the message is kept: nak'd with backoff while the server
    /// will deliver it again, else retried in place (with in-progress
    /// signals) until the copy is stored or the grace period of a shutdown
    /// abandons it.
    async fn dead_letter_and_term(
        &self,
        msg: &InFlight,
        reason: String,
        cause: TermCause,
    ) -> Result<Settled, AckError> {
        let mut attempt = 0u32;
        loop {
            match self
                .in_progress_while(msg, self.copy(msg, &reason, cause))
                .await
            {
                Ok(fit) => {
                    if fit != dead_letter::Fit::Whole {
                        self.stats.dead_letter_trimmed();
                        tracing::warn!(subscriber = %self.subscriber, seq = msg.sequence, "the dead-letter copy leaves out {} to fit the size limit", match fit {
                            dead_letter::Fit::WithoutPayload => "the payload",
                            _ => "the payload and the original headers",
                        });
                    }
                    self.term(msg, reason).await?;
                    return Ok(Settled::DeadLettered);
                }
                Err(e) if !self.last_delivery(msg) => {
                    tracing::error!(subscriber = %self.subscriber, seq = msg.sequence, "{}; the message is kept and redelivered", ErrorChain(&e));
                    let delay = self.policy.backoff_step(msg.delivery.delivered);
                    self.send(msg, Ack::Nak(delay)).await?;
                    return Ok(Settled::Naked);
                }
                Err(e) => {
                    attempt += 1;
                    tracing::error!(subscriber = %self.subscriber, seq = msg.sequence, attempt, "{}; this is the message's last delivery, so the copy is retried until it is stored", ErrorChain(&e));
                    let pause = (Duration::from_millis(250) * 2u32.saturating_pow(attempt.min(5)))
                        .min(MAX_COPY_RETRY_PAUSE);
                    tokio::time::sleep(pause).await;
                    if let Err(e) = self.send(msg, Ack::Progress).await {
                        tracing::debug!("in-progress signal failed: {}", ErrorChain(&e));
                    }
                }
            }
        }
    }

    /// Publishes the largest dead-letter copy of `msg` the server accepts.
    async fn copy(
        &self,
        msg: &InFlight,
        reason: &str,
        cause: TermCause,
    ) -> Result<dead_letter::Fit, CopyError> {
        let (subject, wait) = self
            .dead_letter
            .as_ref()
            .expect("a dead-letter disposition needs a dead-letter subject");
        let id = format!("dlq:{}:{}:{}", msg.stream, self.durable, msg.sequence);
        let max_payload = self.wire.max_payload();
        let copies = dead_letter::copies(
            &msg.message,
            &msg.delivery,
            &self.subscriber,
            reason,
            cause,
            &id,
            max_payload,
        );
        let last = copies.len() - 1;
        for (i, copy) in copies.into_iter().enumerate() {
            let sent = retrying(
                || {
                    format!(
                        "subscriber {:?}: dead-letter copy to {subject:?}",
                        &*self.subscriber
                    )
                },
                self.patience(msg),
                || {
                    let (headers, payload) = (copy.headers.clone(), copy.payload.clone());
                    let route = Route::JetStream(*wait);
                    self.wire
                        .publish(route, subject.to_string(), headers, payload)
                },
                PublishError::unavailable,
                || self.wire.connected(),
                |_| self.stats.nats_unavailable(),
            )
            .await;
            match sent {
                Ok(_) => return Ok(copy.fit),
                Err(PublishError::Invalid { .. }) if i < last => continue,
                Err(source) => {
                    return Err(CopyError {
                        subject: subject.to_string(),
                        source,
                    })
                }
            }
        }
        unreachable!("the last copy either succeeds or returns its error")
    }

    /// A guest's own settlement. Ack and nak are sent now, or with atomic
    /// or pipelined outputs when `handle` returns (an ack after the commit
    /// or the PubAcks); a term is sent when `handle` returns, after the
    /// dead-letter copy.
    pub async fn by_guest(
        &self,
        msg: &InFlight,
        what: GuestSettle,
    ) -> Result<(), GuestSettleError> {
        let recorded = msg.record_by_guest(match &what {
            GuestSettle::Term(reason) => ByGuest::Term(reason.clone()),
            GuestSettle::Ack if self.settles_after_outputs() => ByGuest::Ack,
            GuestSettle::Nak(delay) if self.settles_after_outputs() => ByGuest::Nak(*delay),
            _ => ByGuest::Settled,
        });
        if !recorded {
            return Err(GuestSettleError::AlreadySettled);
        }
        if self.settles_after_outputs() {
            return Ok(());
        }
        let sent = match what {
            GuestSettle::Term(_) => return Ok(()),
            GuestSettle::Ack => self.send(msg, Ack::Ack).await,
            GuestSettle::Nak(delay) => self.send(msg, Ack::Nak(delay)).await,
        };
        match sent {
            Ok(()) => {
                if matches!(what, GuestSettle::Ack) {
                    self.ledger.finished(msg.sequence, msg.ledger_generation);
                }
                Ok(())
            }
            Err(e) => {
                msg.forget_by_guest();
                Err(e.into())
            }
        }
    }

    /// Whether a guest's own ack or nak waits for `handle` to return: its
    /// outputs are stored (or their PubAcks seen) only then.
    fn settles_after_outputs(&self) -> bool {
        self.outputs != OutputsMode::Immediate
    }

    /// The guest's `in_progress`: refused once it settled the message.
    pub async fn in_progress(&self, msg: &InFlight) -> Result<(), GuestSettleError> {
        if msg.settled_by_guest() {
            return Err(GuestSettleError::AlreadySettled);
        }
        Ok(self.send(msg, Ack::Progress).await?)
    }

    /// The runtime's heartbeat while the handler runs: keeps the server
    /// from redelivering `msg` for as long as it is still the runtime's to
    /// settle (a term the guest asked for is sent only when it returns).
    pub async fn heartbeat(&self, msg: &InFlight) -> Result<(), AckError> {
        // A request's reply subject is the requester's: nothing to extend.
        if msg.request.is_some() || msg.by_guest() == ByGuest::Settled {
            return Ok(());
        }
        self.send(msg, Ack::Progress).await
    }

    /// A delivery of a message this process already finished (its ack was
    /// lost, or the durable was recreated below it): acked again without
    /// running the handler.
    pub async fn already_finished(&self, msg: &InFlight) {
        tracing::info!(subscriber = %self.subscriber, seq = msg.sequence, "delivered again although already handled here; acked without running the handler");
        let how = match self.send(msg, Ack::Ack).await {
            Ok(()) => Settled::Replayed,
            Err(_) => Settled::Error,
        };
        self.stats.settled(how);
    }

    /// A message fetched but never started (shutdown): handed back for
    /// redelivery (after `redeliver_after`, when given), or settled when
    /// the server would not deliver it again.
    pub async fn hand_back(&self, msg: &InFlight, redeliver_after: Option<Duration>) {
        if let Some(decision) = past_max_deliver(msg.delivery.delivered, &self.policy) {
            self.stats.started();
            self.stats.past_max_deliver();
            self.apply(msg, decision).await;
            return;
        }
        self.stats.returned_unstarted();
        if let Err(e) = self.send(msg, Ack::Nak(redeliver_after)).await {
            tracing::warn!(subscriber = %self.subscriber, seq = msg.sequence, "could not hand back a fetched message ({}); the server redelivers it after ack_wait", ErrorChain(&e));
        }
    }

    /// The grace period of a shutdown ended with `msg` still being handled:
    /// nak'd so another replica (or the next start) takes it at once. A
    /// handled delivery is never the server's last, so this loses nothing.
    pub async fn abandoned(&self, msg: &InFlight) {
        if self.last_delivery(msg) {
            tracing::error!(subscriber = %self.subscriber, seq = msg.sequence, "graceful_timeout reached before the dead-letter copy of this message's last delivery was stored: the server will not deliver it again");
            self.stats.settled(Settled::Error);
            return;
        }
        tracing::warn!(subscriber = %self.subscriber, seq = msg.sequence, "graceful_timeout reached with the handler still running; the message is nak'd for redelivery");
        self.stats.failed(FailureCause::Timeout);
        let how = match self.send(msg, Ack::Nak(None)).await {
            Ok(()) => Settled::Naked,
            Err(_) => Settled::Error,
        };
        self.stats.settled(how);
    }

    /// A message whose reply subject is not a JetStream ack subject: nak'd
    /// so the server redelivers it.
    pub async fn not_a_delivery(&self, message: &async_nats::Message, why: &NotADelivery) {
        tracing::error!(subscriber = %self.subscriber, "{}; asking for redelivery", ErrorChain(why));
        self.stats.started();
        let sent = match &message.reply {
            Some(reply) => self.wire.ack(reply, &Ack::Nak(None)).await.is_ok(),
            None => false,
        };
        self.stats
            .settled(if sent { Settled::Naked } else { Settled::Error });
    }
}

/// The dead-letter copy could not be stored.
#[derive(Debug, thiserror::Error)]
#[error("cannot store the dead-letter copy on {subject:?}")]
pub struct CopyError {
    subject: String,
    #[source]
    source: PublishError,
}
