//! Rollout status: every replica answers requests on
//! `natsapp.deploy.status.<BUCKET>`, on the connection that watches that
//! bucket — for a tenant's bucket the tenant's own, in the tenant's
//! account, so its CI asks with its own credentials — reporting that
//! bucket's keys only: the revision applied, each handler's component
//! digest, and the last refusal with its reason. `ask` collects the
//! answers of every replica.

use super::rollout::Refusal;
use crate::error::ErrorChain;
use crate::nats::gather::{self, GatherError, Patience};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The subject status requests for `bucket` go to.
pub fn subject(bucket: &str) -> String {
    format!("natsapp.deploy.status.{bucket}")
}

/// One key as a replica runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyStatus {
    /// The key.
    pub key: String,
    /// The revision applied (`None`: none yet).
    pub revision: Option<u64>,
    /// Each subscriber it declares, with its component's SHA-256.
    pub handlers: BTreeMap<String, String>,
    /// The last refusal since a revision was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// Revisions refused since the replica started.
    #[serde(default)]
    pub refusals: u64,
}

/// A replica's answer for one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The service name.
    pub service: String,
    /// The replica.
    pub replica: String,
    /// The bucket.
    pub bucket: String,
    /// Its keys.
    pub keys: Vec<KeyStatus>,
}

/// What every responder of a replica reads: each bucket's answer, by the
/// tenant whose bucket it is (`None`: the platform's) and bucket name.
pub type Book = Arc<RwLock<BTreeMap<(Option<String>, String), Answer>>>;

/// Answers status requests for `bucket` (of `tenant`) from `book`, on `client`.
pub async fn serve(
    client: async_nats::Client,
    tenant: Option<String>,
    bucket: String,
    book: Book,
) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
    let mut requests = client.subscribe(subject(&bucket)).await?;
    Ok(tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else { continue };
            let answer = book
                .read()
                .expect("status book lock")
                .get(&(tenant.clone(), bucket.clone()))
                .cloned();
            let Some(answer) = answer else { continue };
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(e) = client.publish(reply, body.into()).await {
                tracing::debug!(bucket = %bucket, "status answer not sent: {}", ErrorChain(&e));
            }
        }
    }))
}

/// How long `ask` waits for the first answer.
pub const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(5);
/// How long it keeps listening for more after an answer.
pub const MORE_ANSWERS_WAIT: Duration = Duration::from_secs(2);

/// Asks every replica watching `bucket` for its status: answers until none
/// arrive for [`MORE_ANSWERS_WAIT`], or until `replicas` have answered.
pub async fn ask(
    client: &async_nats::Client,
    bucket: &str,
    replicas: Option<usize>,
) -> Result<Vec<Answer>, GatherError> {
    let patience = Patience {
        first: FIRST_ANSWER_WAIT,
        more: MORE_ANSWERS_WAIT,
        enough: replicas,
    };
    let mut answers: Vec<Answer> = gather::answers(client, &subject(bucket), patience).await?;
    answers.sort_by(|a, b| a.replica.cmp(&b.replica));
    Ok(answers)
}
