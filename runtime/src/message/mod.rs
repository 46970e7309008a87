//! The message as it travels, from fetch to settlement: the delivery and
//! where it came from (`InFlight`, `DeliveryInfo`), what its handler made of
//! it (`outcome`), and its trace (`trace`). Every layer from the scheduler
//! down to settling uses these; they import nothing above the outputs and
//! NATS layers they carry.

pub mod answer;
pub mod outcome;
pub mod pipeline;
pub mod trace;

use crate::outputs::held::Held;
use crate::outputs::Outputs;
pub use outcome::{ByGuest, FailureCause, Outcome};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use trace::MessageTrace;

/// A message whose reply subject is not a JetStream ack subject.
#[derive(Debug, thiserror::Error)]
#[error("not a JetStream delivery")]
pub struct NotADelivery(#[source] pub async_nats::Error);

/// Where and how a JetStream delivery was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// The stream.
    pub stream: String,
    /// The consumer.
    pub consumer: String,
    /// Sequence in the stream.
    pub stream_sequence: u64,
    /// Sequence in the consumer.
    pub consumer_sequence: u64,
    /// Deliveries so far, this one included.
    pub delivered: u32,
    /// Messages pending in the consumer after this one.
    pub pending: u64,
    /// When it was stored, in nanoseconds since the Unix epoch.
    pub published_unix_ns: u64,
}

/// One delivery from fetch to settlement.
pub struct InFlight {
    /// The message as delivered (its reply subject is the ack subject).
    pub message: async_nats::Message,
    /// Its stream.
    pub stream: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// Its delivery details.
    pub delivery: DeliveryInfo,
    /// The outputs the handler stored for it (their `Nats-Msg-Id`s).
    pub outputs: Outputs,
    /// With atomic outputs: what the handler published, until the commit.
    pub held: Mutex<Held>,
    /// With pipelined outputs: what the handler sent, until its PubAcks are seen.
    pub pipeline: pipeline::Pipeline,
    /// The settle ledger's generation when it was fetched (see `AckLedger::generation`).
    pub ledger_generation: u64,
    /// Its `process` span, when traces are on: the guest's publishes are its children.
    pub trace: std::sync::OnceLock<MessageTrace>,
    by_guest: Mutex<ByGuest>,
    /// Nanoseconds its handler's calls spent waiting for NATS to be
    /// available again: not charged to the handler's time limit.
    waited_for_nats: AtomicU64,
    /// NATS calls of its handler under way now.
    nats_calls: AtomicU32,
    /// A core NATS request to an endpoint rather than a JetStream delivery:
    /// where its answer goes, and whether it went.
    pub request: Option<Request>,
    /// No message: what an instance made ahead of need is lent to.
    none: bool,
}

/// A core NATS request being handled by an endpoint.
#[derive(Debug)]
pub struct Request {
    /// The endpoint.
    pub endpoint: std::sync::Arc<str>,
    /// Where the answer goes (`None`: the sender wants none).
    pub reply: Option<async_nats::Subject>,
    answered: std::sync::atomic::AtomicBool,
}

impl Request {
    /// Claims the one answer the request gets; false when it was sent already.
    pub fn claim_answer(&self) -> bool {
        !self.answered.swap(true, Relaxed)
    }

    /// Gives the answer back: sending it failed, so the runtime may answer.
    pub fn release_answer(&self) {
        self.answered.store(false, Relaxed);
    }

    /// Whether its answer was sent (or is being sent).
    pub fn answered(&self) -> bool {
        self.answered.load(Relaxed)
    }
}

/// A NATS call of a handler under way; over when dropped.
pub struct NatsCall<'a>(&'a InFlight);

impl std::fmt::Debug for NatsCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsCall")
    }
}

impl Drop for NatsCall<'_> {
    fn drop(&mut self) {
        self.0.nats_calls.fetch_sub(1, Relaxed);
    }
}

impl InFlight {
    /// A JetStream delivery, or the message back with why it is not one
    /// (its reply subject is not an ack subject).
    #[allow(clippy::result_large_err)]
    pub fn new(
        message: async_nats::jetstream::Message,
    ) -> Result<Self, (async_nats::jetstream::Message, NotADelivery)> {
        let delivery = match message.info() {
            Ok(i) => DeliveryInfo {
                stream: i.stream.to_string(),
                consumer: i.consumer.to_string(),
                stream_sequence: i.stream_sequence,
                consumer_sequence: i.consumer_sequence,
                delivered: u32::try_from(i.delivered.max(0)).unwrap_or(u32::MAX),
                pending: i.pending,
                published_unix_ns: u64::try_from(i.published.unix_timestamp_nanos().max(0))
                    .unwrap_or(u64::MAX),
            },
            Err(e) => return Err((message, NotADelivery(e))),
        };
        Ok(Self::delivered(message.message, delivery))
    }

    /// `message`, delivered as `delivery` says; its reply subject must be
    /// its ack subject.
    pub fn delivered(message: async_nats::Message, delivery: DeliveryInfo) -> Self {
        InFlight {
            stream: delivery.stream.clone(),
            sequence: delivery.stream_sequence,
            delivery,
            message,
            outputs: Outputs::default(),
            held: Mutex::default(),
            pipeline: Default::default(),
            ledger_generation: 0,
            trace: std::sync::OnceLock::new(),
            by_guest: Mutex::new(ByGuest::Nothing),
            waited_for_nats: AtomicU64::new(0),
            nats_calls: AtomicU32::new(0),
            request: None,
            none: false,
        }
    }

    /// What an instance made ahead of need is lent to until a message
    /// takes it (see `wasm::prepared`): no message, on no subject.
    pub fn none(handler: &str) -> Self {
        let message = async_nats::Message {
            subject: "".into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        let delivery = DeliveryInfo {
            stream: String::new(),
            consumer: handler.to_string(),
            stream_sequence: 0,
            consumer_sequence: 0,
            delivered: 0,
            pending: 0,
            published_unix_ns: 0,
        };
        InFlight {
            none: true,
            ..Self::delivered(message, delivery)
        }
    }

    /// Whether it is no message ([`none`](Self::none)).
    pub fn is_none(&self) -> bool {
        self.none
    }

    /// A core NATS request to `endpoint`, the `sequence`th it received:
    /// delivered once, its sequence numbering its outputs.
    pub fn request(
        message: async_nats::Message,
        endpoint: &std::sync::Arc<str>,
        sequence: u64,
    ) -> Self {
        let delivery = DeliveryInfo {
            stream: String::new(),
            consumer: endpoint.to_string(),
            stream_sequence: sequence,
            consumer_sequence: sequence,
            delivered: 1,
            pending: 0,
            published_unix_ns: 0,
        };
        let reply = message.reply.clone();
        InFlight {
            request: Some(Request {
                endpoint: endpoint.clone(),
                reply,
                answered: std::sync::atomic::AtomicBool::new(false),
            }),
            ..Self::delivered(message, delivery)
        }
    }

    /// The subject its acknowledgements go to.
    pub fn ack_subject(&self) -> &async_nats::Subject {
        self.message
            .reply
            .as_ref()
            .expect("a JetStream delivery (InFlight::new checked) has an ack subject")
    }

    /// What the guest did to the message itself.
    pub fn by_guest(&self) -> ByGuest {
        self.by_guest.lock().expect("by_guest lock").clone()
    }

    /// Whether the guest settled the message (or asked for its term).
    pub fn settled_by_guest(&self) -> bool {
        *self.by_guest.lock().expect("by_guest lock") != ByGuest::Nothing
    }

    /// Records what the guest did to the message itself; false (and
    /// nothing recorded) when it already did something.
    pub fn record_by_guest(&self, what: ByGuest) -> bool {
        let mut by_guest = self.by_guest.lock().expect("by_guest lock");
        if *by_guest != ByGuest::Nothing {
            return false;
        }
        *by_guest = what;
        true
    }

    /// Its handler's calls waited `d` more for NATS to be available.
    pub fn waited_for_nats(&self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.waited_for_nats.fetch_add(ns, Relaxed);
    }

    /// How long its handler's calls have waited for NATS so far.
    pub fn nats_waits(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.waited_for_nats.load(Relaxed))
    }

    /// Marks a NATS call of its handler as under way until the guard is
    /// dropped: whether it ends answered or unavailable is known only
    /// then, so the time limit waits for it.
    pub fn nats_call(&self) -> NatsCall<'_> {
        self.nats_calls.fetch_add(1, Relaxed);
        NatsCall(self)
    }

    /// Whether a NATS call of its handler is under way.
    pub fn in_nats_call(&self) -> bool {
        self.nats_calls.load(Relaxed) > 0
    }

    /// Forgets what the guest did: its settlement could not be sent.
    pub fn forget_by_guest(&self) {
        *self.by_guest.lock().expect("by_guest lock") = ByGuest::Nothing;
    }
}
