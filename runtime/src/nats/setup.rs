//! Step 3 of the data flow: streams and durable pull consumers. Declares what
//! is missing and may be declared; verifies what exists; never silently
//! changes or ignores a stream or consumer that differs from the file.

use crate::config::{Config, Retention, Storage, StreamConfig, SubscriberConfig};
use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{GetStreamByNameErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, context::ConsumerInfoErrorKind, ErrorCode};
use std::collections::BTreeSet;

/// Why streams or consumers cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A stream that must exist does not.
    #[error("stream {stream:?} ({used_by}) is neither declared in [[streams]] nor present on the server")]
    StreamMissing {
        /// The stream.
        stream: String,
        /// Which entry needs it.
        used_by: String,
    },
    /// A stream exists with other settings than the file's.
    #[error("stream {stream:?} on the server differs from [[streams]] in the file: {}; change the file or the stream (the runtime never changes it)", diffs.join("; "))]
    StreamDiffers {
        /// The stream.
        stream: String,
        /// One entry per differing field.
        diffs: Vec<String>,
    },
    /// A durable exists with settings that change what the handler gets.
    #[error("durable consumer {durable:?} on stream {stream:?} differs from subscriber {subscriber:?}: {}; delete the consumer or change the file (the runtime changes only the fields it manages)", diffs.join("; "))]
    ConsumerDiffers {
        /// The subscriber.
        subscriber: String,
        /// The stream.
        stream: String,
        /// The durable.
        durable: String,
        /// One entry per differing field.
        diffs: Vec<String>,
    },
    /// A subject that must be stored (a dead letter, a publisher with a
    /// stream) is captured by no stream.
    #[error("{key}: no stream on the server captures {subject:?}{}; a publish there would not be stored", expected.as_ref().map(|s| format!(" (stream {s:?} does not)")).unwrap_or_default())]
    NotCaptured {
        /// The key in service.toml.
        key: String,
        /// The subject.
        subject: String,
        /// The stream the file names for it, if any.
        expected: Option<String>,
    },
    /// A stream the service needs is gone and may not be declared again.
    #[error("stream {stream:?} is gone from the server")]
    StreamGone {
        /// The stream.
        stream: String,
    },
    /// The server refused or failed a request.
    #[error("{what}: {message}")]
    Server {
        /// What was being done.
        what: String,
        /// The server's or client's answer.
        message: String,
        /// The server said the request itself is invalid (a configuration problem).
        invalid: bool,
    },
}

impl SetupError {
    /// True when the file, not the server's health, is at fault.
    pub fn is_configuration(&self) -> bool {
        match self {
            SetupError::Server { invalid, .. } => *invalid,
            _ => true,
        }
    }
}

fn server(what: impl Into<String>, e: impl std::fmt::Display, invalid: bool) -> SetupError {
    SetupError::Server {
        what: what.into(),
        message: e.to_string(),
        invalid,
    }
}

/// Whether `stream` is the input stream of a tenant's subscriber: such a
/// stream lives in the tenant's account and is set up through its
/// connection (`ensure_subscriber`), not the service's.
fn tenant_input(config: &Config, stream: &str) -> bool {
    config
        .subscribers
        .iter()
        .any(|s| s.tenant.is_some() && s.stream.as_str() == stream)
}

/// On the service's own connection: declares or verifies the `[[streams]]`
/// it serves, then checks that every stream its subscribers and the
/// publishers use exists.
pub async fn ensure_streams(js: &jetstream::Context, config: &Config) -> Result<(), SetupError> {
    for s in config
        .streams
        .iter()
        .filter(|s| !tenant_input(config, s.name.as_str()))
    {
        ensure_stream(js, s).await?;
    }
    let declared: BTreeSet<&str> = config.streams.iter().map(|s| s.name.as_str()).collect();
    let mut used: Vec<(String, String)> = config
        .subscribers
        .iter()
        .filter(|s| s.tenant.is_none())
        .map(|s| {
            (
                s.stream.to_string(),
                format!("stream of subscriber {:?}", s.name),
            )
        })
        .collect();
    used.extend(config.publishers.iter().filter_map(|p| {
        p.stream.as_ref().map(|st| {
            (
                st.to_string(),
                format!("stream of publisher {:?}", p.subject.as_str()),
            )
        })
    }));
    for (stream, used_by) in used {
        if !declared.contains(stream.as_str()) {
            stream_exists(js, &stream, used_by).await?;
        }
    }
    Ok(())
}

async fn stream_exists(
    js: &jetstream::Context,
    stream: &str,
    used_by: String,
) -> Result<(), SetupError> {
    match js.get_stream(stream).await {
        Ok(_) => Ok(()),
        Err(e) if is_stream_not_found(&e) => Err(SetupError::StreamMissing {
            stream: stream.to_string(),
            used_by,
        }),
        Err(e) => Err(server(
            format!("cannot look up stream {stream:?}"),
            e,
            false,
        )),
    }
}

/// Sets up one subscriber on `js` — its tenant's connection, or the
/// service's: a tenant's input stream is declared (or verified) when the
/// file lists it, else it must exist; its dead-letter subject must be
/// captured by a stream; its durable is created or verified.
pub async fn ensure_subscriber(
    js: &jetstream::Context,
    config: &Config,
    sub: &SubscriberConfig,
) -> Result<PullConsumer, SetupError> {
    if sub.tenant.is_some() {
        match config.streams.iter().find(|s| s.name == sub.stream) {
            Some(st) => ensure_stream(js, st).await?,
            None => {
                stream_exists(
                    js,
                    sub.stream.as_str(),
                    format!("stream of subscriber {:?}", sub.name),
                )
                .await?
            }
        }
    }
    check_dead_letter(js, config, sub).await?;
    ensure_consumer(js, sub).await
}

/// Whether a stream lookup failed because the stream does not exist.
pub fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn storage_of(s: Storage) -> StorageType {
    match s {
        Storage::File => StorageType::File,
        Storage::Memory => StorageType::Memory,
    }
}

fn retention_of(r: Retention) -> RetentionPolicy {
    match r {
        Retention::Limits => RetentionPolicy::Limits,
        Retention::Interest => RetentionPolicy::Interest,
        Retention::Workqueue => RetentionPolicy::WorkQueue,
    }
}

/// The settings of `existing` that differ from what the file asks for.
pub fn stream_diffs(want: &StreamConfig, existing: &stream::Config) -> Vec<String> {
    let mut diffs = Vec::new();
    let want_subjects: BTreeSet<&str> = want.subjects.iter().map(|s| s.as_str()).collect();
    let have_subjects: BTreeSet<&str> = existing.subjects.iter().map(String::as_str).collect();
    if !want.subjects.is_empty() && want_subjects != have_subjects {
        diffs.push(format!(
            "subjects: server has {have_subjects:?}, file says {want_subjects:?}"
        ));
    }
    if let Some(s) = want.storage {
        if storage_of(s) != existing.storage {
            diffs.push(format!(
                "storage: server has {:?}, file says {s:?}",
                existing.storage
            ));
        }
    }
    if let Some(r) = want.retention {
        if retention_of(r) != existing.retention {
            diffs.push(format!(
                "retention: server has {:?}, file says {r:?}",
                existing.retention
            ));
        }
    }
    if let Some(n) = want.replicas {
        if n != existing.num_replicas {
            diffs.push(format!(
                "replicas: server has {}, file says {n}",
                existing.num_replicas
            ));
        }
    }
    if let Some(d) = want.max_age {
        if d != existing.max_age {
            diffs.push(format!(
                "max_age: server has {:?}, file says {d:?}",
                existing.max_age
            ));
        }
    }
    if let Some(d) = want.duplicate_window {
        if d != existing.duplicate_window {
            diffs.push(format!(
                "duplicate_window: server has {:?}, file says {d:?}",
                existing.duplicate_window
            ));
        }
    }
    diffs
}

/// Declares `s` when it is missing (and may be declared), or verifies it.
pub async fn ensure_stream(js: &jetstream::Context, s: &StreamConfig) -> Result<(), SetupError> {
    match js.get_stream(s.name.as_str()).await {
        Ok(existing) => {
            let diffs = stream_diffs(s, &existing.cached_info().config);
            if !diffs.is_empty() {
                return Err(SetupError::StreamDiffers {
                    stream: s.name.to_string(),
                    diffs,
                });
            }
            Ok(())
        }
        Err(e) if is_stream_not_found(&e) => {
            if !s.declare {
                return Err(SetupError::StreamMissing {
                    stream: s.name.to_string(),
                    used_by: "[[streams]] with declare = false".into(),
                });
            }
            let mut cfg = stream::Config {
                name: s.name.to_string(),
                subjects: s.subjects.iter().map(|x| x.to_string()).collect(),
                storage: s.storage.map_or(StorageType::File, storage_of),
                retention: s.retention.map_or(RetentionPolicy::Limits, retention_of),
                num_replicas: s.replicas.unwrap_or(1),
                max_age: s.max_age.unwrap_or_default(),
                ..Default::default()
            };
            if let Some(w) = s.duplicate_window {
                cfg.duplicate_window = w;
            }
            js.create_stream(cfg).await.map_err(|e| {
                let invalid = matches!(
                    e.kind(),
                    jetstream::context::CreateStreamErrorKind::JetStream(_)
                );
                server(
                    format!("cannot create stream {:?}", s.name.as_str()),
                    e,
                    invalid,
                )
            })?;
            tracing::info!(stream = %s.name, "created stream");
            Ok(())
        }
        Err(e) => Err(server(
            format!("cannot look up stream {:?}", s.name.as_str()),
            e,
            false,
        )),
    }
}

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
        deliver_policy: match start {
            StartAt::First => DeliverPolicy::All,
            StartAt::After(floor) => DeliverPolicy::ByStartSequence {
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
    if !matches!(
        existing.deliver_policy,
        DeliverPolicy::All | DeliverPolicy::ByStartSequence { .. }
    ) {
        conflicts.push(format!(
            "deliver policy: server has {:?}, the runtime delivers the whole stream (all)",
            existing.deliver_policy
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
                server(
                    format!(
                        "cannot update durable consumer {:?} on stream {:?} ({})",
                        sub.durable.as_str(),
                        sub.stream.as_str(),
                        drift.updates.join("; ")
                    ),
                    e,
                    true,
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
async fn check_dead_letter(
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

/// Checks, on the server, that each `[[publishers]]` subject with a
/// `stream` is captured by that stream.
pub async fn check_publishers(js: &jetstream::Context, config: &Config) -> Result<(), SetupError> {
    for (i, p) in config.publishers.iter().enumerate() {
        let Some(stream) = &p.stream else { continue };
        let mut handle = js.get_stream(stream.as_str()).await.map_err(|e| {
            if is_stream_not_found(&e) {
                return SetupError::StreamMissing {
                    stream: stream.to_string(),
                    used_by: format!("stream of publisher {:?}", p.subject.as_str()),
                };
            }
            server(
                format!("cannot look up stream {:?}", stream.as_str()),
                e,
                false,
            )
        })?;
        let info = handle.info().await.map_err(|e| {
            server(
                format!("cannot look up stream {:?}", stream.as_str()),
                e,
                false,
            )
        })?;
        let captured = info
            .config
            .subjects
            .iter()
            .any(|s| crate::config::values::subject_covers(s, p.subject.as_str()));
        if !captured {
            return Err(SetupError::NotCaptured {
                key: format!("publishers[{i}] ({:?}).stream", p.subject.as_str()),
                subject: p.subject.to_string(),
                expected: Some(stream.to_string()),
            });
        }
    }
    Ok(())
}

/// Warns when a subscriber's redeliveries can outlast the duplicate window
/// of a stream its outputs go to: a redelivery after the window stores
/// those outputs again.
pub async fn warn_duplicate_windows(js: &jetstream::Context, config: &Config) {
    for sub in &config.subscribers {
        let Some(span) = sub.redelivery_span() else {
            continue;
        };
        for st in &config.streams {
            let reached = st.subjects.iter().any(|s| {
                sub.publish
                    .iter()
                    .any(|p| p.covers(s.as_str()) || s.covers(p.as_str()))
            });
            if !reached {
                continue;
            }
            let Ok(mut handle) = js.get_stream(st.name.as_str()).await else {
                continue;
            };
            let Ok(info) = handle.info().await else {
                continue;
            };
            let window = info.config.duplicate_window;
            if span > window {
                tracing::warn!(
                    subscriber = %sub.name,
                    stream = %st.name,
                    "(max_deliver - 1) × (limits.timeout + backoff) allows {} between a message's first and last handled delivery, longer than the stream's duplicate_window of {}: outputs published again after the window are stored again",
                    humantime::format_duration(span),
                    humantime::format_duration(window)
                );
            }
        }
    }
}
