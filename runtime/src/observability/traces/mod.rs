//! OpenTelemetry trace export: when `[service] traces` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set (`OTEL_SDK_DISABLED=true` turns it off again), spans are exported
//! over OTLP/HTTP (protobuf) in batches, from a thread of their own
//! (`export`), encoded straight from the runtime's spans (`otlp`). The
//! standard variables are read by `settings`. The spans themselves are
//! made on the message path (`message::trace`); off, nothing there looks
//! at traces.
//!
//! The OpenTelemetry SDK is not used: its general span model (attributes
//! as key-value vectors, turned into protobuf structs grouped by resource
//! before encoding) cost a fifth to a quarter of a no-op handler's
//! throughput with every message sampled, where the runtime's spans have a
//! fixed shape that is recorded and encoded without intermediate steps.

pub mod export;
pub mod otlp;
pub mod settings;

use crate::config::Config;
use crate::message::trace::Tracer;
use export::Exporter;
use settings::Settings;
use std::sync::{Arc, Mutex};

/// The environment variables that turn trace export on.
pub const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The trace exporter's HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("traces: cannot set up the OTLP/HTTP client")]
pub struct TracesError(#[source] reqwest::Error);

/// The tracer the service's spans start from, and their exporter.
pub struct Traces {
    exporter: Mutex<Exporter>,
    tracer: Tracer,
}

impl Traces {
    /// The service's traces, when `config` or the environment turns them on.
    pub fn from_config(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Arc<Traces>>, TracesError> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let Some(settings) = Settings::read(config, &env) else {
            return Ok(None);
        };
        let sampler = settings.sampler;
        let collector = settings.endpoint.clone();
        let exporter = Exporter::start(settings)?;
        let tracer = Tracer::new(sampler, exporter.queue());
        tracing::info!(%collector, "exporting traces over OTLP/HTTP");
        Ok(Some(Arc::new(Traces {
            exporter: Mutex::new(exporter),
            tracer,
        })))
    }

    /// What message spans start from.
    pub fn tracer(&self) -> Tracer {
        self.tracer.clone()
    }

    /// Exports what is still queued and stops the exporter (blocks).
    pub fn shutdown(&self) {
        self.exporter.lock().expect("exporter lock").shutdown();
    }
}
