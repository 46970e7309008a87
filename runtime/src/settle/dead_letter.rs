//! The dead-letter copy of a terminated message: its payload and headers
//! (minus `Nats-*`) plus why and where from. A copy must fit the server's
//! `max_payload` (and the dead-letter stream's message size limit), so it
//! comes in decreasing sizes: whole; without the payload; with only the
//! runtime's headers. The settler publishes the largest one that is accepted.

use super::disposition::TermCause;
use crate::message::DeliveryInfo;
use crate::nats::ack::{one_line, MAX_TERM_REASON};
use crate::nats::header_size;
use async_nats::HeaderMap;
use bytes::Bytes;

/// Headers set on a dead-letter copy.
pub mod headers {
    /// Why the message was terminated.
    pub const REASON: &str = "Natsapp-Reason";
    /// What the termination comes from: `rejected`, `terminated`,
    /// `retried`, a failure cause (`panic`, `trap`, `timeout`,
    /// `memory_limit`, `instantiate`, `commit`) or `unfinished`.
    pub const CAUSE: &str = "Natsapp-Cause";
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
    /// Set when the copy leaves something out to fit: what and why.
    pub const OMITTED: &str = "Natsapp-Omitted";
    /// Kept from the original: how many times it was redriven before.
    pub const REDRIVEN: &str = "Natsapp-Redriven";
}

/// How much of the original a copy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Payload and headers.
    Whole,
    /// The original headers, not the payload.
    WithoutPayload,
    /// Only the runtime's headers.
    RuntimeHeadersOnly,
}

/// One candidate copy.
pub struct Copy {
    /// What it carries.
    pub fit: Fit,
    /// Its headers, `Nats-Msg-Id` included.
    pub headers: HeaderMap,
    /// Its payload (empty unless `Whole`).
    pub payload: Bytes,
}

/// The copies of `original` to try, largest first, each within `max_payload`
/// bytes (payload and headers). `msg_id` deduplicates the copy in the
/// dead-letter stream.
pub fn copies(
    original: &async_nats::Message,
    delivery: &DeliveryInfo,
    subscriber: &str,
    reason: &str,
    cause: TermCause,
    msg_id: &str,
    max_payload: usize,
) -> Vec<Copy> {
    use headers::*;
    let own = |omitted: Option<String>| {
        let mut h = HeaderMap::new();
        h.insert(REASON, one_line(reason, MAX_TERM_REASON).as_str());
        h.insert(CAUSE, cause.as_str());
        h.insert(SUBSCRIBER, subscriber);
        h.insert(SUBJECT, original.subject.as_str());
        h.insert(STREAM, delivery.stream.as_str());
        h.insert(SEQUENCE, delivery.stream_sequence.to_string().as_str());
        h.insert(DELIVERED, delivery.delivered.to_string().as_str());
        h.insert("Nats-Msg-Id", msg_id);
        if let Some(o) = omitted {
            h.insert(OMITTED, o.as_str());
        }
        h
    };
    let with_original = |mut h: HeaderMap| {
        if let Some(headers) = &original.headers {
            for (name, values) in headers.iter() {
                let n: &str = name.as_ref();
                // A redriven message's count goes on with it (`redrive`).
                if n.starts_with("Nats-") || (n.starts_with("Natsapp-") && n != REDRIVEN) {
                    continue;
                }
                for v in values {
                    h.append(name.clone(), v.clone());
                }
            }
        }
        h
    };
    let payload = &original.payload;
    let mut out = Vec::new();
    let whole = with_original(own(None));
    if payload.len() + header_size(&whole) <= max_payload {
        out.push(Copy {
            fit: Fit::Whole,
            headers: whole,
            payload: payload.clone(),
        });
    }
    let payload_note = format!(
        "payload of {} bytes left out: the copy must fit the dead-letter stream's message size limit",
        payload.len()
    );
    let without_payload = with_original(own(Some(payload_note.clone())));
    if header_size(&without_payload) <= max_payload {
        out.push(Copy {
            fit: Fit::WithoutPayload,
            headers: without_payload,
            payload: Bytes::new(),
        });
    }
    out.push(Copy {
        fit: Fit::RuntimeHeadersOnly,
        headers: own(Some(format!(
            "{payload_note}; the original headers left out too"
        ))),
        payload: Bytes::new(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELIVERY: DeliveryInfo = DeliveryInfo {
        stream: String::new(),
        consumer: String::new(),
        stream_sequence: 7,
        consumer_sequence: 7,
        delivered: 3,
        pending: 0,
        published_unix_ns: 0,
    };

    fn message(payload: usize, header_bytes: usize) -> async_nats::Message {
        let mut headers = HeaderMap::new();
        headers.insert("X-Trace", "t-1");
        headers.insert("Nats-Msg-Id", "original");
        if header_bytes > 0 {
            headers.insert("X-Big", "h".repeat(header_bytes).as_str());
        }
        async_nats::Message {
            subject: "in.kit".into(),
            reply: None,
            payload: vec![b'x'; payload].into(),
            headers: Some(headers),
            status: None,
            description: None,
            length: payload,
        }
    }

    fn header<'a>(c: &'a Copy, name: &str) -> Option<&'a str> {
        c.headers.get(name).map(|v| v.as_str())
    }

    #[test]
    fn a_small_message_is_copied_whole_with_its_headers() {
        let msg = message(100, 0);
        let copies = copies(
            &msg,
            &DELIVERY,
            "kit",
            "bad\norder",
            TermCause::Rejected,
            "dlq:IN:kit:7",
            1 << 20,
        );
        let fits: Vec<Fit> = copies.iter().map(|c| c.fit).collect();
        assert_eq!(
            fits,
            [Fit::Whole, Fit::WithoutPayload, Fit::RuntimeHeadersOnly]
        );
        let whole = &copies[0];
        assert_eq!(whole.payload.len(), 100);
        assert_eq!(header(whole, "X-Trace"), Some("t-1"));
        assert_eq!(header(whole, "Nats-Msg-Id"), Some("dlq:IN:kit:7"));
        assert_eq!(header(whole, headers::REASON), Some("bad order"));
        assert_eq!(header(whole, headers::CAUSE), Some("rejected"));
        assert_eq!(header(whole, headers::OMITTED), None);
        assert_eq!(header(whole, headers::SEQUENCE), Some("7"));
        assert_eq!(header(whole, headers::DELIVERED), Some("3"));
    }

    #[test]
    fn a_payload_near_max_payload_is_left_out_and_said_so() {
        let max = 1 << 20;
        let msg = message(max - 10, 0);
        let copies = copies(
            &msg,
            &DELIVERY,
            "kit",
            &"r".repeat(5000),
            TermCause::Rejected,
            "id",
            max,
        );
        let first = &copies[0];
        assert_eq!(first.fit, Fit::WithoutPayload);
        assert!(first.payload.is_empty());
        assert_eq!(header(first, "X-Trace"), Some("t-1"));
        assert!(header(first, headers::OMITTED)
            .unwrap()
            .starts_with(&format!("payload of {} bytes left out", max - 10)));
        assert_eq!(
            header(first, headers::REASON).unwrap().len(),
            MAX_TERM_REASON,
            "the reason is capped"
        );
        for c in &copies {
            assert!(c.payload.len() + header_size(&c.headers) <= max);
        }
    }

    #[test]
    fn headers_near_max_payload_leave_only_the_runtimes() {
        let max = 4096;
        let msg = message(10, max);
        let copies = copies(&msg, &DELIVERY, "kit", "r", TermCause::Rejected, "id", max);
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].fit, Fit::RuntimeHeadersOnly);
        assert_eq!(header(&copies[0], "X-Big"), None);
        assert!(header_size(&copies[0].headers) <= max);
    }
}
