//! How one delivery is settled, decided by pure functions from the
//! handler's outcome, what the guest did itself, the delivery count and the
//! consumer policy. `settle` applies the decision; nothing else decides
//! ack/nak/term.

use crate::message::{ByGuest, FailureCause, Outcome};
use std::time::Duration;

/// The consumer policy the decision needs.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `None`: unlimited deliveries.
    pub max_deliver: Option<u32>,
    /// Redelivery delays by delivery count (1-based, last step repeats).
    pub backoff: Vec<Duration>,
    /// Whether a dead-letter subject is configured.
    pub dead_letter: bool,
}

impl Policy {
    /// The backoff step for a message delivered `delivered` times.
    pub fn backoff_step(&self, delivered: u32) -> Option<Duration> {
        let last = self.backoff.len().checked_sub(1)?;
        let i = (delivered.max(1) as usize - 1).min(last);
        Some(self.backoff[i])
    }
}

/// What the runtime does with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The guest settled it already: add nothing.
    Leave,
    /// Acknowledge.
    Ack,
    /// Negatively acknowledge, redelivering after the delay (or at once).
    Nak(Option<Duration>),
    /// Terminate; publish a dead-letter copy first when `dead_letter`.
    Term {
        /// Why, for the log, the server and the dead-letter copy.
        reason: String,
        /// What it comes from, as the dead-letter copy names it.
        cause: TermCause,
        /// Copy to the dead-letter subject before terminating.
        dead_letter: bool,
    },
}

/// What a termination comes from: always something of the message's own
/// (its handler's verdict or failures), never NATS being unavailable, which
/// the runtime waits out instead of failing the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermCause {
    /// The handler rejected it.
    Rejected,
    /// The guest terminated it itself.
    Terminated,
    /// Its last allowed delivery failed (a crash, a trap, its time or memory
    /// limit, a commit, a pipelined output) or asked for a retry.
    LastDelivery(Option<FailureCause>),
    /// Its last allowed delivery did not finish (the handler nak'd it, or
    /// the runtime stopped or crashed while handling it).
    Unfinished,
}

impl TermCause {
    /// Its name in the `Natsapp-Cause` header: `rejected`, `terminated`,
    /// `retried` (the handler asked for a retry on its last delivery), a
    /// failure cause (`panic`, `trap`, `timeout`, `memory_limit`,
    /// `instantiate`, `commit`, `output`), or `unfinished`.
    pub fn as_str(self) -> &'static str {
        match self {
            TermCause::Rejected => "rejected",
            TermCause::Terminated => "terminated",
            TermCause::LastDelivery(None) => "retried",
            TermCause::LastDelivery(Some(cause)) => cause.as_str(),
            TermCause::Unfinished => "unfinished",
        }
    }
}

impl Disposition {
    /// What the message's trace and logs call it.
    pub fn name(&self) -> &'static str {
        match self {
            Disposition::Leave => "settled_by_guest",
            Disposition::Ack => "acked",
            Disposition::Nak(_) => "naked",
            Disposition::Term {
                dead_letter: true, ..
            } => "dead_lettered",
            Disposition::Term { .. } => "termed",
        }
    }
}

/// Decides how to settle a message from the handler's outcome.
///
/// `by_guest`: what the guest did itself.
/// `delivered`: the delivery count of this delivery (1 on the first).
pub fn disposition(
    outcome: &Outcome,
    by_guest: &ByGuest,
    delivered: u32,
    policy: &Policy,
) -> Disposition {
    match by_guest {
        ByGuest::Settled => return Disposition::Leave,
        ByGuest::Nak(delay) => return Disposition::Nak(*delay),
        ByGuest::Term(reason) => {
            return Disposition::Term {
                reason: reason
                    .clone()
                    .unwrap_or_else(|| "terminated by the handler".into()),
                cause: TermCause::Terminated,
                dead_letter: policy.dead_letter,
            }
        }
        ByGuest::Nothing | ByGuest::Ack => {}
    }
    let (delay, why, failure) = match outcome {
        Outcome::Ok => return Disposition::Ack,
        Outcome::Reject(reason) => {
            return Disposition::Term {
                reason: reason.clone(),
                cause: TermCause::Rejected,
                dead_letter: policy.dead_letter,
            }
        }
        Outcome::Retry { delay, reason } => (*delay, reason.as_str(), None),
        Outcome::Failed { detail, cause } => (None, detail.as_str(), Some(*cause)),
    };
    match policy.max_deliver {
        Some(max) if delivered >= max => Disposition::Term {
            reason: format!("max_deliver ({max}) reached; last failure: {why}"),
            cause: TermCause::LastDelivery(failure),
            dead_letter: policy.dead_letter,
        },
        _ => Disposition::Nak(delay.or_else(|| policy.backoff_step(delivered))),
    }
}

/// Whether a handler's atomic outputs are committed: it returned ok and
/// did not nak the message itself (an ack or a term of its own follows the
/// commit).
pub fn commits(outcome: &Outcome, by_guest: &ByGuest) -> bool {
    *outcome == Outcome::Ok && !matches!(by_guest, ByGuest::Nak(_))
}

/// A delivery past `max_deliver` is never handled: the server delivers it
/// once more only when the runtime did not finish its last handled delivery
/// (a shutdown, a crash, a nak). It is dead-lettered or terminated, so no
/// message leaves the consumer unseen.
pub fn past_max_deliver(delivered: u32, policy: &Policy) -> Option<Disposition> {
    let max = policy.max_deliver?;
    (delivered > max).then(|| Disposition::Term {
        reason: format!(
            "max_deliver ({max}) reached: delivery {max} did not finish (the handler nak'd it, or the runtime stopped or crashed while handling it)"
        ),
        cause: TermCause::Unfinished,
        dead_letter: policy.dead_letter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FailureCause;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn table() {
        let plain = Policy {
            max_deliver: Some(3),
            backoff: vec![],
            dead_letter: false,
        };
        let backoff = Policy {
            max_deliver: Some(5),
            backoff: vec![Duration::from_secs(1), Duration::from_secs(10)],
            dead_letter: true,
        };
        let unlimited = Policy {
            max_deliver: None,
            backoff: vec![],
            dead_letter: false,
        };
        let retry = |d: Option<Duration>| Outcome::Retry {
            delay: d,
            reason: "busy".into(),
        };
        let trap = Outcome::Failed {
            cause: FailureCause::Trap,
            detail: "wasm trap: unreachable".into(),
        };
        let term = |reason: &str, cause, dead_letter| Disposition::Term {
            reason: reason.into(),
            cause,
            dead_letter,
        };

        let table: Vec<(&str, Outcome, ByGuest, u32, &Policy, Disposition)> = vec![
            (
                "ok acks",
                Outcome::Ok,
                ByGuest::Nothing,
                1,
                &plain,
                Disposition::Ack,
            ),
            (
                "ok on last delivery acks",
                Outcome::Ok,
                ByGuest::Nothing,
                3,
                &plain,
                Disposition::Ack,
            ),
            (
                "guest settled: nothing more",
                Outcome::Ok,
                ByGuest::Settled,
                1,
                &plain,
                Disposition::Leave,
            ),
            (
                "guest settled then failed: nothing more",
                trap.clone(),
                ByGuest::Settled,
                1,
                &plain,
                Disposition::Leave,
            ),
            (
                "retry with delay naks with it",
                retry(secs(7)),
                ByGuest::Nothing,
                1,
                &backoff,
                Disposition::Nak(secs(7)),
            ),
            (
                "retry without delay uses backoff step 1",
                retry(None),
                ByGuest::Nothing,
                1,
                &backoff,
                Disposition::Nak(secs(1)),
            ),
            (
                "backoff step 2",
                retry(None),
                ByGuest::Nothing,
                2,
                &backoff,
                Disposition::Nak(secs(10)),
            ),
            (
                "last backoff step repeats",
                retry(None),
                ByGuest::Nothing,
                4,
                &backoff,
                Disposition::Nak(secs(10)),
            ),
            (
                "no backoff: immediate nak",
                retry(None),
                ByGuest::Nothing,
                1,
                &plain,
                Disposition::Nak(None),
            ),
            (
                "trap naks with backoff",
                trap.clone(),
                ByGuest::Nothing,
                2,
                &backoff,
                Disposition::Nak(secs(10)),
            ),
            (
                "reject terms",
                Outcome::Reject("bad order".into()),
                ByGuest::Nothing,
                1,
                &plain,
                term("bad order", TermCause::Rejected, false),
            ),
            (
                "reject terms with dead letter",
                Outcome::Reject("bad".into()),
                ByGuest::Nothing,
                1,
                &backoff,
                term("bad", TermCause::Rejected, true),
            ),
            (
                "retry at max_deliver terms",
                retry(None),
                ByGuest::Nothing,
                3,
                &plain,
                term(
                    "max_deliver (3) reached; last failure: busy",
                    TermCause::LastDelivery(None),
                    false,
                ),
            ),
            (
                "trap at max_deliver terms with dead letter",
                trap.clone(),
                ByGuest::Nothing,
                5,
                &backoff,
                term(
                    "max_deliver (5) reached; last failure: wasm trap: unreachable",
                    TermCause::LastDelivery(Some(FailureCause::Trap)),
                    true,
                ),
            ),
            (
                "unlimited never terms on failure",
                trap.clone(),
                ByGuest::Nothing,
                10_000,
                &unlimited,
                Disposition::Nak(None),
            ),
        ];
        for (name, outcome, by_guest, delivered, policy, want) in table {
            assert_eq!(
                disposition(&outcome, &by_guest, delivered, policy),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn guest_term_dead_letters_like_a_reject() {
        let policy = Policy {
            max_deliver: Some(3),
            backoff: vec![],
            dead_letter: true,
        };
        for outcome in [Outcome::Ok, Outcome::Reject("ignored".into())] {
            assert_eq!(
                disposition(
                    &outcome,
                    &ByGuest::Term(Some("duplicate order".into())),
                    1,
                    &policy
                ),
                Disposition::Term {
                    reason: "duplicate order".into(),
                    cause: TermCause::Terminated,
                    dead_letter: true
                }
            );
        }
        assert_eq!(
            disposition(&Outcome::Ok, &ByGuest::Term(None), 2, &policy),
            Disposition::Term {
                reason: "terminated by the handler".into(),
                cause: TermCause::Terminated,
                dead_letter: true
            }
        );
    }

    #[test]
    fn deliveries_past_max_deliver_are_settled_unhandled() {
        let policy = |max_deliver, dead_letter| Policy {
            max_deliver,
            backoff: vec![],
            dead_letter,
        };
        assert_eq!(past_max_deliver(3, &policy(Some(3), true)), None);
        assert_eq!(past_max_deliver(1_000, &policy(None, true)), None);
        for (dead_letter, delivered) in [(true, 4), (false, 4), (true, 9)] {
            match past_max_deliver(delivered, &policy(Some(3), dead_letter)) {
                Some(Disposition::Term {
                    reason,
                    cause,
                    dead_letter: dl,
                }) => {
                    assert_eq!((dl, cause), (dead_letter, TermCause::Unfinished));
                    assert!(
                        reason.starts_with("max_deliver (3) reached: delivery 3 did not finish"),
                        "{reason}"
                    );
                }
                other => panic!("delivery {delivered}: {other:?}"),
            }
        }
    }

    #[test]
    fn atomic_outputs_are_committed_only_when_handle_returns_ok_without_a_nak() {
        let trap = Outcome::Failed {
            cause: FailureCause::Trap,
            detail: "wasm trap: unreachable".into(),
        };
        let retry = Outcome::Retry {
            delay: None,
            reason: "busy".into(),
        };
        let reject = Outcome::Reject("bad".into());
        for (outcome, by_guest, commits_them) in [
            (Outcome::Ok, ByGuest::Nothing, true),
            (Outcome::Ok, ByGuest::Ack, true),
            (Outcome::Ok, ByGuest::Term(None), true),
            (Outcome::Ok, ByGuest::Nak(None), false),
            (retry.clone(), ByGuest::Nothing, false),
            (retry, ByGuest::Ack, false),
            (reject, ByGuest::Nothing, false),
            (trap.clone(), ByGuest::Ack, false),
            (trap, ByGuest::Term(None), false),
        ] {
            assert_eq!(
                commits(&outcome, &by_guest),
                commits_them,
                "{outcome:?} {by_guest:?}"
            );
        }
        // The guest's deferred ack follows the outcome; its nak stands.
        let policy = Policy::default();
        let retry = Outcome::Retry {
            delay: secs(3),
            reason: "busy".into(),
        };
        assert_eq!(
            disposition(&Outcome::Ok, &ByGuest::Ack, 1, &policy),
            Disposition::Ack
        );
        assert_eq!(
            disposition(&retry, &ByGuest::Ack, 1, &policy),
            Disposition::Nak(secs(3))
        );
        assert_eq!(
            disposition(&Outcome::Ok, &ByGuest::Nak(secs(1)), 1, &policy),
            Disposition::Nak(secs(1))
        );
    }
}
