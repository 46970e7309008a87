//! OpenTelemetry trace export: when `[service] traces` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set (`OTEL_SDK_DISABLED=true` turns it off again), spans are exported
//! over OTLP/HTTP (protobuf) in batches, from the batch processor's own
//! thread. The SDK reads the other standard variables itself:
//! `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `OTEL_TRACES_SAMPLER`
//! (default: parent-based, always on), `OTEL_SERVICE_NAME` (default: the
//! service's name), `OTEL_BSP_*`. The spans themselves are made on the
//! message path (`message::trace`); off, nothing there looks at traces.

use crate::config::Config;
use crate::error::ErrorChain;
use crate::message::trace::Tracer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::sync::Arc;

/// The environment variables that turn trace export on.
pub const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The trace exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("traces: cannot set up the OTLP exporter")]
pub struct TracesError(#[source] opentelemetry_otlp::ExporterBuildError);

/// The tracer the service's spans start from, and their exporter.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: Tracer,
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
        // The exporter's HTTP client is reqwest's, whose TLS (shared in
        // this build with the OCI client's) leaves the choice of crypto to
        // its user and panics without one: ring, as the runtime's other
        // TLS. Only the first install counts.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        // The file's collector; without one, the variables name it.
        if let Some(base) = &config.service.traces {
            exporter = exporter.with_endpoint(format!("{base}/v1/traces"));
        }
        let exporter = exporter.build().map_err(TracesError)?;
        let mut resource = Resource::builder();
        if !set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name(config.service.name.clone());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = Tracer::new(provider.tracer("natsapp-wasm"));
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

    /// What message spans start from.
    pub fn tracer(&self) -> Tracer {
        self.tracer.clone()
    }

    /// Exports what is still buffered and stops the exporter (blocks).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(
                "the last spans may not have been exported: {}",
                ErrorChain(&e)
            );
        }
    }
}
