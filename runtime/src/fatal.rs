//! Why a running service stops on its own: reasons that reach `Service::run`
//! from the connection's events and the subscribers' pull loops. Each says
//! what was lost and keeps its cause, so `{:#}` prints the whole chain.

use crate::nats::setup::SetupError;

/// A reason the service cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// The connection dropped and reconnecting is off.
    #[error("the connection to NATS was lost and nats.allow_reconnect is false")]
    ConnectionLost,
    /// Every reconnect attempt failed.
    #[error("the connection to NATS is closed: nats.max_reconnect_attempts ({attempts}) reconnect attempts failed")]
    ReconnectsExhausted {
        /// The configured limit.
        attempts: usize,
    },
    /// The client closed the connection for another reason.
    #[error("the connection to NATS is closed")]
    ConnectionClosed,
    /// The server refused the service's credentials or permissions.
    #[error("NATS refused the service: {0}")]
    Denied(String),
    /// No subscriber could be set up (every tenant failed).
    #[error("no subscriber runs: {0}")]
    NothingRuns(String),
    /// A subscriber's stream or durable is gone and cannot be set up again.
    #[error("subscriber {subscriber:?} cannot go on")]
    Subscriber {
        /// The subscriber.
        subscriber: String,
        /// Why.
        #[source]
        source: SetupError,
    },
}
