//! One delivery's trace, after OpenTelemetry's messaging semantic
//! conventions (v1.30.0, development status): a `process <subject>` span
//! of kind consumer per delivery (or endpoint request), whose parent is the input's W3C
//! `traceparent`, and a `send <subject>` span of kind producer per guest
//! publish or request, whose context goes out in the output's
//! `traceparent` (replacing one the guest set), so a trace crosses
//! services. The exporter is set up by `observability::traces`.

use super::InFlight;
use crate::config::{EndpointConfig, SubscriberConfig};
use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;

/// Where message spans start, when traces are on.
#[derive(Clone)]
pub struct Tracer(SdkTracer);

impl Tracer {
    /// Spans from `tracer`.
    pub fn new(tracer: SdkTracer) -> Tracer {
        Tracer(tracer)
    }

    /// Starts the `process` span of one delivery to `sub`.
    pub fn process(&self, sub: &SubscriberConfig, msg: &InFlight) -> MessageTrace {
        let mut attributes = common(msg);
        attributes.extend([
            KeyValue::new("messaging.consumer.group.name", sub.durable.to_string()),
            KeyValue::new("natsapp.subscriber", sub.name.clone()),
            KeyValue::new("natsapp.stream", msg.stream.clone()),
            KeyValue::new("natsapp.stream.sequence", msg.sequence as i64),
            KeyValue::new("natsapp.delivered", i64::from(msg.delivery.delivered)),
        ]);
        if let Some(tenant) = &sub.tenant {
            attributes.push(KeyValue::new("natsapp.tenant", tenant.clone()));
        }
        self.start(msg, attributes)
    }

    /// Starts the `process` span of one request to `endpoint`.
    pub fn request(&self, endpoint: &EndpointConfig, msg: &InFlight) -> MessageTrace {
        let mut attributes = common(msg);
        attributes.extend([
            KeyValue::new(
                "messaging.consumer.group.name",
                endpoint.queue_group.clone(),
            ),
            KeyValue::new("natsapp.endpoint", endpoint.name.clone()),
        ]);
        if let Some(tenant) = endpoint.tenant() {
            attributes.push(KeyValue::new("natsapp.tenant", tenant.to_string()));
        }
        self.start(msg, attributes)
    }

    /// The `process` span of `msg`, a child of its `traceparent` when it has one.
    fn start(&self, msg: &InFlight, attributes: Vec<KeyValue>) -> MessageTrace {
        let message = &msg.message;
        let parent = match &message.headers {
            Some(h) => TraceContextPropagator::new().extract(&Headers(h)),
            None => Context::new(),
        };
        let span = self
            .0
            .span_builder(format!("process {}", message.subject))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .start_with_context(&self.0, &parent);
        MessageTrace {
            cx: parent.with_span(span),
            tracer: self.0.clone(),
        }
    }
}

/// The attributes of every `process` span: the system, the operation, the
/// subject, the payload's size and the message's id when it has one.
fn common(msg: &InFlight) -> Vec<KeyValue> {
    let message = &msg.message;
    let mut attributes = vec![
        KeyValue::new("messaging.system", "nats"),
        KeyValue::new("messaging.operation.name", "process"),
        KeyValue::new("messaging.operation.type", "process"),
        KeyValue::new("messaging.destination.name", message.subject.to_string()),
        KeyValue::new("messaging.message.body.size", message.payload.len() as i64),
    ];
    if let Some(id) = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
        attributes.push(KeyValue::new(
            "messaging.message.id",
            id.as_str().to_string(),
        ));
    }
    attributes
}

/// One delivery's `process` span.
pub struct MessageTrace {
    cx: Context,
    tracer: SdkTracer,
}

impl MessageTrace {
    /// The trace id, in hex, as logs carry it.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// Starts the `send` span of a guest's publish (`operation` "publish")
    /// or request ("request") to `subject`, and puts its context in
    /// `headers`.
    pub fn send(
        &self,
        subject: &str,
        operation: &'static str,
        headers: &mut HeaderMap,
    ) -> SendSpan {
        let mut attributes = vec![
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.operation.name", operation),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.destination.name", subject.to_string()),
        ];
        if let Some(id) = headers.get("Nats-Msg-Id") {
            attributes.push(KeyValue::new(
                "messaging.message.id",
                id.as_str().to_string(),
            ));
        }
        let span = self
            .tracer
            .span_builder(format!("send {subject}"))
            .with_kind(SpanKind::Producer)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.cx);
        let cx = self.cx.with_span(span);
        TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(headers));
        SendSpan { cx }
    }

    /// Ends the span with how the delivery was settled (`outcome`) and,
    /// when the handler failed or rejected it, why (`error`).
    pub fn finish(&self, outcome: &'static str, error: Option<&str>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("natsapp.outcome", outcome));
        if let Some(error) = error {
            span.set_attribute(KeyValue::new("error.type", error.to_string()));
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
    }
}

/// A guest publish's or request's `send` span.
pub struct SendSpan {
    cx: Context,
}

impl SendSpan {
    /// Ends it; `error` names the failure kind when the send failed.
    pub fn finish(self, error: Option<(&'static str, String)>) {
        let span = self.cx.span();
        if let Some((kind, message)) = error {
            span.set_attribute(KeyValue::new("error.type", kind));
            span.set_status(Status::error(message));
        }
        span.end();
    }
}

/// Reads W3C trace context from NATS headers.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Writes W3C trace context into NATS headers.
struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}
