//! Schedules: nats-server publishes each `[[schedules]]` entry's message
//! itself (message schedules, ADR-51) from a schedule message held on
//! `natsapp.schedules.<service>[.<tenant>].<name>` in the entry's stream, so a
//! firing happens once however many replicas run, and no timer of ours
//! exists. Start-up and every reload make the held messages what the file
//! says: a schedule is put only when it differs from the one held (a put
//! restarts an `every` and re-arms a fired `at`), an `at` already past is
//! not put (and one held that differs is removed), and the held subjects
//! of schedules gone from the file are purged — in every stream that holds
//! one of the service's, wherever the file puts them now.

use super::*;
use crate::config::{is_token, schedule_subject, ScheduleConfig, ScheduleWhen};
use async_nats::HeaderMap;
use std::collections::BTreeMap;

/// Headers of a schedule message nats-server reads.
mod header {
    pub const SCHEDULE: &str = "Nats-Schedule";
    pub const TARGET: &str = "Nats-Schedule-Target";
    /// Makes the put conditional: two replicas starting at once put a
    /// changed schedule once.
    pub const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
    /// Makes the put land in the schedule's stream or nowhere.
    pub const EXPECTED_STREAM: &str = "Nats-Expected-Stream";
}

/// The headers a schedule's held message carries.
fn wanted_headers(s: &ScheduleConfig) -> BTreeMap<String, String> {
    let mut h = s.headers.clone();
    h.insert(header::SCHEDULE.into(), s.when.header());
    h.insert(header::TARGET.into(), s.subject.to_string());
    h
}

/// Whether `held` is the message `s` wants: the same schedule, target,
/// headers and payload (the server's `Nats-Rollup` and the put's
/// `Nats-Expected-*` condition aside).
fn same(s: &ScheduleConfig, held: &jetstream::message::StreamMessage) -> bool {
    let held_headers: BTreeMap<String, Vec<String>> = held
        .headers
        .iter()
        .filter(|(name, _)| {
            let name = AsRef::<str>::as_ref(*name);
            name != "Nats-Rollup" && !name.starts_with("Nats-Expected-")
        })
        .map(|(name, values)| {
            (
                name.to_string(),
                values.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect();
    let wanted: BTreeMap<String, Vec<String>> = wanted_headers(s)
        .into_iter()
        .map(|(name, value)| (name, vec![value]))
        .collect();
    held_headers == wanted && held.payload.as_ref() == s.payload.as_bytes()
}

/// Whether `s` is an `at` already past.
fn past(s: &ScheduleConfig) -> bool {
    match &s.when {
        ScheduleWhen::At(at) => async_nats::datetime::parse_rfc3339(at)
            .is_ok_and(|at| at <= async_nats::datetime::DateTime::now_utc()),
        _ => false,
    }
}

/// What a sync changed on the server, each schedule as `<name> in
/// <stream>` (and `of tenant "<tenant>"` for a tenant's).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScheduleSync {
    /// The schedules put, new or changed.
    pub put: Vec<String>,
    /// The schedules removed: gone from the file (or moved to another
    /// stream), and `at`s past their time whose held message differed.
    pub removed: Vec<String>,
}

impl ScheduleSync {
    /// Adds what another account's sync changed.
    pub fn extend(&mut self, other: ScheduleSync) {
        self.put.extend(other.put);
        self.removed.extend(other.removed);
    }
}

/// On the connection of `tenant` (`None`: the service's own): makes the
/// schedule messages held in each stream of that account that holds (or
/// held) the service's schedules what the file says of that account's
/// schedules. A tenant's schedule's stream, when the file declares it, is
/// declared in the tenant's account first.
pub async fn sync_schedules(
    js: &jetstream::Context,
    config: &Config,
    tenant: Option<&str>,
) -> Result<ScheduleSync, SetupError> {
    // Names that are not one token never held a schedule (validation
    // refuses them), and as a filter they would reach others' subjects.
    if !is_token(&config.service.name) || tenant.is_some_and(|t| !is_token(t)) {
        return Ok(ScheduleSync::default());
    }
    let owner = tenant.map(str::to_string);
    let theirs: Vec<&ScheduleConfig> = (config.schedules.iter())
        .filter(|s| s.tenant == owner)
        .collect();
    if owner.is_some() {
        for s in &theirs {
            if let Some(st) = config.stream_for(s.stream.as_str(), &owner) {
                ensure_stream(js, st).await?;
            }
        }
    }
    let whose = tenant.map_or(String::new(), |t| format!(" of tenant {t:?}"));
    let mut sync = ScheduleSync::default();
    // This owner's held subjects only: the service's and each tenant's
    // are apart even in one account.
    let held_by_this_service = schedule_subject(&config.service.name, tenant, "*");
    // Where the file puts schedules now, and every stream that may hold
    // one put before: moved, or its stream entry or flag gone from the file.
    let mut streams: BTreeSet<String> = theirs.iter().map(|s| s.stream.to_string()).collect();
    streams.extend(streams_capturing(js, &held_by_this_service).await?);
    for name in &streams {
        let name = name.as_str();
        let schedules: Vec<&ScheduleConfig> = (theirs.iter().copied())
            .filter(|s| s.stream.as_str() == name)
            .collect();
        let stream = match js.get_stream(name).await {
            Ok(stream) => stream,
            Err(e) if is_stream_not_found(&e) => match schedules.first() {
                Some(s) => {
                    return Err(SetupError::StreamMissing {
                        stream: name.to_string(),
                        used_by: format!("stream of schedule {:?}", s.name),
                    })
                }
                None => continue,
            },
            Err(e) => return Err(server(format!("cannot look up stream {name:?}"), e, false)),
        };
        if let Some(s) = schedules.first() {
            if !stream.cached_info().config.allow_message_schedules {
                return Err(SetupError::SchedulesNotAllowed {
                    schedule: s.name.clone(),
                    stream: name.to_string(),
                });
            }
        }
        for s in &schedules {
            match put_if_changed(js, &stream, s).await? {
                Held::Unchanged => {}
                Held::Put => sync.put.push(format!("{} in {name}{whose}", s.name)),
                Held::Removed => sync.removed.push(format!("{} in {name}{whose}", s.name)),
            }
        }
        // The held subjects of schedules gone from the file.
        let listing = |e: jetstream::stream::InfoError| {
            server(
                format!("cannot list the schedules held in {name:?}"),
                e,
                false,
            )
        };
        let held: Vec<(String, usize)> = {
            use futures::TryStreamExt;
            let subjects = stream
                .info_with_subjects(&held_by_this_service)
                .await
                .map_err(listing)?;
            subjects.try_collect().await.map_err(listing)?
        };
        for (subject, _) in held {
            if schedules.iter().any(|s| s.held_on == subject) {
                continue;
            }
            stream.purge().filter(subject.as_str()).await.map_err(|e| {
                server(
                    format!("cannot remove the schedule held on {subject:?} in {name:?}"),
                    e,
                    false,
                )
            })?;
            tracing::info!(tenant, stream = name, held_on = %subject, "removed a schedule no longer in the file");
            let schedule = subject.rsplit('.').next().unwrap_or(&subject);
            sync.removed.push(format!("{schedule} in {name}{whose}"));
        }
    }
    Ok(sync)
}

/// What [`put_if_changed`] did.
enum Held {
    /// The held message is the file's (or another replica put it first).
    Unchanged,
    /// The file's was put.
    Put,
    /// An `at` past its time: the differing one held was removed.
    Removed,
}

/// The streams whose subjects capture `filter`.
async fn streams_capturing(
    js: &jetstream::Context,
    filter: &str,
) -> Result<Vec<String>, SetupError> {
    #[derive(serde::Deserialize)]
    struct Page {
        #[serde(default)]
        streams: Option<Vec<String>>,
        total: usize,
    }
    let listing = |e: Box<dyn std::error::Error + Send + Sync>| {
        server(
            format!("cannot list the streams that capture {filter:?}"),
            e,
            false,
        )
    };
    let mut names = Vec::new();
    loop {
        let page: jetstream::response::Response<Page> = js
            .request(
                "STREAM.NAMES",
                &serde_json::json!({ "subject": filter, "offset": names.len() }),
            )
            .await
            .map_err(|e| listing(Box::new(e)))?;
        let page = match page {
            jetstream::response::Response::Ok(page) => page,
            jetstream::response::Response::Err { error } => return Err(listing(Box::new(error))),
        };
        let got = page.streams.unwrap_or_default();
        let done = got.is_empty() || names.len() + got.len() >= page.total;
        names.extend(got);
        if done {
            return Ok(names);
        }
    }
}

/// Puts `s`'s schedule message unless the one held is the same, or `s` is
/// an `at` already past (then one held that differs is removed: it would
/// fire at another time than the file's); conditional on what was held,
/// so that of replicas starting at once one puts it.
async fn put_if_changed(
    js: &jetstream::Context,
    stream: &stream::Stream,
    s: &ScheduleConfig,
) -> Result<Held, SetupError> {
    let held = match stream.get_last_raw_message_by_subject(&s.held_on).await {
        Ok(held) if same(s, &held) => return Ok(Held::Unchanged),
        Ok(held) => Some(held.sequence),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => None,
        Err(e) => {
            return Err(server(
                format!("cannot read schedule {:?} held on {:?}", s.name, s.held_on),
                e,
                false,
            ))
        }
    };
    if past(s) {
        tracing::info!(schedule = %s.name, at = %s.when.header(), "a schedule whose time has passed is not put");
        if held.is_some() {
            stream
                .purge()
                .filter(s.held_on.as_str())
                .await
                .map_err(|e| server(format!("cannot remove schedule {:?}", s.name), e, false))?;
            return Ok(Held::Removed);
        }
        return Ok(Held::Unchanged);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in wanted_headers(s) {
        headers.insert(name.as_str(), value.as_str());
    }
    headers.insert(
        header::EXPECTED_LAST_SUBJECT_SEQUENCE,
        held.unwrap_or(0).to_string().as_str(),
    );
    headers.insert(header::EXPECTED_STREAM, s.stream.as_str());
    let put = js
        .publish_with_headers(s.held_on.clone(), headers, s.payload.clone().into())
        .await
        .map_err(|e| server(format!("cannot put schedule {:?}", s.name), e, false))?
        .await;
    match put {
        Ok(_) => {
            tracing::info!(schedule = %s.name, when = %s.when.header(), subject = %s.subject, "schedule put");
            Ok(Held::Put)
        }
        // Another replica put it first.
        Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
            Ok(Held::Unchanged)
        }
        Err(e) => {
            // The server refusing the schedule is the file's fault; a
            // timeout or a lost connection is not.
            let invalid = matches!(
                e.kind(),
                jetstream::context::PublishErrorKind::Other
                    | jetstream::context::PublishErrorKind::StreamNotFound
            );
            Err(server(
                format!(
                    "nats-server refused schedule {:?} ({})",
                    s.name,
                    s.when.header()
                ),
                e,
                invalid,
            ))
        }
    }
}
