//! One pull request of a durable consumer, read on its own inbox until it
//! is really over. async-nats' batch stops at the first error status and
//! drops its inbox, so a message the server sent just before a leadership
//! change or a consumer error was lost to the client and waited out its
//! ack_wait; here a request the server ends with an error is still read
//! until its expiry, and what arrives is handled. The server is asked for
//! idle heartbeats, four per expiry, and ends every request it still
//! holds at expiry with a 408 status: a request that stops hearing from it
//! (no message, status or heartbeat for two heartbeats, or no end by its
//! expiry) is found dead — the server never got it, or lost it — instead
//! of being waited on.

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::{jetstream, StatusCode, Subject};
use futures::StreamExt;
use std::time::Duration;
use tokio::time::Instant;

/// Allowance for the server seeing a request's expiry later than the
/// client computes it.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(1);

/// The longest idle heartbeat asked for.
const MAX_HEARTBEAT: Duration = Duration::from_secs(5);
/// Heartbeats asked for per expiry (the server wants at most two): two
/// missed ones are then found well before the request expires.
const HEARTBEATS_PER_EXPIRY: u32 = 4;

/// A pull request that could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Its inbox cannot be subscribed to.
    #[error("cannot subscribe to the pull request's inbox")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// The request cannot be published.
    #[error("cannot send the pull request")]
    Request(#[source] async_nats::jetstream::consumer::pull::BatchRequestError),
}

/// How the server ended a request early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server ended the pull request: {status} {}", description.as_deref().unwrap_or(""))]
pub struct ServerEnded {
    /// Its status (409 for a leadership change, a deleted consumer or a
    /// consumer limit; 503 when no server answers for the consumer).
    pub status: StatusCode,
    /// The server's description.
    pub description: Option<String>,
}

impl ServerEnded {
    /// The consumer's leader changed.
    pub fn leadership_change(&self) -> bool {
        self.status == StatusCode::REQUEST_TERMINATED && self.described("leadership change")
    }

    /// The durable was deleted.
    pub fn consumer_deleted(&self) -> bool {
        self.described("consumer deleted")
    }

    /// The request broke a limit of the durable (max batch, max expires,
    /// max waiting): the durable was changed under the runtime.
    pub fn consumer_limit(&self) -> bool {
        self.described("exceeded maxrequestbatch")
            || self.described("exceeded maxrequestexpires")
            || self.described("exceeded maxwaiting")
    }

    fn described(&self, what: &str) -> bool {
        self.description
            .as_deref()
            .is_some_and(|d| d.to_ascii_lowercase().contains(what))
    }
}

/// What reading a request gives next.
#[derive(Debug)]
pub enum Pulled {
    /// A delivery.
    Message(Box<jetstream::Message>),
    /// The server ended the request early. After a leadership change what
    /// it already sent may still arrive until the request's expiry, and is
    /// read; any other end is final.
    ServerEnded(ServerEnded),
    /// Nothing came from the server (no message, status or heartbeat) for
    /// two heartbeats, or the request passed its expiry without the
    /// server ending it: the server does not hold it (it never got it, or
    /// lost it), or what it sent was lost on the way (and comes back after
    /// ack_wait).
    Silent,
}

/// One pull request and its inbox.
pub struct PullRequest {
    inbox: async_nats::Subscriber,
    context: jetstream::Context,
    /// Messages it may still deliver.
    remaining: usize,
    /// When the server forgets it.
    expires_at: Instant,
    heartbeat: Duration,
    /// When the server was last heard from on it.
    heard: Instant,
    /// The server ended it early (it is read until its expiry).
    ended: bool,
    /// It is over: nothing more is read.
    over: bool,
}

impl PullRequest {
    /// Asks `consumer` for up to `batch` messages within `expires`, on a
    /// new inbox of `context`'s connection.
    pub async fn send(
        consumer: &PullConsumer,
        context: &jetstream::Context,
        client: &async_nats::Client,
        batch: usize,
        expires: Duration,
    ) -> Result<PullRequest, PullError> {
        let inbox = Subject::from(client.new_inbox());
        let subscription = client
            .subscribe(inbox.clone())
            .await
            .map_err(PullError::Subscribe)?;
        let heartbeat = (expires / HEARTBEATS_PER_EXPIRY).min(MAX_HEARTBEAT);
        let config = BatchConfig {
            batch,
            expires: Some(expires),
            idle_heartbeat: heartbeat,
            ..Default::default()
        };
        consumer
            .request_batch(config, inbox)
            .await
            .map_err(PullError::Request)?;
        let now = Instant::now();
        Ok(PullRequest {
            inbox: subscription,
            context: context.clone(),
            remaining: batch,
            expires_at: now + expires,
            heartbeat,
            heard: now,
            ended: false,
            over: false,
        })
    }

    /// When the server will have forgotten it.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// The next delivery or event; `None` once the request is over: every
    /// message it asked for delivered, expired (or, ended early, past its
    /// expiry), or silent.
    pub async fn next(&mut self) -> Option<Pulled> {
        loop {
            if self.over || self.remaining == 0 {
                return None;
            }
            let read_until = if self.ended {
                self.expires_at + EXPIRY_MARGIN
            } else {
                (self.heard + 2 * self.heartbeat).min(self.expires_at + EXPIRY_MARGIN)
            };
            let message = match tokio::time::timeout_at(read_until, self.inbox.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    self.over = true;
                    return None;
                }
                Err(_) if self.ended => {
                    self.over = true;
                    return None;
                }
                Err(_) => {
                    // Read on to its expiry: what the server might still
                    // send is handled, not left to wait out ack_wait.
                    self.ended = true;
                    return Some(Pulled::Silent);
                }
            };
            self.heard = Instant::now();
            match message.status {
                None | Some(StatusCode::OK) => {
                    self.remaining -= 1;
                    return Some(Pulled::Message(Box::new(jetstream::Message {
                        message,
                        context: self.context.clone(),
                    })));
                }
                Some(StatusCode::IDLE_HEARTBEAT) => continue,
                // Expired, or (no_wait) nothing to deliver: over.
                Some(StatusCode::TIMEOUT | StatusCode::NOT_FOUND) => {
                    self.over = true;
                    return None;
                }
                Some(status) => {
                    let ended = ServerEnded {
                        status,
                        description: message.description,
                    };
                    // After a leadership change the old leader may have
                    // sent messages still on their way: read on to its
                    // expiry. Any other end (no responders, a deleted
                    // consumer, a limit, a bad request) sends nothing more.
                    if ended.leadership_change() {
                        self.ended = true;
                    } else {
                        self.over = true;
                    }
                    return Some(Pulled::ServerEnded(ended));
                }
            }
        }
    }

    /// Reads it until `until` (at most its end), keeping the deliveries.
    pub async fn drain(&mut self, until: Instant) -> Vec<jetstream::Message> {
        let mut fetched = Vec::new();
        while let Ok(Some(pulled)) = tokio::time::timeout_at(until, self.next()).await {
            if let Pulled::Message(m) = pulled {
                fetched.push(*m);
            }
        }
        fetched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_early_end_says_why() {
        let ended = |d: &str| ServerEnded {
            status: StatusCode::REQUEST_TERMINATED,
            description: Some(d.to_string()),
        };
        assert!(ended("Consumer Deleted").consumer_deleted());
        assert!(ended("Exceeded MaxRequestBatch of 1").consumer_limit());
        assert!(ended("Exceeded MaxRequestExpires of 1s").consumer_limit());
        assert!(ended("Exceeded MaxWaiting").consumer_limit());
        let leadership = ended("Leadership Change");
        assert!(!leadership.consumer_deleted() && !leadership.consumer_limit());
        assert!(leadership.leadership_change());
        assert!(!ended("Consumer Deleted").leadership_change());
    }
}
