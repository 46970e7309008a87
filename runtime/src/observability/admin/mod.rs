//! The admin endpoint (`[service] admin`): `/metrics` in the Prometheus
//! text format, `/healthz` (the process serves) and `/readyz` (connected,
//! subscribers running, not shutting down), over plain HTTP for scrapers
//! and orchestrator probes.

mod metrics;

use super::stats::Stats;
use crate::error::ErrorChain;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("service.admin: cannot listen on {addr}: {source}")]
pub struct AdminError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// The running admin endpoint; it stops when dropped.
pub struct Admin {
    addr: SocketAddr,
    state: Arc<Probe>,
    task: tokio::task::JoinHandle<()>,
}

/// What the handlers read.
struct Probe {
    service: String,
    stats: Stats,
    draining: AtomicBool,
}

/// The admin endpoint's socket, bound before the service starts so a
/// port in use is found before anything connects; it serves once the
/// service is set up (connections wait until then).
pub struct AdminListener {
    addr: SocketAddr,
    listener: tokio::net::TcpListener,
}

impl AdminListener {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> Result<AdminListener, AdminError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| AdminError { addr, source })?;
        Ok(AdminListener { addr, listener })
    }

    /// Serves the endpoint for `service`'s `stats`.
    pub fn serve(self, service: &str, stats: Stats) -> Admin {
        let state = Arc::new(Probe {
            service: service.to_string(),
            stats,
            draining: AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/metrics", get(scrape))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .with_state(state.clone());
        let listener = self.listener;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("the admin endpoint stopped: {}", ErrorChain(&e));
            }
        });
        tracing::info!(addr = %self.addr, "admin endpoint: /metrics, /healthz, /readyz");
        Admin {
            addr: self.addr,
            state,
            task,
        }
    }
}

impl Admin {
    /// The address it listens on (the port chosen when `admin` named port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on `/readyz` says the service is shutting down.
    pub fn draining(&self) {
        self.state.draining.store(true, Ordering::Relaxed);
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scrape(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    match metrics::render(&probe.service, &probe.stats.snapshot()) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}

/// 200 while the service connection is up, some subscriber or endpoint runs and the
/// service is not shutting down; 503 otherwise. Either way the body lists
/// subscribers that do not run (a tenant refused, a stream missing), so a
/// degraded service says so without being taken out of rotation.
async fn ready(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    let snapshot = probe.stats.snapshot();
    let mut problems = Vec::new();
    if probe.draining.load(Ordering::Relaxed) {
        problems.push("shutting down: no new messages are pulled".to_string());
    }
    if snapshot.connection_status != "connected" {
        problems.push(format!("NATS connection {}", snapshot.connection_status));
    }
    let not_running: Vec<String> = snapshot
        .subscribers
        .iter()
        .filter_map(|s| {
            let reason = s.not_running.as_ref()?;
            let tenant = s
                .tenant
                .as_ref()
                .map_or(String::new(), |t| format!(" (tenant {t:?})"));
            Some(format!(
                "subscriber {:?}{tenant} not running: {reason}",
                s.name
            ))
        })
        .collect();
    if not_running.len() == snapshot.subscribers.len() && snapshot.endpoints.is_empty() {
        problems.push("no subscriber runs".to_string());
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = if problems.is_empty() {
        "ready\n".to_string()
    } else {
        format!("not ready: {}\n", problems.join("; "))
    };
    for line in not_running {
        body.push_str(&line);
        body.push('\n');
    }
    (status, body)
}
