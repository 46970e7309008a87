//! Logging: `tracing` to stderr, `info` by default, `debug` for the runtime
//! when NATS_DEBUG is on; `RUST_LOG` overrides both. Text (colours only on
//! a terminal) or JSON lines (`--log-format json`, `NATSAPP_LOG_FORMAT`):
//! one object per event with its fields at the top level, the service's
//! name, and the tenant of the subscriber an event names. Statistics are
//! logged one line per subscriber.

use super::stats::StatsSnapshot;
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// What JSON events carry besides their own fields: the service, and each
/// subscriber's tenant (subscriber names are unique in a service).
#[derive(Default)]
struct LogContext {
    service: String,
    tenants: HashMap<String, String>,
}

fn context() -> &'static RwLock<LogContext> {
    static CONTEXT: OnceLock<RwLock<LogContext>> = OnceLock::new();
    CONTEXT.get_or_init(Default::default)
}

/// Names the service and its subscribers' tenants in JSON log events.
pub fn describe_service(config: &crate::config::Config) {
    if let Ok(mut c) = context().write() {
        c.service = config.service.name.clone();
        c.tenants = config
            .subscribers
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.tenant.clone()?)))
            .collect();
    }
}

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(debug: bool, format: LogFormat) {
    let default = if debug {
        "info,natsapp_wasm=debug,guest=debug"
    } else {
        "info"
    };
    init_with(default, format);
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` or else `default`.
pub fn init_with(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // Span fields are stored formatted; no colour codes in them.
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).try_init(),
    };
}

/// Writes each event as one JSON object: `timestamp`, `level`, `target`,
/// `service`, the event's fields (`message` among them), the fields of the
/// spans it happened in (`trace_id` while a traced message is handled),
/// and `tenant` when the event names a subscriber of a tenant.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = serde_json::Map::new();
        fields.insert(
            "timestamp".into(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        fields.insert("level".into(), meta.level().as_str().into());
        fields.insert("target".into(), meta.target().into());
        if let Ok(c) = context().read() {
            if !c.service.is_empty() {
                fields.insert("service".into(), c.service.clone().into());
            }
        }
        event.record(&mut JsonFields(&mut fields));
        // The fields of the spans around the event (a message's `trace_id`),
        // as the formatter stored them: `key=value`, space-separated.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(stored) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                for (key, value) in stored.fields.split(' ').filter_map(|kv| kv.split_once('=')) {
                    fields
                        .entry(key.to_string())
                        .or_insert(value.trim_matches('"').into());
                }
            }
        }
        let tenant = fields
            .get("subscriber")
            .and_then(|s| s.as_str())
            .and_then(|s| context().read().ok()?.tenants.get(s).cloned());
        if let Some(tenant) = tenant {
            fields.entry("tenant").or_insert(tenant.into());
        }
        writeln!(writer, "{}", serde_json::Value::Object(fields))
    }
}

/// Records an event's fields into a JSON object.
struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// Installs a subscriber that writes through the test harness's capture,
/// so a failing test shows the runtime's log (and a passing one does not).
pub fn init_for_tests() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,natsapp_wasm=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Logs `snapshot`, one line per subscriber.
pub fn log_stats(snapshot: &StatsSnapshot) {
    tracing::info!(connection = %snapshot.connection_status, subscribers = snapshot.total_subscribers, "statistics");
    for s in &snapshot.subscribers {
        let failed: Vec<String> = s
            .failed
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        if let Some(reason) = &s.not_running {
            tracing::warn!(subscriber = %s.name, tenant = s.tenant.as_deref(), "not running: {reason}");
            continue;
        }
        tracing::info!(
            subscriber = %s.name,
            tenant = s.tenant.as_deref(),
            "received={} acked={} naked={} termed={} dead_lettered={} by_guest={} retried={} rejected={} failed=[{}] in_flight={} latency: mean={}us p50<={}us p99<={}us max={}us",
            s.received, s.acked, s.naked, s.termed, s.dead_lettered, s.settled_by_guest, s.retried, s.rejected,
            failed.join(" "), s.in_flight, s.latency.mean_us, s.latency.p50_us_at_most, s.latency.p99_us_at_most, s.latency.max_us,
        );
    }
    for t in &snapshot.tenants {
        let cpu = match t.cpu_quota {
            Some(quota) => format!(
                "guest_cpu_seconds={:.3} guest_cpu_cores={:.3} cpu_quota={quota} cpu_parked={}",
                t.guest_cpu_seconds, t.guest_cpu_cores, t.cpu_parked
            ),
            None => "cpu_quota=none".to_string(),
        };
        let memory = match t.memory_quota {
            Some(quota) => format!(
                "memory_held={} memory_quota={quota} idle_instances_reclaimed={}",
                t.memory_held, t.idle_instances_reclaimed
            ),
            None => "memory_quota=none".to_string(),
        };
        tracing::info!(tenant = %t.name, "quotas: {cpu} {memory}");
    }
}
