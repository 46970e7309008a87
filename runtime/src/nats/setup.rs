//! Step 3 of the data flow: streams and durable pull consumers. Declares what
//! is missing and may be declared; verifies what exists; never silently
//! changes or ignores a stream or consumer that differs from the file.

use crate::config::{Config, Retention, Storage, StreamConfig, SubscriberConfig};
use async_nats::jetstream::consumer::{self, pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::GetStreamErrorKind;
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
    /// A durable exists with other settings than the file's.
    #[error("durable consumer {durable:?} on stream {stream:?} differs from subscriber {subscriber:?}: {}; delete the consumer or change the file (the runtime never changes it)", diffs.join("; "))]
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

/// Declares or verifies every stream the file names, then checks that every
/// stream a publisher or subscriber uses exists.
pub async fn ensure_streams(js: &jetstream::Context, config: &Config) -> Result<(), SetupError> {
    for s in &config.streams {
        ensure_stream(js, s).await?;
    }
    let declared: BTreeSet<&str> = config.streams.iter().map(|s| s.name.as_str()).collect();
    let mut used: Vec<(String, String)> = config
        .subscribers
        .iter()
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
        if declared.contains(stream.as_str()) {
            continue;
        }
        match js.get_stream(&stream).await {
            Ok(_) => {}
            Err(e) if is_stream_not_found(&e) => {
                return Err(SetupError::StreamMissing { stream, used_by })
            }
            Err(e) => {
                return Err(server(
                    format!("cannot look up stream {stream:?}"),
                    e,
                    false,
                ))
            }
        }
    }
    Ok(())
}

fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
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

async fn ensure_stream(js: &jetstream::Context, s: &StreamConfig) -> Result<(), SetupError> {
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

/// The consumer configuration the file asks for.
///
/// `backoff` is not given to the server: a server-side backoff replaces
/// `ack_wait` with its first step, which would redeliver messages whose
/// handlers are still running. The runtime applies the backoff to its own
/// naks instead (`nats::ack::Policy`), and `ack_wait` stays what the file says.
pub fn consumer_config(sub: &SubscriberConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(sub.durable.to_string()),
        filter_subject: sub.subject.to_string(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: sub.ack_wait,
        max_deliver: sub.max_deliver.map_or(-1, i64::from),
        max_ack_pending: sub.max_ack_pending,
        ..Default::default()
    }
}

/// The settings of `existing` that differ from `want`.
pub fn consumer_diffs(want: &pull::Config, existing: &consumer::Config) -> Vec<String> {
    let mut diffs = Vec::new();
    if let Some(deliver) = &existing.deliver_subject {
        diffs.push(format!("it is a push consumer (deliver_subject {deliver:?}); the runtime needs a pull consumer"));
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
        diffs.push(format!(
            "subject: server filters {filters:?}, file says {:?}",
            want.filter_subject
        ));
    }
    if existing.ack_policy != AckPolicy::Explicit {
        diffs.push(format!(
            "ack policy: server has {:?}, the runtime needs explicit acks",
            existing.ack_policy
        ));
    }
    if existing.ack_wait != want.ack_wait {
        diffs.push(format!(
            "ack_wait: server has {:?}, file says {:?}",
            existing.ack_wait, want.ack_wait
        ));
    }
    if existing.max_deliver != want.max_deliver {
        diffs.push(format!(
            "max_deliver: server has {}, file says {}",
            existing.max_deliver, want.max_deliver
        ));
    }
    if existing.backoff != want.backoff {
        diffs.push(format!(
            "backoff: server has {:?}, file says {:?}",
            existing.backoff, want.backoff
        ));
    }
    if existing.max_ack_pending != want.max_ack_pending {
        diffs.push(format!(
            "max_ack_pending: server has {}, file says {}",
            existing.max_ack_pending, want.max_ack_pending
        ));
    }
    diffs
}

/// Creates the subscriber's durable pull consumer, or verifies the existing one.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    sub: &SubscriberConfig,
) -> Result<PullConsumer, SetupError> {
    let stream = js.get_stream(sub.stream.as_str()).await.map_err(|e| {
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
    let want = consumer_config(sub);
    match stream.consumer_info(sub.durable.as_str()).await {
        Ok(info) => {
            let diffs = consumer_diffs(&want, &info.config);
            if !diffs.is_empty() {
                return Err(SetupError::ConsumerDiffers {
                    subscriber: sub.name.clone(),
                    stream: sub.stream.to_string(),
                    durable: sub.durable.to_string(),
                    diffs,
                });
            }
            stream
                .get_consumer(sub.durable.as_str())
                .await
                .map_err(|e| {
                    server(
                        format!("cannot bind durable consumer {:?}", sub.durable.as_str()),
                        e,
                        false,
                    )
                })
        }
        Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => {
            let created = stream.create_consumer(want).await.map_err(|e| {
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
            tracing::info!(subscriber = %sub.name, durable = %sub.durable, stream = %sub.stream, "created durable consumer");
            Ok(created)
        }
        Err(e) => Err(server(
            format!("cannot look up durable consumer {:?}", sub.durable.as_str()),
            e,
            false,
        )),
    }
}
