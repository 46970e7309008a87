//! What a failed pull means and what to do about it, by kind: a transient
//! failure (no leader during an election, a lost connection) is retried
//! with backoff; a deleted durable is recreated above the ack floor last
//! observed, never replaying acknowledged history; a stream lost by the
//! server (a memory stream after a restart) is declared again when the file
//! may declare it; a durable changed under the runtime is set right; what
//! cannot be repaired stops the service with the reason.

use super::PullContext;
use crate::dispatch::Subscriber;
use crate::error::ErrorChain;
use crate::fatal::Fatal;
use crate::nats::pull::ServerEnded;
use crate::nats::setup::{self, SetupError, StartAt};
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use std::time::Duration;

/// A pull failure, classified.
#[derive(Debug)]
pub enum PullFailure {
    /// The server said the durable was deleted.
    ConsumerDeleted,
    /// The server refused the pull because of a consumer limit (max batch,
    /// max expires, max waiting): the durable was changed under the runtime.
    ConsumerLimit(ServerEnded),
    /// Anything else (a leadership change, no server for the consumer):
    /// the server is asked what is wrong.
    Unknown(ServerEnded),
}

impl PullFailure {
    /// Classifies how the server ended a pull request. The server says why
    /// only in the status's description, so the kind is read from it.
    pub fn of(ended: ServerEnded) -> PullFailure {
        if ended.consumer_deleted() {
            PullFailure::ConsumerDeleted
        } else if ended.consumer_limit() {
            PullFailure::ConsumerLimit(ended)
        } else {
            PullFailure::Unknown(ended)
        }
    }
}

/// What recovery did.
pub enum Recovered {
    /// The durable was recreated or set right: pull from this one.
    Consumer(Box<PullConsumer>),
    /// Nothing to repair (a transient failure): pull again after a pause.
    Nothing,
}

/// What the server says about a subscriber's stream and durable.
enum Diagnosis {
    Healthy,
    StreamGone,
    ConsumerGone,
    /// The server could not answer: its error, for the log.
    Unreachable(async_nats::Error),
}

/// How long a diagnosis waits for the JetStream API. During an election
/// it may not answer for the context's whole timeout; pulling again sooner
/// costs nothing, while waiting delays the first pull once it answers.
const DIAGNOSIS_WAIT: Duration = Duration::from_secs(2);

async fn diagnose(sub: &Subscriber) -> Diagnosis {
    match tokio::time::timeout(DIAGNOSIS_WAIT, ask(sub)).await {
        Ok(diagnosis) => diagnosis,
        Err(_) => Diagnosis::Unreachable(
            format!(
                "no answer about the stream and durable within {}s",
                DIAGNOSIS_WAIT.as_secs()
            )
            .into(),
        ),
    }
}

async fn ask(sub: &Subscriber) -> Diagnosis {
    let cfg = &sub.config;
    let stream = match sub.jetstream.get_stream(cfg.stream.as_str()).await {
        Ok(s) => {
            // A stream created again numbers its messages anew.
            sub.settler()
                .ledger
                .observe_stream(super::watch::created_ns(&s));
            s
        }
        Err(e) if setup::is_stream_not_found(&e) => return Diagnosis::StreamGone,
        Err(e) => return Diagnosis::Unreachable(e.into()),
    };
    match stream.consumer_info(cfg.durable.as_str()).await {
        Ok(_) => Diagnosis::Healthy,
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => Diagnosis::ConsumerGone,
        Err(e) => Diagnosis::Unreachable(e.into()),
    }
}

/// Acts on `failure`; `Err` when the subscriber cannot go on.
pub async fn recover(
    sub: &Subscriber,
    ctx: &PullContext,
    failure: PullFailure,
) -> Result<Recovered, Fatal> {
    let cfg = &sub.config;
    let fatal = |source: SetupError| Fatal::Subscriber {
        subscriber: cfg.name.clone(),
        source,
    };
    if let PullFailure::ConsumerLimit(why) = &failure {
        tracing::warn!(subscriber = %cfg.name, durable = %cfg.durable, "{why}; setting the durable right");
        return setup::ensure_consumer(&sub.jetstream, cfg)
            .await
            .map(|c| Recovered::Consumer(Box::new(c)))
            .or_else(|e| transient_or_fatal(e).map_err(fatal));
    }
    let mut diagnosis = diagnose(sub).await;
    if matches!(diagnosis, Diagnosis::ConsumerGone)
        && !matches!(failure, PullFailure::ConsumerDeleted)
    {
        // A durable briefly without a leader can look missing: ask again.
        tokio::time::sleep(Duration::from_millis(500)).await;
        diagnosis = diagnose(sub).await;
    }
    match diagnosis {
        Diagnosis::Healthy => {
            if let PullFailure::Unknown(why) = failure {
                tracing::warn!(subscriber = %cfg.name, "{why}; pulling again");
            }
            Ok(Recovered::Nothing)
        }
        Diagnosis::Unreachable(why) => {
            tracing::warn!(subscriber = %cfg.name, "pull failed and the server cannot say why now ({}); pulling again", ErrorChain(why.as_ref()));
            Ok(Recovered::Nothing)
        }
        Diagnosis::ConsumerGone => {
            if let Ok(stream) = sub.jetstream.get_stream(cfg.stream.as_str()).await {
                sub.settler()
                    .ledger
                    .observe_stream(super::watch::created_ns(&stream));
            }
            let floor = sub.settler().ledger.floor();
            // A watch's first start (`new`, `last`) would skip what is
            // above a floor not yet seen: it starts above the floor too.
            let start = if floor == 0 && cfg.watch.is_none() {
                StartAt::First
            } else {
                StartAt::After(floor)
            };
            let consumer = match setup::ensure_consumer_at(&sub.jetstream, cfg, start).await {
                Ok(c) => c,
                Err(e) => return transient_or_fatal(e).map_err(fatal),
            };
            sub.settler().stats.consumer_recreated();
            tracing::error!(
                subscriber = %cfg.name, durable = %cfg.durable, stream = %cfg.stream,
                "the durable consumer was deleted while running; recreated from the ack floor last observed (stream sequence {floor}): acknowledged history is not replayed, messages above the floor already handled here are acked again without the handler (counted as replayed), others above it may be handled again"
            );
            Ok(Recovered::Consumer(Box::new(consumer)))
        }
        Diagnosis::StreamGone => {
            let declared = {
                let streams = ctx.streams.read().unwrap_or_else(|e| e.into_inner());
                crate::config::stream_named(&streams, cfg.stream.as_str(), &cfg.tenant)
                    .filter(|s| s.declare)
                    .cloned()
            };
            let Some(declared) = declared else {
                return Err(fatal(SetupError::StreamGone {
                    stream: cfg.stream.to_string(),
                }));
            };
            if let Err(e) = setup::ensure_stream(&sub.jetstream, &declared).await {
                return transient_or_fatal(e).map_err(fatal);
            }
            if let Ok(stream) = sub.jetstream.get_stream(cfg.stream.as_str()).await {
                sub.settler()
                    .ledger
                    .observe_stream(super::watch::created_ns(&stream));
            }
            let consumer =
                match setup::ensure_consumer_at(&sub.jetstream, cfg, StartAt::First).await {
                    Ok(c) => c,
                    Err(e) => return transient_or_fatal(e).map_err(fatal),
                };
            sub.settler().stats.consumer_recreated();
            tracing::error!(subscriber = %cfg.name, stream = %cfg.stream, "the stream was gone from the server (a memory stream lost in a restart, or deleted); declared it again with its durable");
            Ok(Recovered::Consumer(Box::new(consumer)))
        }
    }
}

/// A setup error during recovery: the server's health is retried, the
/// configuration's fault is fatal.
fn transient_or_fatal(e: SetupError) -> Result<Recovered, SetupError> {
    if e.is_configuration() {
        Err(e)
    } else {
        tracing::warn!("{}", ErrorChain(&e));
        Ok(Recovered::Nothing)
    }
}
