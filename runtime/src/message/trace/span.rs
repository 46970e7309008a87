//! A span as the runtime records it: ids after W3C Trace Context, two
//! timestamps, its handler (whose attributes are registered once, and
//! named by number) and the few values of its own, in fields rather than
//! as a list, so that recording one on the message path neither allocates
//! nor touches a count another thread shares. `observability::traces`
//! writes the OTLP name, kind and attributes from them.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use smallvec::SmallVec;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// A trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

/// A span id: 8 bytes, never all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanId(pub [u8; 8]);

thread_local! {
    /// Ids need to be unique and unpredictable enough to spread traces
    /// evenly, not secret: a fast generator per thread, seeded by the OS.
    static IDS: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// A random number other than zero.
fn nonzero<T: PartialEq + Default>(draw: impl Fn(&mut SmallRng) -> T) -> T {
    IDS.with_borrow_mut(|rng| loop {
        let n = draw(rng);
        if n != T::default() {
            return n;
        }
    })
}

impl TraceId {
    /// A random trace id.
    pub fn random() -> TraceId {
        TraceId(nonzero(|rng| rng.random::<u128>()).to_be_bytes())
    }
}

impl SpanId {
    /// A random span id.
    pub fn random() -> SpanId {
        SpanId(nonzero(|rng| rng.random::<u64>()).to_be_bytes())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// `bytes` in lowercase hex, as W3C Trace Context writes ids: two digits
/// a byte, from a table (the formatter's `{:02x}` per byte cost a traced
/// relay more than recording its span).
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    push_hex(&mut out, bytes);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// What a span passes on to its children, in process and in headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// Whether the span is recorded and exported (the `sampled` flag).
    pub sampled: bool,
    /// The vendors' `tracestate` header, passed on as it came.
    pub trace_state: Option<String>,
}

impl SpanContext {
    /// The context a `traceparent` header value (and its `tracestate`)
    /// carries; `None` when the value is not W3C Trace Context.
    pub fn from_traceparent(value: &str, trace_state: Option<&str>) -> Option<SpanContext> {
        let mut parts = value.trim().split('-');
        let version = u8::from_str_radix(parts.next().filter(|v| v.len() == 2)?, 16).ok()?;
        let trace_id = TraceId(unhex(parts.next()?)?);
        let span_id = SpanId(unhex(parts.next()?)?);
        let flags = u8::from_str_radix(parts.next().filter(|v| v.len() == 2)?, 16).ok()?;
        // Version 00 has exactly four fields; later versions may add more.
        let valid = version != 0xff
            && (version != 0 || parts.next().is_none())
            && trace_id.0 != [0; 16]
            && span_id.0 != [0; 8];
        valid.then(|| SpanContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
            trace_state: trace_state
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    /// Its `traceparent` header value.
    pub fn traceparent(&self) -> String {
        let flags = if self.sampled { "-01" } else { "-00" };
        let mut value = String::with_capacity(55);
        value.push_str("00-");
        push_hex(&mut value, &self.trace_id.0);
        value.push('-');
        push_hex(&mut value, &self.span_id.0);
        value.push_str(flags);
        value
    }
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Which spans are recorded, after OpenTelemetry's standard samplers
/// (`OTEL_TRACES_SAMPLER`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// A span with a parent follows its parent's `sampled` flag.
    pub parent_based: bool,
    /// The decision for a span without a parent (or for every span when
    /// not parent-based).
    pub root: Root,
}

/// A sampler's decision for a span without a parent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    /// This fraction of traces, decided from the trace id so that every
    /// service sampling at the same ratio keeps the same traces.
    Ratio(f64),
}

impl Default for Sampler {
    /// Parent-based, always on: every message unless its sender chose otherwise.
    fn default() -> Sampler {
        Sampler {
            parent_based: true,
            root: Root::AlwaysOn,
        }
    }
}

impl Sampler {
    /// Whether a span of `trace_id` under `parent` is recorded.
    pub fn sampled(&self, parent: Option<&SpanContext>, trace_id: TraceId) -> bool {
        if let (true, Some(parent)) = (self.parent_based, parent) {
            return parent.sampled;
        }
        match self.root {
            Root::AlwaysOn => true,
            Root::AlwaysOff => false,
            Root::Ratio(ratio) => {
                let bound = (ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64;
                let low = u64::from_be_bytes(trace_id.0[8..].try_into().expect("8 bytes"));
                (low >> 1) < bound
            }
        }
    }
}

/// An attribute a handler's spans share: its key and text.
pub type Attribute = (&'static str, Arc<str>);

/// A handler's attributes, by their number in [`Handlers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandlerId(pub u32);

/// The handlers' attributes spans name: registered as handlers start,
/// read by the exporter. The same attributes (a handler made again by a
/// reload) keep their number, so the list grows only with new handlers.
#[derive(Default)]
pub struct Handlers {
    known: Mutex<Known>,
}

/// The handlers registered, in order, and their numbers by attributes.
#[derive(Default)]
struct Known {
    list: Vec<Arc<[Attribute]>>,
    numbers: HashMap<Arc<[Attribute]>, HandlerId>,
}

impl Handlers {
    /// The number of `attributes`, registered when they are new.
    pub fn register(&self, attributes: Vec<Attribute>) -> HandlerId {
        let attributes: Arc<[Attribute]> = attributes.into();
        let mut known = self.known.lock().expect("handlers lock");
        let Known { list, numbers } = &mut *known;
        *numbers.entry(attributes.clone()).or_insert_with(|| {
            list.push(attributes);
            HandlerId(u32::try_from(list.len() - 1).expect("fewer than 2^32 handlers"))
        })
    }

    /// The attributes of `handler`.
    pub fn get(&self, handler: HandlerId) -> Arc<[Attribute]> {
        let known = self.known.lock().expect("handlers lock");
        known.list[handler.0 as usize].clone()
    }
}

/// A subject or message id copied into its span: in place when it is
/// short (most are), so that recording it neither allocates nor shares
/// the message's buffer.
#[derive(Clone, Debug)]
pub struct SpanText(SmallVec<[u8; 48]>);

impl SpanText {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("copied from a str")
    }
}

impl From<&str> for SpanText {
    fn from(text: &str) -> SpanText {
        SpanText(SmallVec::from_slice(text.as_bytes()))
    }
}

/// A finished, sampled span.
#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub trace_state: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub start: u64,
    pub end: u64,
    pub details: Details,
    /// An error status and its message; a `process` span's `error.type`
    /// is the same text.
    pub error: Option<String>,
}

/// What kind of span it is, and what it says.
#[derive(Clone, Debug)]
pub enum Details {
    /// `process <subject>`, kind consumer: one delivery or request.
    Process {
        subject: SpanText,
        body_size: usize,
        /// Its `Nats-Msg-Id`.
        message_id: Option<SpanText>,
        /// Its handler, whose attributes it carries.
        handler: HandlerId,
        /// A JetStream delivery's stream sequence and delivery count
        /// (none for an endpoint's request).
        delivery: Option<(u64, u32)>,
        outcome: &'static str,
    },
    /// `send <subject>`, kind producer: one guest publish or request.
    Send {
        /// `publish` or `request`.
        operation: &'static str,
        subject: SpanText,
        message_id: Option<SpanText>,
        error_type: Option<&'static str>,
    },
}

/// Where finished spans go: the exporter's queue.
pub trait SpanSink: Send + Sync {
    /// Takes `span`, or drops it when the queue is full: never waits.
    fn record(&self, span: Span);

    /// The handlers its spans name.
    fn handlers(&self) -> &Handlers;
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_is_read_and_written_back() {
        let cx = SpanContext::from_traceparent(PARENT, Some("vendor=1")).unwrap();
        assert_eq!(cx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.span_id.to_string(), "00f067aa0ba902b7");
        assert!(cx.sampled);
        assert_eq!(cx.trace_state.as_deref(), Some("vendor=1"));
        assert_eq!(cx.traceparent(), PARENT);
    }

    #[test]
    fn what_is_not_trace_context_is_no_parent() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(SpanContext::from_traceparent(bad, None), None, "{bad:?}");
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert!(!SpanContext::from_traceparent(later, None).unwrap().sampled);
    }

    #[test]
    fn samplers_decide_as_their_names_say() {
        let parent = |sampled| SpanContext {
            sampled,
            ..SpanContext::from_traceparent(PARENT, None).unwrap()
        };
        let id = TraceId::random();
        let default = Sampler::default();
        assert!(default.sampled(None, id));
        assert!(!default.sampled(Some(&parent(false)), id));
        let off = Sampler {
            parent_based: false,
            root: Root::AlwaysOff,
        };
        assert!(!off.sampled(Some(&parent(true)), id));
        let ratio = |r| Sampler {
            parent_based: false,
            root: Root::Ratio(r),
        };
        let kept = (0..10_000)
            .filter(|_| ratio(0.25).sampled(None, TraceId::random()))
            .count();
        assert!((2_000..3_000).contains(&kept), "{kept} of 10,000 at 0.25");
        assert!((0..100).all(|_| ratio(1.0).sampled(None, TraceId::random())));
        assert!((0..100).all(|_| !ratio(0.0).sampled(None, TraceId::random())));
    }
}
