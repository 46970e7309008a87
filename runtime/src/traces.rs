//! OpenTelemetry traces, after the messaging semantic conventions (v1.30.0,
//! development status): a `process <subject>` span of kind consumer per
//! delivery, whose parent is the input's W3C `traceparent`, and a
//! `send <subject>` span of kind producer per guest publish or request,
//! whose context goes out in the output's `traceparent` (replacing one the
//! guest set), so a trace crosses services.
//!
//! Spans are exported over OTLP/HTTP (protobuf) in batches, from the batch
//! processor's own thread. Tracing is off unless `[service] traces` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set (`OTEL_SDK_DISABLED=true` turns it off again); off, nothing on the
//! message path looks at traces. The SDK reads the other standard
//! variables itself: `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`,
//! `OTEL_TRACES_SAMPLER` (default: parent-based, always on),
//! `OTEL_SERVICE_NAME` (default: the service's name), `OTEL_BSP_*`.

use crate::config::{Config, SubscriberConfig};
use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::Arc;

/// The environment variables that turn trace export on.
pub const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The trace exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("traces: {0}")]
pub struct TracesError(String);

/// The tracer the service's spans start from, and their exporter.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Traces {
    /// The service's traces, when `config` or the environment turns them on.
    pub fn from_config(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Arc<Traces>>, TracesError> {
        let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
        let from_env = ENDPOINT_VARIABLES.iter().any(|v| set(v));
        if config.service.traces.is_none() && !from_env {
            return Ok(None);
        }
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        // The file's collector; without one, the variables name it.
        if let Some(base) = &config.service.traces {
            exporter = exporter.with_endpoint(format!("{base}/v1/traces"));
        }
        let exporter = exporter.build().map_err(|e| TracesError(e.to_string()))?;
        let mut resource = Resource::builder();
        if !set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name(config.service.name.clone());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("natsapp-wasm");
        tracing::info!(
            collector = config
                .service
                .traces
                .as_deref()
                .unwrap_or("from OTEL_EXPORTER_OTLP_*"),
            "exporting traces over OTLP/HTTP"
        );
        Ok(Some(Arc::new(Traces { provider, tracer })))
    }

    /// Starts the `process` span of one delivery to `sub`.
    pub fn process(&self, sub: &SubscriberConfig, msg: &crate::settle::InFlight) -> MessageTrace {
        let message = &msg.message;
        let parent = match &message.headers {
            Some(h) => TraceContextPropagator::new().extract(&Headers(h)),
            None => Context::new(),
        };
        let subject = message.subject.as_str();
        let mut attributes = vec![
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", subject.to_string()),
            KeyValue::new("messaging.consumer.group.name", sub.durable.to_string()),
            KeyValue::new("messaging.message.body.size", message.payload.len() as i64),
            KeyValue::new("natsapp.subscriber", sub.name.clone()),
            KeyValue::new("natsapp.stream", msg.stream.clone()),
            KeyValue::new("natsapp.stream.sequence", msg.sequence as i64),
            KeyValue::new("natsapp.delivered", i64::from(msg.delivery.delivered)),
        ];
        if let Some(id) = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
            attributes.push(KeyValue::new(
                "messaging.message.id",
                id.as_str().to_string(),
            ));
        }
        if let Some(tenant) = &sub.tenant {
            attributes.push(KeyValue::new("natsapp.tenant", tenant.clone()));
        }
        let span = self
            .tracer
            .span_builder(format!("process {subject}"))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        MessageTrace {
            cx: parent.with_span(span),
            tracer: self.tracer.clone(),
        }
    }

    /// Exports what is still buffered and stops the exporter (blocks).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("the last spans may not have been exported: {e}");
        }
    }
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
