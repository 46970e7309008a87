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
//!
//! With `outputs.mode = "atomic"` the outputs are `held` and committed per
//! stream after `handle`, with ids of their own (see [`held`]).

pub mod held;

use crate::config::OutputIds;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// What tells identical outputs apart: the first 12 bytes of the content
/// digest (`content`), or nothing (`sequence`: every output counts alike).
type ContentKey = Option<[u8; 12]>;

/// The outputs one delivery has stored so far.
#[derive(Debug, Default)]
pub struct Outputs {
    stored: Mutex<HashMap<ContentKey, u32>>,
    attempts: std::sync::atomic::AtomicU32,
}

/// The id of one output and what to count once it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputId {
    /// The `Nats-Msg-Id` value.
    pub id: String,
    key: ContentKey,
}

impl Outputs {
    /// Counts one more publish or request by the handler; returns how many
    /// it has made for this delivery, this one included.
    pub fn attempt(&self) -> u32 {
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .saturating_add(1)
    }

    /// The id for publishing `payload` to `subject` as the input
    /// `<namespace>:<sequence>` (the namespace is `<stream>:<durable>`).
    pub fn id(
        &self,
        scheme: OutputIds,
        namespace: &str,
        sequence: u64,
        subject: &str,
        payload: &[u8],
    ) -> OutputId {
        use std::fmt::Write;
        let key: ContentKey = match scheme {
            OutputIds::Sequence => None,
            OutputIds::Content => {
                let mut h = Sha256::new();
                h.update(subject.as_bytes());
                h.update([0]);
                h.update(payload);
                let mut key = [0; 12];
                key.copy_from_slice(&h.finalize()[..12]);
                Some(key)
            }
        };
        let n = self
            .stored
            .lock()
            .expect("outputs lock")
            .get(&key)
            .copied()
            .unwrap_or(0);
        // Written in place: this runs for every output, and `format!` per
        // part showed in the relay's profile.
        let mut id = String::with_capacity(namespace.len() + 64);
        let _ = write!(id, "{namespace}:{sequence}:");
        if let Some(key) = &key {
            push_hex(&mut id, key);
            id.push(':');
        }
        let _ = write!(id, "{n}");
        OutputId { id, key }
    }

    /// Counts `output` as stored: the next identical one gets the next id.
    pub fn stored(&self, output: &OutputId) {
        *self
            .stored
            .lock()
            .expect("outputs lock")
            .entry(output.key)
            .or_default() += 1;
    }
}

/// Appends the lower-case hexadecimal of `bytes` to `out`.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMESPACE: &str = "IN:kit";
    const SEQUENCE: u64 = 7;

    /// Publishes `outputs` as one delivery would, every one succeeding.
    fn ids(scheme: OutputIds, outputs: &[(&str, &str)]) -> Vec<String> {
        let o = Outputs::default();
        outputs
            .iter()
            .map(|(subject, payload)| {
                let id = o.id(scheme, NAMESPACE, SEQUENCE, subject, payload.as_bytes());
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
            let failed = o.id(scheme, NAMESPACE, SEQUENCE, "a", b"1");
            let retried = o.id(scheme, NAMESPACE, SEQUENCE, "a", b"1");
            assert_eq!(failed, retried, "{scheme:?}");
            o.stored(&retried);
            assert_ne!(o.id(scheme, NAMESPACE, SEQUENCE, "a", b"1"), retried);
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

    #[test]
    fn content_keys_are_the_digest_in_hex() {
        let mut hex = String::new();
        push_hex(&mut hex, &[0x00, 0x0f, 0xa5, 0xff]);
        assert_eq!(hex, "000fa5ff");
        let id = ids(OutputIds::Content, &[("a", "1")]).remove(0);
        let key = id.split(':').nth(3).unwrap();
        assert_eq!(key.len(), 24);
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
}
