//! Finished spans as an OTLP `ExportTraceServiceRequest` in protobuf
//! (opentelemetry-proto's `collector/trace/v1`): one resource, one
//! instrumentation scope, the spans. Written straight from the runtime's
//! spans, whose shape is fixed, into one buffer: no intermediate message
//! structs, and nothing allocated per attribute.

use crate::message::trace::span::{Attribute, Details, Span};
use prost::encoding::{encode_varint, encoded_len_varint};
use std::collections::HashMap;
use std::sync::Arc;

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    encode_varint(field << 3 | wire, out);
}

/// A length-delimited field: bytes, a string or an encoded message.
fn bytes(out: &mut Vec<u8>, field: u64, value: &[u8]) {
    key(out, field, LEN);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// The encoded size of a length-delimited field of `len` bytes (field < 16).
fn len_field(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Writes export requests. What every request or many spans repeat is
/// encoded once: the resource, the scope, the attributes every `process`
/// span starts with, and each handler's attributes.
pub struct Encoder {
    resource: Vec<u8>,
    scope: Vec<u8>,
    process_head: Vec<u8>,
    /// Handlers' attributes by the address of the list their spans share
    /// (the list is held, so the address is not reused while cached).
    handlers: HashMap<usize, (Arc<[Attribute]>, Vec<u8>)>,
}

/// Handlers whose attributes stay encoded; past it the cache starts over.
const HANDLERS_CACHED: usize = 4096;

impl Encoder {
    /// The resource of `attributes`, and the scope `name` at `version`.
    pub fn new(attributes: &[(String, String)], name: &str, version: &str) -> Encoder {
        let mut resource = Vec::new();
        for (k, v) in attributes {
            text(&mut resource, 1, k, v);
        }
        let mut scope = Vec::new();
        bytes(&mut scope, 1, name.as_bytes());
        bytes(&mut scope, 2, version.as_bytes());
        let mut process_head = Vec::new();
        text(&mut process_head, 9, "messaging.system", "nats");
        text(&mut process_head, 9, "messaging.operation.name", "process");
        text(&mut process_head, 9, "messaging.operation.type", "process");
        Encoder {
            resource,
            scope,
            process_head,
            handlers: HashMap::new(),
        }
    }

    /// `spans` as one export request's body.
    pub fn request(&mut self, spans: &[Span]) -> Vec<u8> {
        let mut encoded = Vec::with_capacity(spans.len() * 512);
        let mut one = Vec::with_capacity(1024);
        for s in spans {
            one.clear();
            self.span(&mut one, s);
            bytes(&mut encoded, 2, &one);
        }
        let scope_spans = len_field(self.scope.len()) + encoded.len();
        let resource_spans = len_field(self.resource.len()) + len_field(scope_spans);
        let mut out = Vec::with_capacity(len_field(resource_spans));
        // ExportTraceServiceRequest.resource_spans
        key(&mut out, 1, LEN);
        encode_varint(resource_spans as u64, &mut out);
        // ResourceSpans.resource
        bytes(&mut out, 1, &self.resource);
        // ResourceSpans.scope_spans
        key(&mut out, 2, LEN);
        encode_varint(scope_spans as u64, &mut out);
        // ScopeSpans.scope, then ScopeSpans.spans (already keyed)
        bytes(&mut out, 1, &self.scope);
        out.extend_from_slice(&encoded);
        out
    }

    /// One `Span` message.
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
            Details::Process { subject, .. } => ("process ", &**subject, CONSUMER),
            Details::Send { subject, .. } => ("send ", subject.as_str(), PRODUCER),
        };
        key(out, 5, LEN);
        encode_varint((prefix.len() + subject.len()) as u64, out);
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(subject.as_bytes());
        key(out, 6, VARINT);
        encode_varint(kind, out);
        key(out, 7, FIXED64);
        out.extend_from_slice(&s.start.to_le_bytes());
        key(out, 8, FIXED64);
        out.extend_from_slice(&s.end.to_le_bytes());
        self.attributes(out, s);
        if let Some(message) = &s.error {
            // Status { message = 2; code = 3 (STATUS_CODE_ERROR = 2) }
            key(out, 15, LEN);
            encode_varint((len_field(message.len()) + 2) as u64, out);
            bytes(out, 2, message.as_bytes());
            key(out, 3, VARINT);
            encode_varint(2, out);
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
                out.extend_from_slice(&self.process_head);
                text(out, 9, "messaging.destination.name", subject);
                int(out, 9, "messaging.message.body.size", *body_size as i64);
                if let Some(id) = message_id {
                    text(out, 9, "messaging.message.id", id);
                }
                out.extend_from_slice(self.handler(handler));
                if let Some((sequence, delivered)) = delivery {
                    int(out, 9, "natsapp.stream.sequence", *sequence as i64);
                    int(out, 9, "natsapp.delivered", i64::from(*delivered));
                }
                text(out, 9, "natsapp.outcome", outcome);
                if let Some(error) = &s.error {
                    text(out, 9, "error.type", error);
                }
            }
            Details::Send {
                operation,
                subject,
                message_id,
                error_type,
            } => {
                text(out, 9, "messaging.system", "nats");
                text(out, 9, "messaging.operation.name", operation);
                text(out, 9, "messaging.operation.type", "send");
                text(out, 9, "messaging.destination.name", subject);
                if let Some(id) = message_id {
                    text(out, 9, "messaging.message.id", id);
                }
                if let Some(error) = error_type {
                    text(out, 9, "error.type", error);
                }
            }
        }
    }

    /// `handler`'s attributes, encoded.
    fn handler(&mut self, handler: &Arc<[Attribute]>) -> &[u8] {
        let address = Arc::as_ptr(handler) as *const () as usize;
        if self.handlers.len() >= HANDLERS_CACHED && !self.handlers.contains_key(&address) {
            self.handlers.clear();
        }
        let (_, encoded) = self.handlers.entry(address).or_insert_with(|| {
            let mut encoded = Vec::new();
            for (k, v) in handler.iter() {
                text(&mut encoded, 9, k, v);
            }
            (handler.clone(), encoded)
        });
        encoded
    }
}

/// OTLP's span kinds.
const PRODUCER: u64 = 4;
const CONSUMER: u64 = 5;

/// A `KeyValue` message with a string value, as field `field`.
fn text(out: &mut Vec<u8>, field: u64, k: &str, v: &str) {
    // AnyValue { string_value = 1 }
    let any = len_field(v.len());
    key_value_head(out, field, k, any);
    bytes(out, 1, v.as_bytes());
}

/// A `KeyValue` message with an integer value, as field `field`.
fn int(out: &mut Vec<u8>, field: u64, k: &str, v: i64) {
    // AnyValue { int_value = 3 }
    let any = 1 + encoded_len_varint(v as u64);
    key_value_head(out, field, k, any);
    key(out, 3, VARINT);
    encode_varint(v as u64, out);
}

/// A `KeyValue`'s tag, length and key, and its value's tag and length
/// (`any` bytes).
fn key_value_head(out: &mut Vec<u8>, field: u64, k: &str, any: usize) {
    key(out, field, LEN);
    encode_varint((len_field(k.len()) + len_field(any)) as u64, out);
    bytes(out, 1, k.as_bytes());
    key(out, 2, LEN);
    encode_varint(any as u64, out);
}

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
        let spans = [
            Span {
                trace_id: TraceId([7; 16]),
                span_id: SpanId([8; 8]),
                parent: Some(SpanId([9; 8])),
                trace_state: Some("vendor=1".into()),
                start: 1_700_000_000_000_000_001,
                end: 1_700_000_000_000_000_999,
                details: Details::Process {
                    subject: "in.orders".into(),
                    body_size: 300,
                    message_id: None,
                    handler: Arc::new([("natsapp.subscriber", "orders".into())]),
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
        );
        let body = encoder.request(&spans);
        // A second request writes the cached parts the same way.
        assert_eq!(encoder.request(&spans), body);
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
        assert_eq!(first.name, "process in.orders");
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
                ("messaging.destination.name", string("in.orders")),
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
}
