//! A connection subscribers pull, publish and settle through — the
//! service's own, or a tenant's — with the JetStream context on it and the
//! atomic-batch slots its subscribers share.

use super::batch::BatchSlots;
use super::connect::{Connected, LastConnect};
use super::publish::PublishRoutes;
use super::wire::Wire;
use async_nats::jetstream;
use std::sync::Arc;
use std::time::Duration;

/// One NATS connection and what its subscribers share on it.
#[derive(Clone)]
pub struct Connection {
    /// Core NATS.
    pub client: async_nats::Client,
    /// JetStream on the same connection, for its API (pulls, consumer
    /// and stream calls), bounded by async-nats' request timeout.
    pub jetstream: jetstream::Context,
    /// Atomic batches open per stream, shared by the connection's subscribers.
    pub batch_slots: Arc<BatchSlots>,
    /// When the connection was last made (again).
    last_connect: Arc<LastConnect>,
}

impl Connection {
    /// A connected client with JetStream on it.
    pub fn new(connected: Connected) -> Connection {
        let client = connected.client;
        Connection {
            jetstream: jetstream::new(client.clone()),
            client,
            batch_slots: Default::default(),
            last_connect: connected.last_connect,
        }
    }

    /// A subscriber's way to the server over this connection, publishing
    /// by `routes`. Made again with each subscriber a reload starts, so a
    /// publisher's timeout lengthened by a reload holds.
    pub fn wire(&self, routes: &PublishRoutes) -> Wire {
        Wire::server(
            self.client.clone(),
            publishing_context(routes.longest_wait(), self.client.clone()),
            self.batch_slots.clone(),
            self.last_connect.clone(),
        )
    }
}

/// How long a message between two connections is awaited to tell whether
/// they share an account.
const ACCOUNT_PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Connection {
    /// Whether this connection and `other` are in the same account: a
    /// message one sends on a fresh inbox subject reaches the other only
    /// then, as accounts keep their subjects apart. False when that cannot
    /// be told (a permission refused, no answer in time).
    pub async fn same_account(&self, other: &Connection) -> bool {
        use futures::StreamExt;
        let subject = self.client.new_inbox();
        let Ok(mut probe) = self.client.subscribe(subject.clone()).await else {
            return false;
        };
        if !round_trip(&self.client).await
            || (other.client)
                .publish(subject, bytes::Bytes::new())
                .await
                .is_err()
        {
            return false;
        }
        matches!(
            tokio::time::timeout(ACCOUNT_PROBE_WAIT, probe.next()).await,
            Ok(Some(_))
        )
    }
}

/// Resolves once the server has answered a request `client` sent after
/// everything it sent before, so that a subscription made before is in
/// effect: async-nats' `flush` only writes to the socket. The request goes
/// to a fresh inbox no one serves, which the server answers at once (no
/// responders). False when no answer came (a permission refused it).
pub async fn round_trip(client: &async_nats::Client) -> bool {
    match client
        .request(client.new_inbox(), bytes::Bytes::new())
        .await
    {
        Ok(_) => true,
        Err(e) => e.kind() == async_nats::client::RequestErrorKind::NoResponders,
    }
}

/// JetStream on `client` for publishing, waiting for PubAcks as long as
/// `wait`, the longest publish timeout of the routes it serves: async-nats
/// bounds an awaited PubAck by the context's request timeout, 5 s unless
/// set. `ack_timeout` bounds only a PubAck whose future was dropped
/// before it was first polled, which the wire never does; set alike.
fn publishing_context(wait: Duration, client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(wait)
        .ack_timeout(wait)
        .backpressure_on_inflight(true)
        .build(client)
}
