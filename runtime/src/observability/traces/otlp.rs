//! Finished spans as an OTLP `ExportTraceServiceRequest` in protobuf
//! (opentelemetry-proto's `collector/trace/v1`): one resource, one
//! instrumentation scope, the spans. Written straight from the runtime's
//! spans, whose shape is fixed, into the one buffer that is sent: no
//! intermediate message structs, nothing allocated per attribute, and
//! what every span repeats (attribute keys, a handler's attributes)
//! encoded once.

use crate::message::trace::span::{Details, HandlerId, Handlers, Span};
use bytes::Bytes;
use std::sync::Arc;

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

/// A varint, one byte when it fits (most tags and lengths here).
#[inline]
fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The encoded size of a varint.
#[inline]
fn varint_len(value: u64) -> usize {
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, field << 3 | wire);
}

/// A length-delimited field: bytes, a string or an encoded message.
fn bytes(out: &mut Vec<u8>, field: u64, value: &[u8]) {
    key(out, field, LEN);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// The encoded size of a length-delimited field of `len` bytes (field < 16).
fn len_field(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// An attribute's key as a `KeyValue` starts with it: `key = 1`, encoded.
struct Key(Box<[u8]>);

impl Key {
    fn new(name: &str) -> Key {
        let mut encoded = Vec::new();
        bytes(&mut encoded, 1, name.as_bytes());
        Key(encoded.into())
    }

    /// The attribute with a string value, as a span's field 9.
    fn text(&self, out: &mut Vec<u8>, value: &str) {
        self.text_as(out, 9, value);
    }

    /// The attribute with a string value, as field `field`.
    fn text_as(&self, out: &mut Vec<u8>, field: u64, value: &str) {
        // AnyValue { string_value = 1 }
        let any = len_field(value.len());
        self.head(out, field, any);
        bytes(out, 1, value.as_bytes());
    }

    /// The attribute with an integer value, as a span's field 9.
    fn int(&self, out: &mut Vec<u8>, value: i64) {
        // AnyValue { int_value = 3 }
        let any = 1 + varint_len(value as u64);
        self.head(out, 9, any);
        key(out, 3, VARINT);
        varint(out, value as u64);
    }

    /// The `KeyValue`'s tag (as `field`), length and key, and its value's
    /// tag and length (`any` bytes).
    fn head(&self, out: &mut Vec<u8>, field: u64, any: usize) {
        key(out, field, LEN);
        varint(out, (self.0.len() + len_field(any)) as u64);
        out.extend_from_slice(&self.0);
        key(out, 2, LEN);
        varint(out, any as u64);
    }
}

/// The attribute keys spans carry besides their handler's.
struct Keys {
    system: Key,
    operation_name: Key,
    operation_type: Key,
    destination: Key,
    body_size: Key,
    message_id: Key,
    sequence: Key,
    delivered: Key,
    outcome: Key,
    error_type: Key,
}

/// Writes export requests. What every request or many spans repeat is
/// encoded once: the resource, the scope, the attribute keys, the
/// attributes every `process` span starts with, and each handler's
/// attributes.
pub struct Encoder {
    resource: Vec<u8>,
    scope: Vec<u8>,
    keys: Keys,
    process_head: Vec<u8>,
    /// Where the handlers' attributes are read, the first time a span
    /// names them.
    handlers: Arc<Handlers>,
    /// Each handler's attributes, encoded, by its number.
    encoded_handlers: Vec<Option<Vec<u8>>>,
    /// The last request's whole buffer: written again once its body is
    /// sent and dropped, rather than a fresh one faulted in page by page.
    last: Option<Bytes>,
}

/// Room left before each span for its length: two bytes hold up to 16 KiB.
const SPAN_LENGTH_ROOM: usize = 2;

impl Encoder {
    /// The resource of `attributes`, and the scope `name` at `version`;
    /// spans name their handlers in `handlers`.
    pub fn new(
        attributes: &[(String, String)],
        name: &str,
        version: &str,
        handlers: Arc<Handlers>,
    ) -> Encoder {
        let mut resource = Vec::new();
        for (k, v) in attributes {
            // Resource.attributes
            Key::new(k).text_as(&mut resource, 1, v);
        }
        let mut scope = Vec::new();
        bytes(&mut scope, 1, name.as_bytes());
        bytes(&mut scope, 2, version.as_bytes());
        let keys = Keys {
            system: Key::new("messaging.system"),
            operation_name: Key::new("messaging.operation.name"),
            operation_type: Key::new("messaging.operation.type"),
            destination: Key::new("messaging.destination.name"),
            body_size: Key::new("messaging.message.body.size"),
            message_id: Key::new("messaging.message.id"),
            sequence: Key::new("natsapp.stream.sequence"),
            delivered: Key::new("natsapp.delivered"),
            outcome: Key::new("natsapp.outcome"),
            error_type: Key::new("error.type"),
        };
        let mut process_head = Vec::new();
        keys.system.text(&mut process_head, "nats");
        keys.operation_name.text(&mut process_head, "process");
        keys.operation_type.text(&mut process_head, "process");
        Encoder {
            resource,
            scope,
            keys,
            process_head,
            handlers,
            encoded_handlers: Vec::new(),
            last: None,
        }
    }

    /// `spans` (`count` of them) as one export request's body.
    ///
    /// The spans are written first, after room for the request's head
    /// (whose lengths count them), and the head then right before them:
    /// the body is sent from where it starts, and nothing is copied.
    pub fn request<'a>(
        &mut self,
        spans: impl IntoIterator<Item = &'a Span>,
        count: usize,
    ) -> Bytes {
        let scope_field = len_field(self.scope.len());
        let resource_field = len_field(self.resource.len());
        // Three tags and three lengths of at most ten bytes each.
        let head_room = 3 * 11 + scope_field + resource_field;
        let mut out = (self.last.take())
            .and_then(|last| last.try_into_mut().ok())
            .map(Vec::from)
            .unwrap_or_default();
        out.clear();
        out.reserve(head_room + count * 512);
        out.resize(head_room, 0);
        for s in spans {
            self.span_field(&mut out, s);
        }
        let encoded = out.len() - head_room;
        let scope_spans = scope_field + encoded;
        let resource_spans = resource_field + len_field(scope_spans);
        let mut head = Vec::with_capacity(head_room);
        // ExportTraceServiceRequest.resource_spans
        key(&mut head, 1, LEN);
        varint(&mut head, resource_spans as u64);
        // ResourceSpans.resource
        bytes(&mut head, 1, &self.resource);
        // ResourceSpans.scope_spans
        key(&mut head, 2, LEN);
        varint(&mut head, scope_spans as u64);
        // ScopeSpans.scope, then ScopeSpans.spans (written above)
        bytes(&mut head, 1, &self.scope);
        let start = head_room - head.len();
        out[start..head_room].copy_from_slice(&head);
        let whole = Bytes::from(out);
        self.last = Some(whole.clone());
        whole.slice(start..)
    }

    /// One span as `ScopeSpans.spans` (field 2): written in place after
    /// room for its length, which is moved only when it does not take
    /// exactly that room.
    fn span_field(&mut self, out: &mut Vec<u8>, s: &Span) {
        key(out, 2, LEN);
        let at = out.len();
        out.resize(at + SPAN_LENGTH_ROOM, 0);
        self.span(out, s);
        let len = (out.len() - at - SPAN_LENGTH_ROOM) as u64;
        if varint_len(len) == SPAN_LENGTH_ROOM {
            out[at] = len as u8 | 0x80;
            out[at + 1] = (len >> 7) as u8;
        } else {
            let mut length = Vec::with_capacity(10);
            varint(&mut length, len);
            out.splice(at..at + SPAN_LENGTH_ROOM, length);
        }
    }

    /// One `Span` message's fields.
    fn span(&mut self, out: &mut Vec<u8>, s: &Span) {
        bytes(out, 1, &s.trace_id.0);
        bytes(out, 2, &s.span_id.0);
        if let Some(state) = &s.trace_state {
            bytes(out, 3, state.as_bytes());
        }
        if let Some(parent) = &s.parent {
            bytes(out, 4, &parent.0);
        }
        let (prefix, subject, kind) = match &s.details {
            Details::Process { subject, .. } => ("process ", subject.as_str(), CONSUMER),
            Details::Send { subject, .. } => ("send ", subject.as_str(), PRODUCER),
        };
        key(out, 5, LEN);
        varint(out, (prefix.len() + subject.len()) as u64);
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(subject.as_bytes());
        key(out, 6, VARINT);
        varint(out, kind);
        key(out, 7, FIXED64);
        out.extend_from_slice(&s.start.to_le_bytes());
        key(out, 8, FIXED64);
        out.extend_from_slice(&s.end.to_le_bytes());
        self.attributes(out, s);
        if let Some(message) = &s.error {
            // Status { message = 2; code = 3 (STATUS_CODE_ERROR = 2) }
            key(out, 15, LEN);
            varint(out, (len_field(message.len()) + 2) as u64);
            bytes(out, 2, message.as_bytes());
            key(out, 3, VARINT);
            varint(out, 2);
        }
    }

    /// A span's attributes, after the messaging semantic conventions.
    fn attributes(&mut self, out: &mut Vec<u8>, s: &Span) {
        match &s.details {
            Details::Process {
                subject,
                body_size,
                message_id,
                handler,
                delivery,
                outcome,
            } => {
                let keys = &self.keys;
                out.extend_from_slice(&self.process_head);
                keys.destination.text(out, subject.as_str());
                keys.body_size.int(out, *body_size as i64);
                if let Some(id) = message_id {
                    keys.message_id.text(out, id.as_str());
                }
                out.extend_from_slice(self.handler(*handler));
                let keys = &self.keys;
                if let Some((sequence, delivered)) = delivery {
                    keys.sequence.int(out, *sequence as i64);
                    keys.delivered.int(out, i64::from(*delivered));
                }
                keys.outcome.text(out, outcome);
                if let Some(error) = &s.error {
                    keys.error_type.text(out, error);
                }
            }
            Details::Send {
                operation,
                subject,
                message_id,
                error_type,
            } => {
                let keys = &self.keys;
                keys.system.text(out, "nats");
                keys.operation_name.text(out, operation);
                keys.operation_type.text(out, "send");
                keys.destination.text(out, subject.as_str());
                if let Some(id) = message_id {
                    keys.message_id.text(out, id.as_str());
                }
                if let Some(error) = error_type {
                    keys.error_type.text(out, error);
                }
            }
        }
    }

    /// `handler`'s attributes, encoded.
    fn handler(&mut self, handler: HandlerId) -> &[u8] {
        let at = handler.0 as usize;
        if self.encoded_handlers.len() <= at {
            self.encoded_handlers.resize(at + 1, None);
        }
        let handlers = &self.handlers;
        self.encoded_handlers[at].get_or_insert_with(|| {
            let mut encoded = Vec::new();
            for (k, v) in handlers.get(handler).iter() {
                Key::new(k).text(&mut encoded, v);
            }
            encoded
        })
    }
}

/// OTLP's span kinds.
const PRODUCER: u64 = 4;
const CONSUMER: u64 = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::trace::span::{SpanId, TraceId};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;
    use std::sync::Arc;

    fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Any {
        v.as_ref().unwrap().value.clone().unwrap()
    }

    fn string(s: &str) -> Any {
        Any::StringValue(s.into())
    }

    #[test]
    fn opentelemetrys_own_types_decode_what_is_written() {
        let long = "x".repeat(300);
        let handlers = Arc::new(Handlers::default());
        let endpoint = handlers.register(vec![("natsapp.endpoint", "prices".into())]);
        let orders = handlers.register(vec![("natsapp.subscriber", "orders".into())]);
        // Registered again (a reload makes its handler anew): the same number.
        let again = handlers.register(vec![("natsapp.subscriber", "orders".into())]);
        assert_eq!((again, endpoint == orders), (orders, false));
        // Longer than a subject kept in place.
        let subject = format!("in.orders.{}", "region".repeat(10));
        let spans = [
            Span {
                trace_id: TraceId([7; 16]),
                span_id: SpanId([8; 8]),
                parent: Some(SpanId([9; 8])),
                trace_state: Some("vendor=1".into()),
                start: 1_700_000_000_000_000_001,
                end: 1_700_000_000_000_000_999,
                details: Details::Process {
                    subject: subject.as_str().into(),
                    body_size: 300,
                    message_id: None,
                    handler: orders,
                    delivery: Some((u64::MAX >> 1, 2)),
                    outcome: "termed",
                },
                error: Some(long.clone()),
            },
            Span {
                trace_id: TraceId([1; 16]),
                span_id: SpanId([2; 8]),
                parent: None,
                trace_state: None,
                start: 5,
                end: 6,
                details: Details::Send {
                    operation: "publish",
                    subject: "out".into(),
                    message_id: Some("in:1".into()),
                    error_type: None,
                },
                error: None,
            },
        ];
        let mut encoder = Encoder::new(
            &[("service.name".into(), "orders".into())],
            "natsapp-wasm",
            "1.2.3",
            handlers,
        );
        let body = encoder.request(&spans, spans.len());
        // A second request writes the cached parts the same way.
        assert_eq!(encoder.request(&spans, spans.len()), body);
        let decoded = ExportTraceServiceRequest::decode(&body[..]).unwrap();
        let [resource_spans] = &decoded.resource_spans[..] else {
            panic!("one resource: {decoded:?}")
        };
        let attribute = &resource_spans.resource.as_ref().unwrap().attributes[0];
        assert_eq!(attribute.key, "service.name");
        assert_eq!(text(&attribute.value), Any::StringValue("orders".into()));
        let [scope_spans] = &resource_spans.scope_spans[..] else {
            panic!("one scope")
        };
        let scope = scope_spans.scope.as_ref().unwrap();
        assert_eq!((&*scope.name, &*scope.version), ("natsapp-wasm", "1.2.3"));
        let [first, second] = &scope_spans.spans[..] else {
            panic!("two spans")
        };
        assert_eq!(first.trace_id, vec![7; 16]);
        assert_eq!(first.span_id, vec![8; 8]);
        assert_eq!(first.parent_span_id, vec![9; 8]);
        assert_eq!(first.trace_state, "vendor=1");
        assert_eq!(first.name, format!("process {subject}"));
        assert_eq!(first.kind, 5);
        assert_eq!(first.start_time_unix_nano, 1_700_000_000_000_000_001);
        assert_eq!(first.end_time_unix_nano, 1_700_000_000_000_000_999);
        let values: Vec<(&str, Any)> = (first.attributes.iter())
            .map(|kv| (&*kv.key, text(&kv.value)))
            .collect();
        assert_eq!(
            values,
            [
                ("messaging.system", string("nats")),
                ("messaging.operation.name", string("process")),
                ("messaging.operation.type", string("process")),
                ("messaging.destination.name", string(&subject)),
                ("messaging.message.body.size", Any::IntValue(300)),
                ("natsapp.subscriber", string("orders")),
                ("natsapp.stream.sequence", Any::IntValue(i64::MAX)),
                ("natsapp.delivered", Any::IntValue(2)),
                ("natsapp.outcome", string("termed")),
                ("error.type", Any::StringValue(long.clone())),
            ]
        );
        let status = first.status.as_ref().unwrap();
        assert_eq!((status.code, &status.message), (2, &long));
        assert_eq!(second.name, "send out");
        assert_eq!(second.kind, 4);
        assert!(second.parent_span_id.is_empty() && second.status.is_none());
        let values: Vec<(&str, Any)> = (second.attributes.iter())
            .map(|kv| (&*kv.key, text(&kv.value)))
            .collect();
        assert_eq!(
            values,
            [
                ("messaging.system", string("nats")),
                ("messaging.operation.name", string("publish")),
                ("messaging.operation.type", string("send")),
                ("messaging.destination.name", string("out")),
                ("messaging.message.id", string("in:1")),
            ]
        );
    }

    #[test]
    fn spans_of_every_length_decode_with_their_own_content() {
        // Around the lengths whose varint takes one, two and three bytes.
        let lengths = [0, 1, 100, 16_000, 16_200, 16_384, 20_000, 2_100_000];
        let spans: Vec<Span> = (lengths.iter().enumerate())
            .map(|(i, &len)| Span {
                trace_id: TraceId([i as u8 + 1; 16]),
                span_id: SpanId([2; 8]),
                parent: None,
                trace_state: None,
                start: 5,
                end: 6,
                details: Details::Send {
                    operation: "request",
                    subject: "s".into(),
                    message_id: None,
                    error_type: (len > 0).then_some("timeout"),
                },
                error: (len > 0).then(|| "e".repeat(len)),
            })
            .collect();
        let mut encoder = Encoder::new(&[], "natsapp-wasm", "1", Arc::default());
        let body = encoder.request(&spans, spans.len());
        let decoded = ExportTraceServiceRequest::decode(&body[..]).unwrap();
        let decoded = &decoded.resource_spans[0].scope_spans[0].spans;
        assert_eq!(decoded.len(), lengths.len());
        for (span, &len) in decoded.iter().zip(&lengths) {
            let message = span.status.as_ref().map_or(0, |s| s.message.len());
            assert_eq!(message, len);
            assert_eq!(span.name, "send s");
        }
        // Once a body is sent and dropped, the next request is written
        // into its buffer.
        let (at, written) = (body.as_ptr(), body.to_vec());
        drop(body);
        let again = encoder.request(&spans, spans.len());
        assert_eq!((again.as_ptr(), &again[..]), (at, &written[..]));
        for value in [0, 1, 127, 128, 16_383, 16_384, u64::MAX >> 1, u64::MAX] {
            let mut out = Vec::new();
            varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
            let mut expected = Vec::new();
            prost::encoding::encode_varint(value, &mut expected);
            assert_eq!(out, expected, "{value}");
        }
    }
}
