//! A delivery's pipelined outputs (`outputs.mode = "pipelined"`): each
//! JetStream publish is sent as the handler makes it and kept here, its
//! PubAck not yet seen, until the settler confirms them all after `handle`
//! (`settle::confirm`). The guest's call does not stop for every round trip.

use super::trace::SendSpan;
use crate::nats::wire::PubAckFuture;
use async_nats::HeaderMap;
use bytes::Bytes;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An output sent to its stream, its PubAck not yet seen. Keeps what is
/// needed to send it again.
pub struct Pending {
    /// Resolves to the PubAck, or its failure within `timeout`.
    pub ack: PubAckFuture,
    /// The subject it was published to.
    pub subject: String,
    /// Its headers, the `Nats-Msg-Id` among them.
    pub headers: HeaderMap,
    /// Its payload.
    pub payload: Bytes,
    /// How long its PubAck is awaited, when it is sent again too.
    pub timeout: Duration,
    /// When it was sent.
    pub sent: Instant,
    /// Its `send` span, ended with the PubAck.
    pub span: Option<SendSpan>,
}

/// The outputs one delivery has sent and not yet confirmed, in the order
/// they were sent.
#[derive(Default)]
pub struct Pipeline(Mutex<Vec<Pending>>);

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |p| p.len());
        write!(f, "Pipeline({n} pending)")
    }
}

impl Pipeline {
    /// Adds an output just sent.
    pub fn push(&self, output: Pending) {
        self.0.lock().expect("pipeline lock").push(output);
    }

    /// Takes every output still to confirm.
    pub fn take(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.0.lock().expect("pipeline lock"))
    }
}
