//! Durable pull consumers: the configuration the runtime needs, how an
//! existing durable differs from it (conflicts are errors, managed fields
//! are set in place), creation at a start sequence, and the dead-letter
//! subject's stream.

use super::*;
use crate::config::WatchStart;

/// Where a durable created by the runtime starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first message of the stream (a new durable).
    First,
    /// The first message after this stream sequence: a durable recreated
    /// above the ack floor it had, so acknowledged history is not replayed.
    After(u64),
}

/// The consumer configuration the file asks for.
///
/// `backoff` is not given to the server: a server-side backoff replaces
/// `ack_wait` with its first step, which would redeliver messages whose
/// handlers are still running. The runtime applies the backoff to its own
/// naks instead (`settle::Policy`), and `ack_wait` stays what the file says.
/// `max_deliver` is one more than the file's (`server_max_deliver`).
pub fn consumer_config(sub: &SubscriberConfig, start: StartAt) -> pull::Config {
    pull::Config {
        durable_name: Some(sub.durable.to_string()),
        filter_subject: sub.subject.to_string(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: match (start, &sub.watch) {
            (StartAt::First, None) => DeliverPolicy::All,
            (StartAt::First, Some(watch)) => match watch.start {
                WatchStart::New => DeliverPolicy::New,
                WatchStart::Last => DeliverPolicy::LastPerSubject,
                WatchStart::All => DeliverPolicy::All,
            },
            (StartAt::After(floor), _) => DeliverPolicy::ByStartSequence {
                start_sequence: floor + 1,
            },
        },
        ack_wait: sub.ack_wait,
        max_deliver: sub.server_max_deliver(),
        max_ack_pending: sub.max_ack_pending,
        ..Default::default()
    }
}

/// How an existing durable compares with the file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConsumerDrift {
    /// Differences that change what the handler gets: errors.
    pub conflicts: Vec<String>,
    /// Fields the runtime manages that differ, one entry each ("field: old → new").
    pub updates: Vec<String>,
    /// `existing` with the managed fields set as the runtime needs them.
    pub updated: consumer::Config,
}

/// Compares an existing durable with what `sub` needs. Conflicts are what
/// would change the messages handlers get (push delivery, filter, ack
/// policy, headers only, memory storage, priority groups, where it
/// started); the rest — ack_wait, max_deliver, backoff, max_ack_pending and
/// the pull limits that would refuse the runtime's pulls or delete an idle
/// durable — the runtime sets in place.
pub fn consumer_drift(sub: &SubscriberConfig, existing: &consumer::Config) -> ConsumerDrift {
    let want = consumer_config(sub, StartAt::First);
    let mut conflicts = Vec::new();
    if let Some(deliver) = &existing.deliver_subject {
        conflicts.push(format!("it is a push consumer (deliver_subject {deliver:?}); the runtime needs a pull consumer"));
    }
    let filters: Vec<&str> = if existing.filter_subjects.is_empty() {
        vec![existing.filter_subject.as_str()]
    } else {
        existing
            .filter_subjects
            .iter()
            .map(String::as_str)
            .collect()
    };
    if filters != [want.filter_subject.as_str()] {
        conflicts.push(format!(
            "subject: server filters {filters:?}, file says {:?}",
            want.filter_subject
        ));
    }
    if existing.ack_policy != AckPolicy::Explicit {
        conflicts.push(format!(
            "ack policy: server has {:?}, the runtime needs explicit acks",
            existing.ack_policy
        ));
    }
    let started_as_asked = match existing.deliver_policy {
        DeliverPolicy::All | DeliverPolicy::ByStartSequence { .. } => true,
        // A watch's durable is kept where it is, whatever `start` says now:
        // `start` is where a new one begins.
        DeliverPolicy::New | DeliverPolicy::LastPerSubject => sub.watch.is_some(),
        _ => false,
    };
    if !started_as_asked {
        conflicts.push(format!(
            "deliver policy: server has {:?}, the runtime delivers {}",
            existing.deliver_policy,
            match &sub.watch {
                None => "the whole stream (all)".to_string(),
                Some(w) => format!("from watch.start = {:?}", w.start.as_str()),
            }
        ));
    }
    if existing.headers_only {
        conflicts.push(
            "headers_only: the server delivers headers without payloads; handlers need the payload"
                .into(),
        );
    }
    if existing.memory_storage {
        conflicts.push("storage: the server keeps this durable's state in memory (lost on a restart); the runtime needs file storage".into());
    }
    if !existing.priority_groups.is_empty() {
        conflicts.push(format!(
            "priority groups {:?}: the runtime's pulls name no group",
            existing.priority_groups
        ));
    }

    let mut updated = existing.clone();
    let mut updates = Vec::new();
    let mut set = |field: &str, old: String, new: String| {
        if old != new {
            updates.push(format!("{field}: {old} → {new}"));
        }
    };
    set(
        "ack_wait",
        format!("{:?}", existing.ack_wait),
        format!("{:?}", want.ack_wait),
    );
    updated.ack_wait = want.ack_wait;
    set(
        "max_deliver",
        existing.max_deliver.to_string(),
        want.max_deliver.to_string(),
    );
    updated.max_deliver = want.max_deliver;
    set("backoff", format!("{:?}", existing.backoff), "[]".into());
    updated.backoff = Vec::new();
    set(
        "max_ack_pending",
        existing.max_ack_pending.to_string(),
        want.max_ack_pending.to_string(),
    );
    updated.max_ack_pending = want.max_ack_pending;
    if existing.max_batch > 0 && (existing.max_batch as usize) < sub.batch_size {
        set(
            "max_batch",
            existing.max_batch.to_string(),
            "no limit".into(),
        );
        updated.max_batch = 0;
    }
    if !existing.max_expires.is_zero() && existing.max_expires < sub.pull_timeout {
        set(
            "max_expires",
            format!("{:?}", existing.max_expires),
            "no limit".into(),
        );
        updated.max_expires = std::time::Duration::ZERO;
    }
    if !existing.inactive_threshold.is_zero() {
        set(
            "inactive_threshold",
            format!("{:?}", existing.inactive_threshold),
            "none (a durable is never removed when idle)".into(),
        );
        updated.inactive_threshold = std::time::Duration::ZERO;
    }
    ConsumerDrift {
        conflicts,
        updates,
        updated,
    }
}

/// Creates the subscriber's durable pull consumer, or verifies the existing
/// one and sets the fields the runtime manages in place (with a notice).
pub async fn ensure_consumer(
    js: &jetstream::Context,
    sub: &SubscriberConfig,
) -> Result<PullConsumer, SetupError> {
    ensure_consumer_at(js, sub, StartAt::First).await
}

/// `ensure_consumer`, creating a missing durable at `start`.
pub async fn ensure_consumer_at(
    js: &jetstream::Context,
    sub: &SubscriberConfig,
    start: StartAt,
) -> Result<PullConsumer, SetupError> {
    let stream = js.get_stream(sub.stream.as_str()).await.map_err(|e| {
        if is_stream_not_found(&e) {
            return SetupError::StreamGone {
                stream: sub.stream.to_string(),
            };
        }
        server(
            format!(
                "cannot look up stream {:?} of subscriber {:?}",
                sub.stream.as_str(),
                sub.name
            ),
            e,
            false,
        )
    })?;
    let bind_error = |e| {
        server(
            format!("cannot bind durable consumer {:?}", sub.durable.as_str()),
            e,
            false,
        )
    };
    match stream.consumer_info(sub.durable.as_str()).await {
        Ok(info) => {
            let drift = consumer_drift(sub, &info.config);
            if !drift.conflicts.is_empty() {
                return Err(SetupError::ConsumerDiffers {
                    subscriber: sub.name.clone(),
                    stream: sub.stream.to_string(),
                    durable: sub.durable.to_string(),
                    diffs: drift.conflicts,
                });
            }
            if drift.updates.is_empty() {
                return stream
                    .get_consumer(sub.durable.as_str())
                    .await
                    .map_err(bind_error);
            }
            stream.update_consumer(drift.updated).await.map_err(|e| {
                let invalid = matches!(
                    e.kind(),
                    jetstream::stream::ConsumerUpdateErrorKind::JetStream(_)
                );
                server(
                    format!(
                        "cannot update durable consumer {:?} on stream {:?} ({})",
                        sub.durable.as_str(),
                        sub.stream.as_str(),
                        drift.updates.join("; ")
                    ),
                    e,
                    invalid,
                )
            })?;
            tracing::warn!(subscriber = %sub.name, durable = %sub.durable, stream = %sub.stream, "updated the durable consumer in place: {}", drift.updates.join("; "));
            stream
                .get_consumer(sub.durable.as_str())
                .await
                .map_err(bind_error)
        }
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {
            let created = stream
                .create_consumer(consumer_config(sub, start))
                .await
                .map_err(|e| {
                    let invalid =
                        matches!(e.kind(), jetstream::stream::ConsumerErrorKind::JetStream(_));
                    server(
                        format!(
                            "cannot create durable consumer {:?} on stream {:?} for subscriber {:?}",
                            sub.durable.as_str(),
                            sub.stream.as_str(),
                            sub.name
                        ),
                        e,
                        invalid,
                    )
                })?;
            tracing::info!(subscriber = %sub.name, durable = %sub.durable, stream = %sub.stream, ?start, "created durable consumer");
            Ok(created)
        }
        Err(e) => Err(server(
            format!("cannot look up durable consumer {:?}", sub.durable.as_str()),
            e,
            false,
        )),
    }
}

/// Checks, on the server, that `sub`'s dead-letter subject is captured by a stream.
pub(super) async fn check_dead_letter(
    js: &jetstream::Context,
    config: &Config,
    sub: &SubscriberConfig,
) -> Result<(), SetupError> {
    let Some(dl) = &sub.dead_letter else {
        return Ok(());
    };
    match js.stream_by_subject(dl.as_str()).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), GetStreamByNameErrorKind::NotFound) => {
            let i = config
                .subscribers
                .iter()
                .position(|s| s.name == sub.name)
                .unwrap_or_default();
            Err(SetupError::NotCaptured {
                key: format!("subscribers[{i}] ({:?}).dead_letter", sub.name),
                subject: dl.to_string(),
                expected: None,
            })
        }
        Err(e) => Err(server(
            format!(
                "cannot look up the stream of dead-letter subject {:?}",
                dl.as_str()
            ),
            e,
            false,
        )),
    }
}
