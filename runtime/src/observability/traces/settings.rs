//! How traces are exported, from `[service] traces` and the standard
//! OpenTelemetry variables: the collector and its headers and timeout
//! (`OTEL_EXPORTER_OTLP_*`), the sampler (`OTEL_TRACES_SAMPLER`), the
//! batching (`OTEL_BSP_*`) and the resource (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`). A value that cannot be read is warned
//! about by name and its default used, as the OpenTelemetry specification
//! asks of SDKs.

use crate::config::Config;
use crate::message::trace::span::{Root, Sampler};
use std::time::Duration;

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The collector's traces URL (`…/v1/traces`).
    pub endpoint: String,
    /// Extra request headers (authentication, tenancy).
    pub headers: Vec<(String, String)>,
    /// How long one export request may take.
    pub timeout: Duration,
    pub sampler: Sampler,
    /// How long a span waits at most for its batch to be sent.
    pub schedule_delay: Duration,
    /// Spans waiting to be exported; more are dropped.
    pub max_queue: usize,
    /// Spans per export request at most.
    pub max_batch: usize,
    /// The resource's attributes, `service.name` first.
    pub resource: Vec<(String, String)>,
}

impl Settings {
    /// The settings for `config`'s service; `None` when nothing names a collector.
    pub fn read(config: &Config, env: &impl Fn(&str) -> Option<String>) -> Option<Settings> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let endpoint = match (
            &config.service.traces,
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ) {
            (Some(base), _) => format!("{base}/v1/traces"),
            (None, Some(url)) => url.trim().to_string(),
            (None, None) => {
                let base = var("OTEL_EXPORTER_OTLP_ENDPOINT")?;
                format!("{}/v1/traces", base.trim().trim_end_matches('/'))
            }
        };
        let mut headers = list(var("OTEL_EXPORTER_OTLP_HEADERS"));
        for (k, v) in list(var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")) {
            headers.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
            headers.push((k, v));
        }
        let number = |name: &str, default: u64| number(name, var(name), default);
        let millis = |name: &str, default: u64| Duration::from_millis(number(name, default));
        let timeout = match var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            Some(_) => millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 10_000),
            None => millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000),
        };
        let max_queue = number("OTEL_BSP_MAX_QUEUE_SIZE", 2048).max(1) as usize;
        let max_batch = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512) as usize;
        let mut resource = list(var("OTEL_RESOURCE_ATTRIBUTES"));
        let named = resource.iter().position(|(k, _)| k == "service.name");
        let service = match (var("OTEL_SERVICE_NAME"), named) {
            (Some(name), _) => name.trim().to_string(),
            (None, Some(i)) => resource[i].1.clone(),
            (None, None) => config.service.name.clone(),
        };
        resource.retain(|(k, _)| k != "service.name" && !k.starts_with("telemetry.sdk."));
        resource.splice(
            0..0,
            [
                ("service.name".to_string(), service),
                ("telemetry.sdk.name".to_string(), "natsapp-wasm".to_string()),
                ("telemetry.sdk.language".to_string(), "rust".to_string()),
                (
                    "telemetry.sdk.version".to_string(),
                    env!("CARGO_PKG_VERSION").to_string(),
                ),
            ],
        );
        Some(Settings {
            endpoint,
            headers,
            timeout: timeout.min(millis("OTEL_BSP_EXPORT_TIMEOUT", 30_000)),
            sampler: sampler(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG")),
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5_000),
            max_queue,
            max_batch: max_batch.clamp(1, max_queue),
            resource,
        })
    }
}

/// A whole number of `name`, or `default` (with a warning when it is not one).
fn number(name: &str, value: Option<String>, default: u64) -> u64 {
    let Some(value) = value else {
        return default;
    };
    value.trim().parse().unwrap_or_else(|_| {
        tracing::warn!("{name}={value:?} is not a whole number: using {default}");
        default
    })
}

/// The sampler `OTEL_TRACES_SAMPLER` (and its argument) names.
fn sampler(name: Option<String>, arg: Option<String>) -> Sampler {
    let ratio = || match &arg {
        None => 1.0,
        Some(a) => match a.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => {
                tracing::warn!("OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio from 0 to 1: using 1");
                1.0
            }
        },
    };
    let (parent_based, root) = match name.as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => (true, Root::AlwaysOn),
        Some("parentbased_always_off") => (true, Root::AlwaysOff),
        Some("parentbased_traceidratio") => (true, Root::Ratio(ratio())),
        Some("always_on") => (false, Root::AlwaysOn),
        Some("always_off") => (false, Root::AlwaysOff),
        Some("traceidratio") => (false, Root::Ratio(ratio())),
        Some(other) => {
            tracing::warn!(
                "OTEL_TRACES_SAMPLER={other:?} is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio: using parentbased_always_on"
            );
            (true, Root::AlwaysOn)
        }
    };
    Sampler { parent_based, root }
}

/// `key=value,…` pairs, values percent-decoded (W3C Baggage's format,
/// which the headers and resource variables use).
fn list(value: Option<String>) -> Vec<(String, String)> {
    let Some(value) = value else {
        return Vec::new();
    };
    (value.split(','))
        .filter(|pair| !pair.trim().is_empty())
        .filter_map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Some((k.trim().to_string(), unescape(v.trim())))
            }
            _ => {
                tracing::warn!("{pair:?} is not key=value: left out");
                None
            }
        })
        .collect()
}

/// `text` with its `%XX` escapes decoded.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(traces: Option<&str>) -> Config {
        let traces = traces.map_or(String::new(), |t| format!("traces = \"{t}\"\n"));
        let text = format!(
            "[service]\nname = \"orders\"\n{traces}\n[[subscribers]]\nname = \"orders\"\ncomponent = \"handler.wasm\"\nsubject = \"order.created\"\nstream = \"ORDERS\"\ndurable = \"orders\"\n"
        );
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/config/testdata/service.toml");
        Config::parse(&file, &text, |_| None).unwrap()
    }

    fn read(traces: Option<&str>, vars: &[(&str, &str)]) -> Option<Settings> {
        let vars: HashMap<String, String> = (vars.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::read(&config(traces), &|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_specifications() {
        let s = read(Some("http://127.0.0.1:4318"), &[]).unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.sampler, Sampler::default());
        assert_eq!(
            (s.schedule_delay, s.max_queue, s.max_batch),
            (Duration::from_secs(5), 2048, 512)
        );
        assert_eq!(s.resource[0], ("service.name".into(), "orders".into()));
        assert!(s.headers.is_empty());
        assert_eq!(read(None, &[]), None);
    }

    #[test]
    fn the_standard_variables_are_read() {
        let s = read(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Basic%20YQ==,x-tenant=a",
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Tenant=b"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "service.name=billing,deployment.environment=eu%2Dwest",
                ),
            ],
        )
        .unwrap();
        assert_eq!(s.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(
            s.headers,
            [
                ("authorization".to_string(), "Basic YQ==".to_string()),
                ("X-Tenant".to_string(), "b".to_string())
            ]
        );
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(
            s.sampler,
            Sampler {
                parent_based: true,
                root: Root::Ratio(0.1)
            }
        );
        assert_eq!(
            (s.schedule_delay, s.max_queue, s.max_batch),
            (Duration::from_millis(200), 100, 100)
        );
        assert_eq!(s.resource[0], ("service.name".into(), "billing".into()));
        assert!(s
            .resource
            .contains(&("deployment.environment".into(), "eu-west".into())));
        let named = read(
            Some("http://127.0.0.1:4318"),
            &[
                ("OTEL_SERVICE_NAME", "orders-eu"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://elsewhere/v1/traces",
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            named.resource[0],
            ("service.name".into(), "orders-eu".into())
        );
        assert_eq!(named.endpoint, "http://127.0.0.1:4318/v1/traces");
    }

    #[test]
    fn values_that_cannot_be_read_leave_the_defaults() {
        let s = read(
            Some("http://127.0.0.1:4318"),
            &[
                ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
        )
        .unwrap();
        assert_eq!(s.sampler, Sampler::default());
        assert_eq!(s.timeout, Duration::from_secs(10));
        let ratio = read(
            Some("http://127.0.0.1:4318"),
            &[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
        )
        .unwrap();
        assert_eq!(ratio.sampler.root, Root::Ratio(1.0));
    }
}
