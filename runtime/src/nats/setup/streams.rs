//! Streams: declared when missing (and the file may declare them),
//! verified when present, checked to capture what must be stored; and the
//! warning when redeliveries can outlast an output stream's duplicate window.

use super::*;

/// On the service's own connection: declares or verifies the `[[streams]]`
/// it serves (not a tenant's, which live in its account), then checks
/// that every stream its subscribers and the publishers use exists.
pub async fn ensure_streams(js: &jetstream::Context, config: &Config) -> Result<(), SetupError> {
    let platform = || config.streams.iter().filter(|s| s.tenant.is_none());
    for s in platform().filter(|s| !tenant_input(config, s.name.as_str())) {
        ensure_stream(js, s).await?;
    }
    let declared: BTreeSet<&str> = platform().map(|s| s.name.as_str()).collect();
    let mut used: Vec<(String, String)> = config
        .subscribers
        .iter()
        // A watch's stream is its bucket's, opened with its buckets.
        .filter(|s| s.tenant.is_none() && s.watch.is_none())
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

pub(super) async fn stream_exists(
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

pub(super) fn storage_of(s: Storage) -> StorageType {
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

/// Adds to `diffs` where `existing` keeps its messages differently from
/// the file's `storage` and `replicas`, when the file gives them.
pub(super) fn placement_diffs(
    storage: Option<Storage>,
    replicas: Option<usize>,
    existing: &stream::Config,
    diffs: &mut Vec<String>,
) {
    if let Some(s) = storage {
        if storage_of(s) != existing.storage {
            diffs.push(format!(
                "storage: server has {:?}, file says {s:?}",
                existing.storage
            ));
        }
    }
    if let Some(n) = replicas {
        if n != existing.num_replicas {
            diffs.push(format!(
                "replicas: server has {}, file says {n}",
                existing.num_replicas
            ));
        }
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
    placement_diffs(want.storage, want.replicas, existing, &mut diffs);
    if let Some(r) = want.retention {
        if retention_of(r) != existing.retention {
            diffs.push(format!(
                "retention: server has {:?}, file says {r:?}",
                existing.retention
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
    if want.allow_schedules && !existing.allow_message_schedules {
        diffs.push("allow_schedules: the server's stream does not allow message schedules".into());
    }
    if want.allow_ttl && !existing.allow_message_ttl {
        diffs.push("allow_ttl: the server's stream does not allow per-message TTL".into());
    }
    if want.atomic && !existing.allow_atomic_publish {
        diffs.push(
            "allow_atomic: the server's stream does not allow atomic publish, and a subscriber with outputs.mode = \"atomic\" may publish to it".into(),
        );
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
                allow_atomic_publish: s.atomic,
                allow_message_schedules: s.allow_schedules,
                allow_message_ttl: s.allow_ttl,
                ..Default::default()
            };
            if let Some(w) = s.duplicate_window {
                cfg.duplicate_window = w;
            }
            let created = js.create_stream(cfg).await.map_err(|e| {
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
            if s.atomic && !created.cached_info().config.allow_atomic_publish {
                // A server before 2.12 drops the setting it does not know.
                return Err(SetupError::AtomicUnsupported {
                    stream: s.name.to_string(),
                });
            }
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
        let atomic_writer = config
            .subscribers
            .iter()
            .find(|s| s.writes_atomically_to(std::slice::from_ref(&p.subject)));
        if let (Some(sub), false) = (atomic_writer, info.config.allow_atomic_publish) {
            return Err(SetupError::NotAtomic {
                stream: stream.to_string(),
                subscriber: sub.name.clone(),
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
        // The service's connection sees the platform's streams only.
        for st in config.streams.iter().filter(|st| st.tenant.is_none()) {
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
