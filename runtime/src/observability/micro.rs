//! The NATS micro-service API, on the service's own connection: the
//! service answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` (by name and
//! id) like any NATS service, and `<service>.health` with its connection
//! status and statistics, the Python wrapper's health-check example built
//! in. The statistics ride in the health endpoint's STATS `data`: the one
//! endpoint there is, and it counts real requests.
//!
//! `<service>.reload` (a plain subscription, not a queue group: every
//! replica reloads) reloads the configuration and answers with the outcome.

use super::stats::Stats;
use crate::error::ErrorChain;
use async_nats::service::ServiceExt;
use futures::StreamExt;

/// The running micro-service; [`stop`](Micro::stop) leaves the service group.
pub(crate) struct Micro {
    service: async_nats::service::Service,
    health: tokio::task::JoinHandle<()>,
    reload: Option<tokio::task::JoinHandle<()>>,
}

/// What `<service>.health` answers.
#[derive(serde::Serialize)]
struct Health {
    service: String,
    /// `healthy` while the service's connection is up and a subscriber runs.
    status: &'static str,
    timestamp: String,
    stats: super::stats::StatsSnapshot,
}

/// Registers `name` as a NATS service on `client`. A name NATS services
/// cannot carry (only A-Z, a-z, 0-9, `-` and `_`) leaves the service
/// running without it, with a warning; so does a user the server does not
/// allow to subscribe to the endpoints (the refusal arrives later, as an
/// event the connection logs and does not treat as fatal).
pub(crate) async fn start(
    client: &async_nats::Client,
    name: &str,
    stats: Stats,
    reloader: crate::roster::reload::Reloader,
) -> Option<Micro> {
    let for_stats = stats.clone();
    let service = client
        .service_builder()
        .description(format!(
            "natsapp-wasm {}: {} subscribers",
            env!("CARGO_PKG_VERSION"),
            stats.snapshot().total_subscribers
        ))
        .stats_handler(move |_endpoint, _| {
            serde_json::to_value(for_stats.snapshot()).unwrap_or_default()
        })
        .start(name, env!("CARGO_PKG_VERSION"))
        .await;
    let service = match service {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "$SRV.PING, INFO and STATS are off: cannot register {name:?} as a NATS service: {}",
                ErrorChain(e.as_ref())
            );
            return None;
        }
    };
    let endpoint = service
        .group(name)
        .endpoint_builder()
        .name("health")
        .add("health")
        .await;
    let mut endpoint = match endpoint {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("{name}.health is off: {}", ErrorChain(e.as_ref()));
            let _ = service.stop().await;
            return None;
        }
    };
    let reload = match client.subscribe(format!("{name}.reload")).await {
        Ok(requests) => Some(tokio::spawn(answer_reloads(
            client.clone(),
            requests,
            name.to_string(),
            service.info().await.id,
            reloader,
        ))),
        Err(e) => {
            tracing::warn!("{name}.reload is off: {}", ErrorChain(&e));
            None
        }
    };
    tracing::info!("answering $SRV.PING, $SRV.INFO, $SRV.STATS, {name}.health and {name}.reload");
    let name = name.to_string();
    let health = tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
            let body = serde_json::to_vec(&health(&name, &stats)).unwrap_or_default();
            if let Err(e) = request.respond(Ok(body.into())).await {
                tracing::debug!("could not answer a health request: {}", ErrorChain(&e));
            }
        }
    });
    Some(Micro {
        service,
        health,
        reload,
    })
}

fn health(name: &str, stats: &Stats) -> Health {
    let snapshot = stats.snapshot();
    let running = snapshot.subscribers.iter().any(|s| s.not_running.is_none());
    Health {
        service: name.to_string(),
        status: if snapshot.connection_status == "connected" && running {
            "healthy"
        } else {
            "unhealthy"
        },
        timestamp: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        stats: snapshot,
    }
}

impl Micro {
    /// Stops answering: the service leaves the `$SRV` group.
    pub(crate) async fn stop(self) {
        self.health.abort();
        if let Some(r) = self.reload {
            r.abort();
        }
        let _ = self.service.stop().await;
    }
}

/// Reloads on each request to `<service>.reload` and answers with the outcome.
async fn answer_reloads(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    service: String,
    id: String,
    reloader: crate::roster::reload::Reloader,
) {
    while let Some(request) = requests.next().await {
        let Some(reply) = request.reply else { continue };
        let outcome = reloader.reload().await;
        let answer = crate::roster::reload::Answer {
            service: service.clone(),
            id: id.clone(),
            applied: outcome.is_ok(),
            error: outcome
                .as_ref()
                .err()
                .map(|e| ErrorChain(e.as_ref()).to_string()),
            summary: outcome.ok(),
        };
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        if let Err(e) = client.publish(reply, body.into()).await {
            tracing::debug!("could not answer a reload request: {}", ErrorChain(&e));
        }
    }
}
