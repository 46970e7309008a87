//! The service's NATS micro-service on its own connection: `$SRV.PING`,
//! `$SRV.INFO` and `$SRV.STATS` (by name and id, `nats::micro`), its
//! endpoints (the roster lists them there), and `<service>.health` with
//! the connection status and statistics, the Python wrapper's health-check
//! example built in. The statistics ride in the health endpoint's STATS
//! `data`.
//!
//! `<service>.reload` (a plain subscription, not a queue group: every
//! replica reloads) reloads the configuration and answers with the outcome.

use super::stats::Stats;
use crate::error::ErrorChain;
use crate::nats::micro::{MicroEndpoint, MicroService};
use futures::StreamExt;
use std::sync::Arc;

/// The queue group of `<service>.health`, as NATS services have by default.
const HEALTH_QUEUE_GROUP: &str = "q";

/// The running health and reload answering; [`stop`](Micro::stop) leaves
/// the service group.
pub(crate) struct Micro {
    service: Arc<MicroService>,
    health: Option<tokio::task::JoinHandle<()>>,
    reload: Option<tokio::task::JoinHandle<()>>,
}

/// What `<service>.health` answers.
#[derive(serde::Serialize)]
struct Health {
    service: String,
    /// `healthy` while the service's connection is up and a subscriber or
    /// endpoint runs.
    status: &'static str,
    timestamp: String,
    stats: super::stats::StatsSnapshot,
}

/// Adds `<name>.health` to `service` and answers `<name>.reload` on
/// `client`. A user the server does not allow to subscribe to them keeps
/// the service running without them (the refusal arrives later, as an
/// event the connection logs and does not treat as fatal).
pub(crate) async fn start(
    client: &async_nats::Client,
    service: Arc<MicroService>,
    name: &str,
    stats: Stats,
    reloader: crate::roster::reload::Reloader,
) -> Micro {
    let subject = format!("{name}.health");
    let health = match client
        .queue_subscribe(subject.clone(), HEALTH_QUEUE_GROUP.into())
        .await
    {
        Ok(requests) => {
            let endpoint = Arc::new(MicroEndpoint {
                name: "health".into(),
                subject,
                queue_group: HEALTH_QUEUE_GROUP.into(),
                stats: Default::default(),
            });
            let for_stats = stats.clone();
            service.add(
                endpoint.clone(),
                Some(Box::new(move || {
                    serde_json::to_value(for_stats.snapshot()).unwrap_or_default()
                })),
            );
            Some(tokio::spawn(answer_health(
                client.clone(),
                requests,
                endpoint,
                name.to_string(),
                stats,
            )))
        }
        Err(e) => {
            tracing::warn!("{name}.health is off: {}", ErrorChain(&e));
            None
        }
    };
    let reload = match client.subscribe(format!("{name}.reload")).await {
        Ok(requests) => Some(tokio::spawn(answer_reloads(
            client.clone(),
            requests,
            name.to_string(),
            service.id().to_string(),
            reloader,
        ))),
        Err(e) => {
            tracing::warn!("{name}.reload is off: {}", ErrorChain(&e));
            None
        }
    };
    tracing::info!("answering $SRV.PING, $SRV.INFO, $SRV.STATS, {name}.health and {name}.reload");
    Micro {
        service,
        health,
        reload,
    }
}

async fn answer_health(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    endpoint: Arc<MicroEndpoint>,
    name: String,
    stats: Stats,
) {
    while let Some(request) = requests.next().await {
        let started = std::time::Instant::now();
        let Some(reply) = request.reply else { continue };
        let body = serde_json::to_vec(&health(&name, &stats)).unwrap_or_default();
        if let Err(e) = client.publish(reply, body.into()).await {
            tracing::debug!("could not answer a health request: {}", ErrorChain(&e));
        }
        endpoint.stats.record(started.elapsed(), None);
    }
}

fn health(name: &str, stats: &Stats) -> Health {
    let snapshot = stats.snapshot();
    let running = snapshot.subscribers.iter().any(|s| s.not_running.is_none())
        || !snapshot.endpoints.is_empty();
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
        if let Some(h) = self.health {
            h.abort();
        }
        if let Some(r) = self.reload {
            r.abort();
        }
        self.service.stop();
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
