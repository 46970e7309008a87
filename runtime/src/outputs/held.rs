//! Atomic outputs (`outputs.mode = "atomic"`): what the handler publishes
//! during `handle` is held here, per target stream, and committed once it
//! succeeds, one atomic batch per stream, before the input is
//! acknowledged (`settle::commit`). Core publishes (a reply) are sent
//! after the last commit.
//! A handler that fails, asks for a retry, is rejected, times out or is
//! stopped publishes nothing.
//!
//! Each output's `Nats-Msg-Id` is `<stream>:<durable>:<sequence>:atomic:<n>`,
//! `n` its place in its stream's batch, whatever it contains. So the first
//! message of a redelivery's batch to a stream has the id of the first one
//! an earlier delivery committed there, and the server rejects a batch
//! holding any stored id (error 10201): that rejection means the stream
//! already holds this input's outputs. The earlier delivery's outputs
//! stand; the redelivery's are dropped. A guest's own `Nats-Msg-Id` is
//! refused, as it could make that rejection mean something else. Like
//! every de-duplication, this holds inside the stream's duplicate window.

use crate::nats::batch::{BatchMessage, MAX_MESSAGES};
use crate::nats::header_size;
use async_nats::HeaderMap;
use bytes::Bytes;
use std::time::Duration;

/// Where a held output goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A stream, committed with a wait of `timeout` for each answer.
    Stream {
        /// The stream.
        name: &'a str,
        /// The wait for each answer.
        timeout: Duration,
    },
    /// Core NATS, sent after the commits.
    Core,
}

/// What one message's outputs may hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// `limits.held_outputs`: payload and header bytes of all of them.
    pub bytes: u64,
    /// The largest message the server accepts.
    pub max_payload: usize,
}

/// Why an output was not held (the guest's publish fails with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    /// The stream's batch has as many messages as the server commits at once.
    #[error("the atomic batch to stream {stream:?} is full: the server commits at most {MAX_MESSAGES} messages in one batch")]
    BatchFull {
        /// The stream.
        stream: String,
    },
    /// The message's outputs would pass `limits.held_outputs`.
    #[error("held outputs would reach {would} bytes, past limits.held_outputs ({limit} bytes)")]
    TooMuch {
        /// Bytes held with this one.
        would: u64,
        /// The limit.
        limit: u64,
    },
    /// The message alone is larger than the server accepts.
    #[error("maximum payload exceeded: {size} bytes, the server accepts {max}")]
    TooLarge {
        /// Its size with headers.
        size: usize,
        /// The server's `max_payload`.
        max: usize,
    },
}

/// One stream's held outputs.
#[derive(Debug)]
pub struct HeldBatch {
    /// The stream.
    pub stream: String,
    /// The wait for each of the server's answers.
    pub timeout: Duration,
    /// The outputs, in the order they were published.
    pub messages: Vec<BatchMessage>,
}

/// The outputs one delivery holds until its commit.
#[derive(Debug, Default)]
pub struct Held {
    batches: Vec<HeldBatch>,
    core: Vec<BatchMessage>,
    bytes: u64,
}

/// Room left in each message for the headers a commit adds
/// (`Nats-Batch-Id`, `Nats-Batch-Sequence`, `Nats-Batch-Commit`).
const BATCH_HEADERS: usize = 96;

impl Held {
    /// Nothing held.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.core.is_empty()
    }

    /// Outputs held, over all streams and core.
    pub fn len(&self) -> usize {
        self.batches.iter().map(|b| b.messages.len()).sum::<usize>() + self.core.len()
    }

    /// Holds a publish to `subject` for `target`. A stream's output gets
    /// its id here, under `input` (`<stream>:<durable>:<sequence>`).
    pub fn hold(
        &mut self,
        target: Target<'_>,
        subject: String,
        mut headers: HeaderMap,
        payload: Bytes,
        input: &str,
        bounds: Bounds,
    ) -> Result<(), HoldError> {
        if let Target::Stream { name, .. } = target {
            let n = self
                .batches
                .iter()
                .find(|b| b.stream == name)
                .map_or(0, |b| b.messages.len());
            if n >= MAX_MESSAGES {
                return Err(HoldError::BatchFull {
                    stream: name.to_string(),
                });
            }
            headers.insert("Nats-Msg-Id", format!("{input}:atomic:{n}").as_str());
        }
        let mut size = payload.len() + header_size(&headers);
        if matches!(target, Target::Stream { .. }) {
            size += BATCH_HEADERS;
        }
        if size > bounds.max_payload {
            return Err(HoldError::TooLarge {
                size,
                max: bounds.max_payload,
            });
        }
        let would = self.bytes + size as u64;
        if would > bounds.bytes {
            return Err(HoldError::TooMuch {
                would,
                limit: bounds.bytes,
            });
        }
        self.bytes = would;
        let message = BatchMessage {
            subject,
            headers,
            payload,
        };
        match target {
            Target::Core => self.core.push(message),
            Target::Stream { name, timeout } => {
                match self.batches.iter_mut().find(|b| b.stream == name) {
                    Some(b) => b.messages.push(message),
                    None => self.batches.push(HeldBatch {
                        stream: name.to_string(),
                        timeout,
                        messages: vec![message],
                    }),
                }
            }
        }
        Ok(())
    }

    /// The held outputs: each stream's batch, in the order the handler
    /// first published to the stream, and the core publishes.
    pub fn into_parts(self) -> (Vec<HeldBatch>, Vec<BatchMessage>) {
        (self.batches, self.core)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        bytes: 1 << 20,
        max_payload: 1 << 20,
    };

    fn stream(name: &str) -> Target<'_> {
        Target::Stream {
            name,
            timeout: Duration::from_secs(5),
        }
    }

    fn id(held: &Held, stream: &str, n: usize) -> String {
        let b = held.batches.iter().find(|b| b.stream == stream).unwrap();
        b.messages[n]
            .headers
            .get("Nats-Msg-Id")
            .unwrap()
            .to_string()
    }

    #[test]
    fn ids_are_places_in_each_streams_batch() {
        let mut held = Held::default();
        for (target, subject) in [
            (stream("A"), "a.1"),
            (stream("B"), "b.1"),
            (stream("A"), "a.2"),
        ] {
            held.hold(
                target,
                subject.into(),
                HeaderMap::new(),
                "x".into(),
                "IN:d:7",
                BOUNDS,
            )
            .unwrap();
        }
        held.hold(
            Target::Core,
            "reply".into(),
            HeaderMap::new(),
            "r".into(),
            "IN:d:7",
            BOUNDS,
        )
        .unwrap();
        assert_eq!(id(&held, "A", 0), "IN:d:7:atomic:0");
        assert_eq!(id(&held, "A", 1), "IN:d:7:atomic:1");
        assert_eq!(id(&held, "B", 0), "IN:d:7:atomic:0");
        assert!(held.core[0].headers.get("Nats-Msg-Id").is_none());
        assert_eq!(held.len(), 4);
    }

    #[test]
    fn bounds_refuse_the_output_past_them() {
        let mut held = Held::default();
        for i in 0..MAX_MESSAGES {
            held.hold(
                stream("A"),
                format!("a.{i}"),
                HeaderMap::new(),
                Bytes::new(),
                "I",
                BOUNDS,
            )
            .unwrap();
        }
        let full = held.hold(
            stream("A"),
            "a.x".into(),
            HeaderMap::new(),
            Bytes::new(),
            "I",
            BOUNDS,
        );
        assert_eq!(full, Err(HoldError::BatchFull { stream: "A".into() }));
        let small = Bounds {
            bytes: 100,
            max_payload: 1 << 20,
        };
        let sixty_bytes = |held: &mut Held| {
            held.hold(
                Target::Core,
                "c".into(),
                HeaderMap::new(),
                vec![0; 60].into(),
                "I",
                small,
            )
        };
        let mut held = Held::default();
        sixty_bytes(&mut held).unwrap();
        let over = sixty_bytes(&mut held);
        assert_eq!(
            over,
            Err(HoldError::TooMuch {
                would: 120,
                limit: 100
            })
        );
        assert_eq!(held.len(), 1);
    }
}
