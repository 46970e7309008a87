//! A real OTLP/HTTP trace receiver on loopback: it accepts what an
//! exporter POSTs to `/v1/traces`, decodes the protobuf, and keeps the
//! spans with their service's name.

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::{Arc, Mutex};

/// A received span, the `service.name` of the resource that sent it and
/// that resource's attributes.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub span: Span,
    pub resource: Vec<KeyValue>,
}

impl ReceivedSpan {
    /// Its trace id in hex.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    /// Its span id in hex.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    /// Its parent's span id in hex (empty for a root span).
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    /// An attribute's value as text (numbers in decimal).
    pub fn attribute(&self, key: &str) -> Option<String> {
        text_of(&self.span.attributes, key)
    }
    /// An attribute of its resource, as text.
    pub fn resource_attribute(&self, key: &str) -> Option<String> {
        text_of(&self.resource, key)
    }
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: std::net::SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Listens on a free loopback port.
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(spans.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        OtlpReceiver { addr, spans, task }
    }

    /// Its base URL, as `[service] traces` or `OTEL_EXPORTER_OTLP_ENDPOINT` take it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    axum::extract::State(spans): axum::extract::State<Arc<Mutex<Vec<ReceivedSpan>>>>,
    body: axum::body::Bytes,
) -> (
    axum::http::StatusCode,
    [(&'static str, &'static str); 1],
    Vec<u8>,
) {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                [("content-type", "text/plain")],
                format!("not an ExportTraceServiceRequest: {e}").into_bytes(),
            )
        }
    };
    let mut received = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = (resource_spans.resource.map(|r| r.attributes)).unwrap_or_default();
        let service = text_of(&resource, "service.name").unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    span,
                    resource: resource.clone(),
                });
            }
        }
    }
    (
        axum::http::StatusCode::OK,
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}
