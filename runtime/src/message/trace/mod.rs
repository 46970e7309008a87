//! One delivery's trace, after OpenTelemetry's messaging semantic
//! conventions (v1.30.0, development status): a `process <subject>` span
//! of kind consumer per delivery (or endpoint request), whose parent is the input's W3C
//! `traceparent`, and a `send <subject>` span of kind producer per guest
//! publish or request, whose context goes out in the output's
//! `traceparent` (replacing one the guest set), so a trace crosses
//! services. The exporter is set up by `observability::traces`.

pub mod span;

use super::InFlight;
use crate::config::{EndpointConfig, SubscriberConfig};
use async_nats::HeaderMap;
use span::{Attribute, Details, HandlerId, Sampler, Span, SpanContext, SpanId, SpanSink, TraceId};
use std::sync::{Arc, Mutex};

/// Where message spans start, when traces are on: the service's, or one
/// handler's (whose attributes it registered, once).
#[derive(Clone)]
pub struct Tracer {
    sampler: Sampler,
    sink: Arc<dyn SpanSink>,
    handler: HandlerId,
}

impl Tracer {
    /// Spans decided by `sampler`, recorded into `sink`.
    pub fn new(sampler: Sampler, sink: Arc<dyn SpanSink>) -> Tracer {
        let handler = sink.handlers().register(Vec::new());
        Tracer {
            sampler,
            sink,
            handler,
        }
    }

    /// This tracer for the deliveries to `sub`.
    pub fn for_subscriber(&self, sub: &SubscriberConfig) -> Tracer {
        let mut handler: Vec<Attribute> = vec![
            ("messaging.consumer.group.name", sub.durable.as_str().into()),
            ("natsapp.subscriber", sub.name.as_str().into()),
            ("natsapp.stream", sub.stream.as_str().into()),
        ];
        if let Some(tenant) = &sub.tenant {
            handler.push(("natsapp.tenant", tenant.as_str().into()));
        }
        self.with(handler)
    }

    /// This tracer for the requests to `endpoint`.
    pub fn for_endpoint(&self, endpoint: &EndpointConfig) -> Tracer {
        let mut handler: Vec<Attribute> = vec![
            (
                "messaging.consumer.group.name",
                endpoint.queue_group.as_str().into(),
            ),
            ("natsapp.endpoint", endpoint.name.as_str().into()),
        ];
        if let Some(tenant) = endpoint.tenant() {
            handler.push(("natsapp.tenant", tenant.into()));
        }
        self.with(handler)
    }

    fn with(&self, handler: Vec<Attribute>) -> Tracer {
        Tracer {
            sampler: self.sampler,
            sink: self.sink.clone(),
            handler: self.sink.handlers().register(handler),
        }
    }

    /// Starts the `process` span of `msg`, a child of its `traceparent`
    /// when it has one.
    pub fn process(&self, msg: &InFlight) -> MessageTrace {
        let message = &msg.message;
        let parent = message.headers.as_ref().and_then(parent_of);
        let trace_id = parent.as_ref().map_or_else(TraceId::random, |p| p.trace_id);
        let context = SpanContext {
            trace_id,
            span_id: SpanId::random(),
            sampled: self.sampler.sampled(parent.as_ref(), trace_id),
            trace_state: parent.as_ref().and_then(|p| p.trace_state.clone()),
        };
        let open = context.sampled.then(|| Open {
            parent: parent.map(|p| p.span_id),
            start: span::now(),
            details: Details::Process {
                subject: message.subject.as_str().into(),
                body_size: message.payload.len(),
                message_id: message_id(message.headers.as_ref()),
                handler: self.handler,
                delivery: msg
                    .request
                    .is_none()
                    .then_some((msg.sequence, msg.delivery.delivered)),
                outcome: "",
            },
        });
        MessageTrace {
            context,
            open: Mutex::new(open),
        }
    }
}

/// The context of an incoming message's `traceparent` (and `tracestate`).
fn parent_of(headers: &HeaderMap) -> Option<SpanContext> {
    let traceparent = headers.get("traceparent")?;
    let trace_state = headers.get("tracestate").map(|v| v.as_str());
    SpanContext::from_traceparent(traceparent.as_str(), trace_state)
}

/// A message's `Nats-Msg-Id`.
fn message_id(headers: Option<&HeaderMap>) -> Option<span::SpanText> {
    Some(headers?.get("Nats-Msg-Id")?.as_str().into())
}

/// A sampled span not yet ended.
struct Open {
    parent: Option<SpanId>,
    start: u64,
    details: Details,
}

impl Open {
    /// The finished span of `context`, with an error status when `error`.
    fn end(self, context: &SpanContext, error: Option<String>) -> Span {
        Span {
            trace_id: context.trace_id,
            span_id: context.span_id,
            parent: self.parent,
            trace_state: context.trace_state.clone(),
            start: self.start,
            end: span::now(),
            details: self.details,
            error,
        }
    }
}

/// One delivery's `process` span. It is recorded through the tracer it
/// started from, which its callers hold: a span that held the exporter's
/// queue itself would count a reference on it per message, from every
/// core.
pub struct MessageTrace {
    context: SpanContext,
    /// Until it ends; never for a span that is not sampled.
    open: Mutex<Option<Open>>,
}

impl MessageTrace {
    /// The trace id, as logs carry it (hex).
    pub fn trace_id(&self) -> TraceId {
        self.context.trace_id
    }

    /// Starts the `send` span of a guest's publish (`operation` "publish")
    /// or request ("request") to `subject`, and puts its context in
    /// `headers`; it is recorded through `tracer`.
    pub fn send(
        &self,
        tracer: &Tracer,
        subject: &str,
        operation: &'static str,
        headers: &mut HeaderMap,
    ) -> SendSpan {
        let context = SpanContext {
            span_id: SpanId::random(),
            ..self.context.clone()
        };
        headers.insert("traceparent", context.traceparent().as_str());
        if let Some(state) = &context.trace_state {
            headers.insert("tracestate", state.as_str());
        }
        let open = context.sampled.then(|| Open {
            parent: Some(self.context.span_id),
            start: span::now(),
            details: Details::Send {
                operation,
                subject: subject.into(),
                message_id: message_id(Some(headers)),
                error_type: None,
            },
        });
        SendSpan {
            context,
            open,
            sink: tracer.sink.clone(),
        }
    }

    /// Ends the span with how the delivery was settled (`outcome`) and,
    /// when the handler failed or rejected it, why (`error`), and records
    /// it through `tracer`.
    pub fn finish(&self, tracer: &Tracer, settled: &'static str, error: Option<&str>) {
        let Some(mut open) = self.open.lock().expect("span lock").take() else {
            return;
        };
        if let Details::Process { outcome, .. } = &mut open.details {
            *outcome = settled;
        }
        let span = open.end(&self.context, error.map(str::to_string));
        tracer.sink.record(span);
    }
}

/// A guest publish's or request's `send` span.
pub struct SendSpan {
    context: SpanContext,
    open: Option<Open>,
    sink: Arc<dyn SpanSink>,
}

impl SendSpan {
    /// Ends it; `error` names the failure kind when the send failed.
    pub fn finish(self, error: Option<(&'static str, String)>) {
        let Some(mut open) = self.open else {
            return;
        };
        let status = error.map(|(kind, message)| {
            if let Details::Send { error_type, .. } = &mut open.details {
                *error_type = Some(kind);
            }
            message
        });
        let span = open.end(&self.context, status);
        self.sink.record(span);
    }
}
