//! Asking every replica at once: a request to a subject many answer, and
//! the answers gathered until none has come for a while (or enough have).

use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Why the question could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// The answers' inbox cannot be subscribed to.
    #[error("cannot subscribe to {inbox}")]
    Subscribe {
        /// The inbox.
        inbox: String,
        /// Why.
        #[source]
        source: async_nats::SubscribeError,
    },
    /// The request cannot be sent.
    #[error("cannot publish to {subject}")]
    Publish {
        /// The subject asked on.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::client::PublishError,
    },
}

/// How long to wait for answers.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// For the first.
    pub first: Duration,
    /// For each next, after an answer.
    pub more: Duration,
    /// Stop once this many have answered.
    pub enough: Option<usize>,
}

/// Sends an empty request to `subject` on `client` and gathers the answers
/// that parse as `T` (those that do not are logged and left out).
pub async fn answers<T: DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    patience: Patience,
) -> Result<Vec<T>, GatherError> {
    let inbox = client.new_inbox();
    let mut replies =
        client
            .subscribe(inbox.clone())
            .await
            .map_err(|source| GatherError::Subscribe {
                inbox: inbox.clone(),
                source,
            })?;
    client
        .publish_with_reply(subject.to_string(), inbox, Default::default())
        .await
        .map_err(|source| GatherError::Publish {
            subject: subject.to_string(),
            source,
        })?;
    let mut answers = Vec::new();
    let mut wait = patience.first;
    while let Ok(Some(reply)) = tokio::time::timeout(wait, replies.next()).await {
        match serde_json::from_slice::<T>(&reply.payload) {
            Ok(a) => answers.push(a),
            Err(e) => tracing::warn!("an answer on {subject} is not what was asked for: {e}"),
        }
        if patience.enough.is_some_and(|n| answers.len() >= n) {
            break;
        }
        wait = patience.more;
    }
    Ok(answers)
}
