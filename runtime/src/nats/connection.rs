//! A connection subscribers pull, publish and settle through — the
//! service's own, or a tenant's — with the JetStream context on it and the
//! atomic-batch slots its subscribers share.

use super::batch::BatchSlots;
use super::connect::{Connected, LastConnect};
use super::wire::Wire;
use crate::config::{defaults, Config};
use async_nats::jetstream;
use std::sync::Arc;

/// One NATS connection and what its subscribers share on it.
#[derive(Clone)]
pub struct Connection {
    /// Core NATS.
    pub client: async_nats::Client,
    /// JetStream on the same connection, for its API (pulls, consumer
    /// and stream calls), bounded by async-nats' request timeout.
    pub jetstream: jetstream::Context,
    /// JetStream for publishing: waits for a PubAck as long as the longest
    /// publisher timeout.
    publishing: jetstream::Context,
    /// Atomic batches open per stream, shared by the connection's subscribers.
    pub batch_slots: Arc<BatchSlots>,
    /// When the connection was last made (again).
    last_connect: Arc<LastConnect>,
}

impl Connection {
    /// A connected client with JetStream set up for `config`'s publishers.
    pub fn new(config: &Config, connected: Connected) -> Connection {
        let client = connected.client;
        Connection {
            jetstream: jetstream::new(client.clone()),
            publishing: publishing_context(config, client.clone()),
            client,
            batch_slots: Default::default(),
            last_connect: connected.last_connect,
        }
    }

    /// A subscriber's way to the server over this connection.
    pub fn wire(&self) -> Wire {
        Wire::server(
            self.client.clone(),
            self.publishing.clone(),
            self.batch_slots.clone(),
            self.last_connect.clone(),
        )
    }
}

/// JetStream on `client` for publishing, waiting for PubAcks as long as the
/// longest publisher timeout. async-nats bounds an awaited PubAck by the
/// context's request timeout (`ack_timeout` bounds only PubAcks nobody
/// awaits), so both are set: a publisher's longer timeout would otherwise
/// end at async-nats' default 5 s.
fn publishing_context(config: &Config, client: async_nats::Client) -> jetstream::Context {
    let max_publish_wait = config
        .publishers
        .iter()
        .map(|p| p.timeout)
        .max()
        .unwrap_or(defaults::PUBLISH_TIMEOUT)
        .max(defaults::PUBLISH_TIMEOUT);
    jetstream::ContextBuilder::new()
        .timeout(max_publish_wait)
        .ack_timeout(max_publish_wait)
        .backpressure_on_inflight(true)
        .build(client)
}
