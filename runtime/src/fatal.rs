//! Why a running service stops on its own: reasons that reach
//! `Service::run` from its connection's events and from the subscribers'
//! pull loops. Each keeps its cause, so `ErrorChain` prints the whole chain.

use crate::nats::connect::ConnectionEnd;
use crate::nats::setup::SetupError;

/// A reason the service cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// The service's own connection is gone for good, or refused.
    #[error(transparent)]
    Connection(#[from] ConnectionEnd),
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
