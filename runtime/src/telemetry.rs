//! Logging: `tracing` to stderr, `info` by default, `debug` for the runtime
//! when NATS_DEBUG is on; `RUST_LOG` overrides both; colours only on a
//! terminal. Statistics are logged one line per subscriber.

use crate::stats::StatsSnapshot;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once; later calls do nothing).
pub fn init(debug: bool) {
    let default = if debug {
        "info,natsapp_wasm=debug,guest=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
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

/// Displays an error with its causes, `outer: cause: root`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
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
            tracing::warn!(subscriber = %s.name, tenant = s.tenant.as_deref().unwrap_or(""), "not running: {reason}");
            continue;
        }
        tracing::info!(
            subscriber = %s.name,
            tenant = s.tenant.as_deref().unwrap_or(""),
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
