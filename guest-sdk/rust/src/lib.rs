//! Write natsapp-wasm handlers in Rust.
//!
//! ```ignore
//! use natsapp_guest::{export_handler, Data, Handler, Message, Result};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn handle(data: Data, msg: &Message) -> Result {
//!         natsapp_guest::publish("echo.out", data.bytes())?;
//!         Ok(())
//!     }
//! }
//!
//! export_handler!(Echo);
//! ```
//!
//! Returning `Ok` acknowledges the message (unless you settled it yourself);
//! [`Error::retry`] asks for a redelivery, [`Error::reject`] ends the message
//! for good (dead-lettered when the subscriber has `dead_letter`). A panic
//! is contained by the runtime and counted; the message is redelivered.
//!
//! Build with `cargo build --target wasm32-wasip2 --release`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// The generated WIT bindings (world `natsapp:handler/handler-sdk`).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "natsapp:handler/handler-sdk",
        pub_export_macro: true,
        default_bindings_module: "natsapp_guest::bindings",
        generate_all,
    });
}

pub mod http;
pub mod kv;

use bindings::exports::natsapp::handler::handler as export;
use bindings::natsapp::handler::{publisher, types};

pub use publisher::{PublishAck, Response};
pub use types::Delivery;

/// What a handler returns.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// A handler: one function called for every message.
pub trait Handler {
    /// Handles one message. `data` is the payload; `msg` the delivery.
    fn handle(data: Data, msg: &Message) -> Result;
}

/// Exports `$handler` (a type implementing [`Handler`]) as the component's handler.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        #[doc(hidden)]
        pub struct __NatsappGuestExport;

        impl $crate::bindings::exports::natsapp::handler::handler::Guest for __NatsappGuestExport {
            fn handle(
                data: ::std::vec::Vec<u8>,
                msg: &$crate::bindings::natsapp::handler::types::Message,
            ) -> ::core::result::Result<(), $crate::bindings::exports::natsapp::handler::handler::HandleError> {
                $crate::__run::<$handler>(data, msg)
            }
        }

        $crate::bindings::export!(__NatsappGuestExport with_types_in $crate::bindings);
    };
}

#[doc(hidden)]
pub fn __run<H: Handler>(data: Vec<u8>, msg: &types::Message) -> std::result::Result<(), export::HandleError> {
    H::handle(Data(data), &Message(msg)).map_err(|e| match e {
        Error::Retry { delay, reason } => export::HandleError::Retry(export::Retry {
            delay_ms: delay.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            reason,
        }),
        Error::Reject(reason) => export::HandleError::Reject(reason),
    })
}

/// Why a message was not handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Transient: deliver it again, after `delay` or the subscriber's backoff.
    Retry {
        /// Wait this long first; `None` uses the configured backoff.
        delay: Option<Duration>,
        /// Why, for the runtime's log.
        reason: String,
    },
    /// Permanent: never deliver it again.
    Reject(String),
}

impl Error {
    /// Deliver again after the subscriber's backoff step.
    pub fn retry(reason: impl fmt::Display) -> Self {
        Error::Retry { delay: None, reason: reason.to_string() }
    }

    /// Deliver again after `delay`.
    pub fn retry_after(delay: Duration, reason: impl fmt::Display) -> Self {
        Error::Retry { delay: Some(delay), reason: reason.to_string() }
    }

    /// Never deliver again (dead-lettered when configured).
    pub fn reject(reason: impl fmt::Display) -> Self {
        Error::Reject(reason.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::Retry { reason, .. } => write!(f, "retry: {reason}"),
            Error::Reject(reason) => write!(f, "reject: {reason}"),
        }
    }
}

/// A payload that does not decode is a permanent failure: reject.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Reject(format!("invalid JSON payload: {e}"))
    }
}

/// A failed host call: a denied or invalid call will not succeed later, so
/// it rejects; a timeout or unavailable server retries.
impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Denied(m) => Error::Reject(format!("denied: {m}")),
            HostError::Invalid(m) => Error::Reject(format!("invalid: {m}")),
            HostError::Timeout => Error::retry("timed out"),
            HostError::Unavailable(m) => Error::retry(format!("unavailable: {m}")),
            HostError::Other(m) => Error::retry(m),
        }
    }
}

/// Why a call into the host failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// Not allowed (publish allow-list), or the message was already settled.
    Denied(String),
    /// No answer in time (PubAck, reply).
    Timeout,
    /// NATS cannot serve it now; retrying later may succeed.
    Unavailable(String),
    /// Bad arguments (subject, header).
    Invalid(String),
    /// Anything else.
    Other(String),
}

impl From<types::Error> for HostError {
    fn from(e: types::Error) -> Self {
        match e {
            types::Error::Denied(m) => HostError::Denied(m),
            types::Error::Timeout => HostError::Timeout,
            types::Error::Unavailable(m) => HostError::Unavailable(m),
            types::Error::Invalid(m) => HostError::Invalid(m),
            types::Error::Other(m) => HostError::Other(m),
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            HostError::Denied(m) => write!(f, "denied: {m}"),
            HostError::Timeout => f.write_str("timed out"),
            HostError::Unavailable(m) => write!(f, "unavailable: {m}"),
            HostError::Invalid(m) => write!(f, "invalid: {m}"),
            HostError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HostError {}

/// A payload decoded by the default parser: UTF-8 → JSON → text → bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Valid UTF-8 that parses as JSON.
    Json(serde_json::Value),
    /// Valid UTF-8 that is not JSON.
    Text(String),
    /// Not UTF-8.
    Bytes(Vec<u8>),
}

/// The raw payload of a message, with decoders.
#[derive(Debug, Clone)]
pub struct Data(Vec<u8>);

/// A payload as the handler's own parser made it, or as the default parser
/// did when that one failed (see [`Data::parse_with`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<T> {
    /// What the handler's parser returned.
    Custom(T),
    /// The default parser's result, after the handler's parser failed.
    Default(Payload),
}

impl From<Vec<u8>> for Data {
    fn from(bytes: Vec<u8>) -> Self {
        Data(bytes)
    }
}

impl Data {
    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The raw bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The payload as UTF-8 text; not UTF-8 rejects the message.
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.0).map_err(|e| Error::reject(format!("payload is not UTF-8: {e}")))
    }

    /// The payload decoded from JSON into `T`; a decode failure rejects the message.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.0)?)
    }

    /// The payload through `parser` (the Python wrapper's
    /// `message_parser`): when it fails, the failure is logged (stderr, the
    /// runtime's log) and the default parser takes over.
    pub fn parse_with<T, E: fmt::Display>(&self, parser: impl FnOnce(&[u8]) -> std::result::Result<T, E>) -> Parsed<T> {
        match parser(&self.0) {
            Ok(value) => Parsed::Custom(value),
            Err(e) => {
                eprintln!("message parser failed ({e}); using the default parser");
                Parsed::Default(self.parse())
            }
        }
    }

    /// The wrapper's default parser: UTF-8 → JSON → text → bytes.
    pub fn parse(&self) -> Payload {
        match std::str::from_utf8(&self.0) {
            Ok(text) => match serde_json::from_str(text) {
                Ok(value) => Payload::Json(value),
                Err(_) => Payload::Text(text.to_string()),
            },
            Err(_) => Payload::Bytes(self.0.clone()),
        }
    }
}

/// The delivery being handled; valid during `handle` only.
pub struct Message<'a>(&'a types::Message);

impl Message<'_> {
    /// The subject it was published to.
    pub fn subject(&self) -> String {
        self.0.subject()
    }

    /// Where the publisher wants an answer: a request's reply subject (an
    /// endpoint's message), else its `Reply-To` header.
    pub fn reply(&self) -> Option<String> {
        self.0.reply()
    }

    /// Answers the message on its reply address, once (see [`reply`](Self::reply)).
    pub fn respond(&self, data: impl AsRef<[u8]>) -> Result<(), HostError> {
        self.respond_with_headers(data, &[])
    }

    /// Answers the message with `headers`, once.
    pub fn respond_with_headers(
        &self,
        data: impl AsRef<[u8]>,
        headers: &[(String, String)],
    ) -> Result<(), HostError> {
        Ok(self.0.respond(data.as_ref(), headers)?)
    }

    /// All headers, a name may repeat.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.0.headers()
    }

    /// The first value of header `name` (case-sensitive, as NATS headers are).
    pub fn header(&self, name: &str) -> Option<String> {
        self.0.headers().into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Stream, consumer, sequences and delivery count.
    pub fn delivery(&self) -> Delivery {
        self.0.delivery()
    }

    /// With `watch = { kv = … }`: the key whose change this is (`None` for
    /// a message of any other stream).
    pub fn kv_key(&self) -> Option<String> {
        kv::key_of(&self.0.delivery().stream, &self.0.subject()).map(str::to_string)
    }

    /// With `watch = { kv = … }`: what the change did (`None` for a message
    /// of any other stream).
    pub fn kv_operation(&self) -> Option<kv::Operation> {
        self.kv_key()?;
        Some(kv::Operation::from_header(self.header("KV-Operation").as_deref()))
    }

    /// With `watch = { kv = … }`: the change's revision, what
    /// [`kv::Bucket::update`] compares (`None` for a message of any other
    /// stream).
    pub fn kv_revision(&self) -> Option<u64> {
        self.kv_key()?;
        Some(self.0.delivery().stream_sequence)
    }

    /// Acknowledge now; the runtime then adds nothing. With atomic outputs
    /// the ack is sent after their commit, and only if `handle` returns `Ok`.
    pub fn ack(&self) -> Result<(), HostError> {
        Ok(self.0.ack()?)
    }

    /// Ask for redelivery (after `delay`); the runtime then adds nothing.
    pub fn nak(&self, delay: Option<Duration>) -> Result<(), HostError> {
        Ok(self.0.nak(delay.map(|d| d.as_millis().min(u64::MAX as u128) as u64))?)
    }

    /// End the message for good; the runtime then adds nothing.
    pub fn term(&self, reason: Option<&str>) -> Result<(), HostError> {
        Ok(self.0.term(reason)?)
    }

    /// Reset the server's ack timer (the runtime also does this on its own).
    pub fn in_progress(&self) -> Result<(), HostError> {
        Ok(self.0.in_progress()?)
    }
}

/// Publishes `data` (bytes or text) to `subject`. Returns the PubAck when a
/// stream captures the subject. In a subscriber with `outputs.mode =
/// "atomic"` it returns `None`: the output is held and stored with the
/// others after `handle` returns `Ok`, or not at all.
pub fn publish(subject: &str, data: impl AsRef<[u8]>) -> Result<Option<PublishAck>, HostError> {
    Ok(publisher::publish(subject, data.as_ref(), &[])?)
}

/// Publishes `value` as JSON to `subject`.
pub fn publish_json<T: Serialize + ?Sized>(subject: &str, value: &T) -> Result<Option<PublishAck>, HostError> {
    let data = serde_json::to_vec(value).map_err(|e| HostError::Invalid(format!("cannot encode JSON: {e}")))?;
    Ok(publisher::publish(subject, &data, &[])?)
}

/// Publishes with headers.
pub fn publish_with_headers(
    subject: &str,
    data: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
) -> Result<Option<PublishAck>, HostError> {
    let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    Ok(publisher::publish(subject, data.as_ref(), &headers)?)
}

/// When a published output is stored and how long it is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Later {
    /// Store it this much later (1 s or more, rounded up to the second): the
    /// stream that captures the subject must allow schedules and capture
    /// `natsapp.delayed.>`, where it waits.
    pub delay: Option<Duration>,
    /// Let the stream drop it after this long (1 s or more): the stream must
    /// allow TTLs.
    pub ttl: Option<Duration>,
}

/// Publishes as [`publish_with_headers`], stored after `later.delay` and
/// kept for `later.ttl`. A delayed output's PubAck is the one of the
/// stream that holds it until it is due.
pub fn publish_later(
    subject: &str,
    data: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
    later: Later,
) -> Result<Option<PublishAck>, HostError> {
    let mut headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    if let Some(delay) = later.delay {
        headers.push(("Natsapp-Delay".into(), format!("{}ms", delay.as_millis())));
    }
    if let Some(ttl) = later.ttl {
        headers.push(("Nats-TTL".into(), format!("{}ms", ttl.as_millis())));
    }
    Ok(publisher::publish(subject, data.as_ref(), &headers)?)
}

/// Sends a request and waits up to `timeout` for the reply.
pub fn request(subject: &str, data: impl AsRef<[u8]>, timeout: Duration) -> Result<Response, HostError> {
    request_with_headers(subject, data, &[], timeout)
}

/// Sends a request with headers and waits up to `timeout` for the reply.
pub fn request_with_headers(
    subject: &str,
    data: impl AsRef<[u8]>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, HostError> {
    let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    let timeout_ms = timeout.as_millis().min(u32::MAX as u128) as u32;
    Ok(publisher::request(subject, data.as_ref(), &headers, timeout_ms)?)
}

/// Per-subscriber configuration (`config = { … }` in service.toml).
pub mod config {
    use super::bindings::wasi::config::store;

    /// The value of `key`, if configured.
    pub fn get(key: &str) -> Option<String> {
        store::get(key).ok().flatten()
    }

    /// Every configured key and value.
    pub fn all() -> Vec<(String, String)> {
        store::get_all().unwrap_or_default()
    }
}
