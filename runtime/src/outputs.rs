//! Output identity: the `Nats-Msg-Id` a handler's JetStream publish
//! carries (unless the guest sets one), so that a redelivered input does not
//! store its outputs twice inside the stream's duplicate window.
//!
//! Every id starts with the input's `<stream>:<durable>:<sequence>`. Then:
//! - `content` (default): a digest of the subject and payload, and how many
//!   identical outputs this call already stored. Outputs published in a
//!   different order on a redelivery keep their ids; two identical outputs
//!   in one call are both stored. The payloads must be the same on every
//!   delivery (no timestamps or random ids in them).
//! - `sequence`: how many outputs this call already stored. Payloads may
//!   differ between deliveries; their order and number may not.
//!
//! Only a publish that succeeded counts: a publish retried after an error
//! (a PubAck that timed out) gets the same id again, so it is stored once.

use crate::config::OutputIds;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// The outputs one delivery has stored so far.
#[derive(Debug, Default)]
pub struct Outputs {
    stored: Mutex<HashMap<String, u32>>,
    attempts: std::sync::atomic::AtomicU32,
}

/// The id of one output and what to count once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputId {
    /// The `Nats-Msg-Id` value.
    pub id: String,
    key: String,
}

impl Outputs {
    /// Counts one more publish or request by the handler; returns how many
    /// it has made for this delivery, this one included.
    pub fn attempt(&self) -> u32 {
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1)
    }

    /// The id for publishing `payload` to `subject` as the input `input`
    /// (`<stream>:<durable>:<sequence>`).
    pub fn id(&self, scheme: OutputIds, input: &str, subject: &str, payload: &[u8]) -> OutputId {
        let key = match scheme {
            OutputIds::Sequence => String::new(),
            OutputIds::Content => {
                let mut h = Sha256::new();
                h.update(subject.as_bytes());
                h.update([0]);
                h.update(payload);
                let digest = h.finalize();
                digest[..12].iter().map(|b| format!("{b:02x}")).collect()
            }
        };
        let n = self
            .stored
            .lock()
            .expect("outputs lock")
            .get(&key)
            .copied()
            .unwrap_or(0);
        let id = if key.is_empty() {
            format!("{input}:{n}")
        } else {
            format!("{input}:{key}:{n}")
        };
        OutputId { id, key }
    }

    /// Counts `output` as stored: the next identical one gets the next id.
    pub fn stored(&self, output: &OutputId) {
        *self
            .stored
            .lock()
            .expect("outputs lock")
            .entry(output.key.clone())
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = "IN:kit:7";

    /// Publishes `outputs` as one delivery would, every one succeeding.
    fn ids(scheme: OutputIds, outputs: &[(&str, &str)]) -> Vec<String> {
        let o = Outputs::default();
        outputs
            .iter()
            .map(|(subject, payload)| {
                let id = o.id(scheme, INPUT, subject, payload.as_bytes());
                o.stored(&id);
                id.id
            })
            .collect()
    }

    #[test]
    fn content_ids_do_not_depend_on_order() {
        let mut first = ids(OutputIds::Content, &[("a", "1"), ("b", "2"), ("a", "3")]);
        let mut again = ids(OutputIds::Content, &[("a", "3"), ("a", "1"), ("b", "2")]);
        first.sort();
        again.sort();
        assert_eq!(first, again);
        assert!(first.iter().all(|id| id.starts_with("IN:kit:7:")));
    }

    #[test]
    fn identical_outputs_in_one_call_get_distinct_ids() {
        let same = ids(OutputIds::Content, &[("a", "1"), ("a", "1")]);
        assert_ne!(same[0], same[1]);
        assert!(same[0].ends_with(":0") && same[1].ends_with(":1"));
    }

    #[test]
    fn a_failed_publish_does_not_use_up_its_id() {
        for scheme in [OutputIds::Content, OutputIds::Sequence] {
            let o = Outputs::default();
            let failed = o.id(scheme, INPUT, "a", b"1");
            let retried = o.id(scheme, INPUT, "a", b"1");
            assert_eq!(failed, retried, "{scheme:?}");
            o.stored(&retried);
            assert_ne!(o.id(scheme, INPUT, "a", b"1"), retried);
        }
    }

    #[test]
    fn sequence_ids_follow_the_order_not_the_payload() {
        assert_eq!(
            ids(OutputIds::Sequence, &[("a", "at 10:00"), ("b", "x")]),
            ids(OutputIds::Sequence, &[("a", "at 10:05"), ("b", "y")]),
        );
        assert_eq!(
            ids(OutputIds::Sequence, &[("a", "1")]),
            ["IN:kit:7:0".to_string()]
        );
    }
}
