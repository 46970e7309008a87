//! Putting a subscriber's dead letters back on their original subject once
//! the cause is fixed (`natsapp-wasm redrive`), losing and duplicating
//! nothing when it is stopped at any point.
//!
//! Each dead letter is moved on its own, in the dead-letter stream's order:
//! published to its original subject with its original headers, a
//! `Natsapp-Redriven` count, `Natsapp-Redriven-From` (the dead letter's
//! stream and sequence) and a message id made of the same, so that the
//! original stream refuses a second copy within its duplicate window; then,
//! once the PubAck is in, deleted from the dead-letter stream. The
//! progress is a durable consumer of the dead-letter stream's, one message
//! at a time, acknowledged after the delete: what JetStream keeps for a
//! redrive that was stopped says which dead letter was in flight. A
//! redrive that finds such a consumer resumes: it checks the original
//! stream for a copy of that dead letter (the duplicate window alone
//! cannot tell once it has passed) before moving it again.

use crate::config::{Config, SubscriberConfig};
use crate::settle::dead_letter::headers as dead;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

/// Headers a redriven message carries besides the original's.
pub mod headers {
    /// How many times the message has been redriven (a dead-letter copy
    /// keeps it, so a second redrive counts on).
    pub use crate::settle::dead_letter::headers::REDRIVEN;
    /// The dead letter it was redriven from: `<stream>:<sequence>`.
    pub const REDRIVEN_FROM: &str = "Natsapp-Redriven-From";
}

/// Which dead letters to move.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// At most this many.
    pub limit: Option<usize>,
    /// Only those whose reason contains this.
    pub reason: Option<String>,
}

/// One dead letter of the subscriber's, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream.
    pub sequence: u64,
    /// The subject it was first published to.
    pub subject: String,
    /// The stream and sequence it was read from.
    pub from: String,
    /// Why it was given up (`Natsapp-Reason`).
    pub reason: String,
    /// `Natsapp-Cause`.
    pub cause: String,
    /// Set when it cannot be moved: what the copy left out.
    pub unmovable: Option<String>,
}

impl std::fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dead letter {} ({} from {}; {}: {})",
            self.sequence, self.subject, self.from, self.cause, self.reason
        )
    }
}

/// What happened to one dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Moved {
    /// Published to its subject (in `stream` at `sequence`) and deleted.
    Redriven {
        /// The stream that took it.
        stream: String,
        /// Its sequence there.
        sequence: u64,
    },
    /// A stopped redrive had published it already: only deleted now.
    AlreadyRedriven,
    /// Left where it is: it lacks its payload or headers.
    Skipped(String),
}

/// Why a redrive could not go on. What was moved stays moved; what was
/// not stays a dead letter.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// The subscriber is not in the file.
    #[error("{file} has no subscriber {name:?}")]
    NoSubscriber {
        /// The file.
        file: String,
        /// The name asked for.
        name: String,
    },
    /// The subscriber watches a bucket: its dead letters are changes.
    #[error("subscriber {name:?} watches bucket {bucket:?}: putting its dead letters back would write old values and deletes into the bucket over newer ones; read them from the dead-letter stream and put what still holds")]
    Watch {
        /// The subscriber.
        name: String,
        /// The bucket.
        bucket: String,
    },
    /// The subscriber has no dead letters.
    #[error("subscriber {name:?} has no dead_letter subject: it keeps no dead letters")]
    NoDeadLetter {
        /// The subscriber.
        name: String,
    },
    /// A JetStream request failed.
    #[error("cannot {doing}")]
    Nats {
        /// What was being done.
        doing: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The dead-letter stream removes what a consumer acknowledges.
    #[error("stream {stream} keeps messages only until they are acknowledged ({retention:?} retention): the redrive's progress would remove the dead letters it leaves; give dead letters a stream with limits retention")]
    Retention {
        /// The dead-letter stream.
        stream: String,
        /// Its retention.
        retention: stream::RetentionPolicy,
    },
    /// A stopped redrive's dead letter whose copy cannot be looked for.
    #[error("{letter} was in flight when a redrive stopped, and stream {stream} removes what its consumers acknowledge: whether its copy was stored cannot be told. Look for a message with Natsapp-Redriven-From {from} in {stream}; to move it again anyway, run with --force")]
    Uncertain {
        /// The dead letter.
        letter: Box<DeadLetter>,
        /// The stream of its original subject.
        stream: String,
        /// Its `Natsapp-Redriven-From`.
        from: String,
    },
    /// The dead-letter stream does not let messages be deleted.
    #[error("stream {stream} denies deleting messages (deny_delete): a redrive could not remove what it moves")]
    DenyDelete {
        /// The dead-letter stream.
        stream: String,
    },
}

/// Makes a NATS failure while `doing` a [`RedriveError`].
fn nats<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    doing: impl Into<String>,
) -> impl FnOnce(E) -> RedriveError {
    let doing = doing.into();
    move |e| RedriveError::Nats {
        doing,
        source: e.into(),
    }
}

/// The subscriber `name` of `config`, with its dead-letter subject.
pub fn subscriber<'c>(
    config: &'c Config,
    name: &str,
) -> Result<(&'c SubscriberConfig, String), RedriveError> {
    let sub = config
        .subscribers
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| RedriveError::NoSubscriber {
            file: config.path.display().to_string(),
            name: name.to_string(),
        })?;
    if let Some(watch) = &sub.watch {
        return Err(RedriveError::Watch {
            name: name.to_string(),
            bucket: watch.bucket.clone(),
        });
    }
    let subject = sub
        .dead_letter
        .as_ref()
        .ok_or_else(|| RedriveError::NoDeadLetter {
            name: name.to_string(),
        })?;
    Ok((sub, subject.to_string()))
}

/// The dead letters of subscriber `name` on `subject`, as a redrive with
/// `selection` would meet them: read, not moved (`--dry-run`).
pub async fn list(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
    selection: &Selection,
) -> Result<Vec<DeadLetter>, RedriveError> {
    if selection.limit == Some(0) {
        return Ok(Vec::new());
    }
    let stream = dead_letter_stream(js, subject).await?;
    let mut found = Vec::new();
    let doing = format!("read the dead letters on {subject}");
    scan(
        &stream,
        subject,
        consumer::DeliverPolicy::All,
        &doing,
        |sequence, headers| {
            if let Some(letter) = selected(name, selection, sequence, headers) {
                found.push(letter);
            }
            let movable = found.iter().filter(|l| l.unmovable.is_none()).count();
            selection.limit.is_none_or(|limit| movable < limit)
        },
    )
    .await?;
    Ok(found)
}

/// Reads the headers of the messages of `stream` on `subject` from
/// `start` on, in order, up to the last the stream held when called,
/// handing each to `each` until it returns false.
async fn scan(
    stream: &stream::Stream,
    subject: &str,
    start: consumer::DeliverPolicy,
    doing: &str,
    mut each: impl FnMut(u64, &HeaderMap) -> bool,
) -> Result<(), RedriveError> {
    let last = stream
        .get_info()
        .await
        .map_err(nats(doing))?
        .state
        .last_sequence;
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.to_string(),
            headers_only: true,
            deliver_policy: start,
            ..Default::default()
        })
        .await
        .map_err(nats(doing))?;
    if reader.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = reader.messages().await.map_err(nats(doing))?;
    loop {
        // Messages removed after the reader was made (acknowledged on an
        // interest stream, aged out) never come: nothing for a while is
        // the end.
        let Ok(next) = tokio::time::timeout(SCAN_IDLE, messages.next()).await else {
            return Ok(());
        };
        let Some(msg) = next else { return Ok(()) };
        let msg = msg.map_err(nats(doing))?;
        let info = msg.info().map_err(nats(doing))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let headers = msg.headers.clone().unwrap_or_default();
        if !each(sequence, &headers) || pending == 0 || sequence >= last {
            return Ok(());
        }
    }
}

/// How long a scan waits for its next message before taking the stream
/// as read to its end.
const SCAN_IDLE: Duration = Duration::from_secs(5);

/// The dead letter in `headers` (at `sequence`) when it is `name`'s and
/// `selection` takes it.
fn selected(
    name: &str,
    selection: &Selection,
    sequence: u64,
    headers: &HeaderMap,
) -> Option<DeadLetter> {
    let get = |h: &str| headers.get(h).map(|v| v.as_str().to_string());
    if get(dead::SUBSCRIBER).as_deref() != Some(name) {
        return None;
    }
    let reason = get(dead::REASON).unwrap_or_default();
    if selection
        .reason
        .as_ref()
        .is_some_and(|wanted| !reason.contains(wanted.as_str()))
    {
        return None;
    }
    Some(DeadLetter {
        sequence,
        subject: get(dead::SUBJECT).unwrap_or_default(),
        from: format!(
            "{} {}",
            get(dead::STREAM).unwrap_or_default(),
            get(dead::SEQUENCE).unwrap_or_default()
        ),
        reason,
        cause: get(dead::CAUSE).unwrap_or_default(),
        unmovable: get(dead::OMITTED).or_else(|| {
            get(dead::SUBJECT)
                .is_none()
                .then(|| "it names no original subject".to_string())
        }),
    })
}

async fn dead_letter_stream(
    js: &jetstream::Context,
    subject: &str,
) -> Result<stream::Stream, RedriveError> {
    let name = js.stream_by_subject(subject).await.map_err(nats(format!(
        "find the stream of dead-letter subject {subject}"
    )))?;
    js.get_stream(&name)
        .await
        .map_err(nats(format!("open dead-letter stream {name}")))
}

/// The redrive's progress: a durable consumer of the dead-letter stream,
/// named for the subscriber's stream and durable (unique together).
fn progress_name(sub: &SubscriberConfig) -> String {
    format!("natsapp-redrive-{}-{}", sub.stream, sub.durable)
}

/// Moves the dead letters of subscriber `sub` on `subject` that
/// `selection` takes back to their original subjects, telling `moved`
/// each one as it goes; how many it moved.
pub async fn redrive(
    js: &jetstream::Context,
    sub: &SubscriberConfig,
    subject: &str,
    selection: &Selection,
    force: bool,
    mut moved: impl FnMut(&DeadLetter, &Moved),
    mut warn: impl FnMut(&str),
) -> Result<usize, RedriveError> {
    let mut stream = dead_letter_stream(js, subject).await?;
    let info = stream
        .info()
        .await
        .map_err(nats("read the dead-letter stream's configuration"))?;
    let stream_name = info.config.name.clone();
    if info.config.deny_delete {
        return Err(RedriveError::DenyDelete {
            stream: stream_name,
        });
    }
    if info.config.retention != stream::RetentionPolicy::Limits {
        return Err(RedriveError::Retention {
            stream: stream_name,
            retention: info.config.retention,
        });
    }
    // Dead letters that arrive while this runs (a copy that failed again)
    // wait for the next redrive: this one ends.
    let end = info.state.last_sequence;
    let progress = progress_name(sub);

    // A redrive that was stopped left its consumer: what it delivered and
    // did not acknowledge was in flight — perhaps published, not deleted.
    // That is settled before the consumer, the only record of it, goes.
    match stream.consumer_info(&progress).await {
        Ok(previous) => {
            let stopped = Stopped {
                stream: &stream,
                name: &stream_name,
                subject,
                previous: &previous,
            };
            stopped
                .settle(js, sub, force, &mut moved, &mut warn)
                .await?;
            stream
                .delete_consumer(&progress)
                .await
                .map_err(nats(format!("remove consumer {progress}")))?;
        }
        Err(e) if e.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound => {}
        Err(e) => return Err(nats(format!("read consumer {progress}"))(e)),
    }
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(progress.clone()),
            description: Some(format!("natsapp-wasm redrive of {}", sub.name)),
            filter_subject: subject.to_string(),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 1,
            ack_wait: Duration::from_secs(60),
            metadata: HashMap::from([("natsapp.subscriber".to_string(), sub.name.clone())]),
            ..Default::default()
        })
        .await
        .map_err(nats(format!("create consumer {progress} on {stream_name}")))?;

    let reading = || format!("read the dead letters on {subject}");
    let mut count = 0;
    while selection.limit.is_none_or(|limit| count < limit) {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .messages()
            .await
            .map_err(nats(reading()))?;
        let Some(msg) = batch.next().await else { break };
        let msg = msg.map_err(nats(reading()))?;
        let (sequence, stored) = {
            let info = msg.info().map_err(nats(reading()))?;
            (info.stream_sequence, info.published)
        };
        if sequence > end {
            break;
        }
        let headers = msg.headers.clone().unwrap_or_default();
        let Some(letter) = selected(&sub.name, selection, sequence, &headers) else {
            acknowledge(&msg).await?;
            continue;
        };
        if let Some(why) = &letter.unmovable {
            moved(&letter, &Moved::Skipped(why.clone()));
            acknowledge(&msg).await?;
            continue;
        }
        let copy = redriven_headers(&stream_name, &letter, stored, &headers);
        let outcome = publish(js, &letter, copy, msg.payload.clone()).await?;
        delete(&stream, &stream_name, sequence).await?;
        acknowledge(&msg).await?;
        moved(&letter, &outcome);
        count += 1;
    }
    stream
        .delete_consumer(&progress)
        .await
        .map_err(nats(format!("remove consumer {progress}")))?;
    Ok(count)
}

/// What a stopped redrive left: its progress consumer.
struct Stopped<'a> {
    stream: &'a stream::Stream,
    name: &'a str,
    subject: &'a str,
    previous: &'a consumer::Info,
}

impl Stopped<'_> {
    /// Finishes the move of each dead letter the stopped redrive had in
    /// flight whose copy is stored; leaves those whose copy is not, to be
    /// moved as any other.
    async fn settle(
        &self,
        js: &jetstream::Context,
        sub: &SubscriberConfig,
        force: bool,
        moved: &mut impl FnMut(&DeadLetter, &Moved),
        warn: &mut impl FnMut(&str),
    ) -> Result<(), RedriveError> {
        let range =
            self.previous.ack_floor.stream_sequence + 1..=self.previous.delivered.stream_sequence;
        warn(&if range.is_empty() {
            format!(
                "resuming a redrive of {} that was stopped; no dead letter was in flight",
                sub.name
            )
        } else {
            format!(
                "resuming a redrive of {} that was stopped; dead letters {}..={} were in flight: their copies are looked for first",
                sub.name,
                range.start(),
                range.end()
            )
        });
        for sequence in range {
            let msg = match self.stream.get_raw_message(sequence).await {
                Ok(msg) => msg,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => continue,
                Err(e) => {
                    return Err(nats(format!(
                        "read dead letter {sequence} of {}",
                        self.name
                    ))(e))
                }
            };
            if msg.subject.as_str() != self.subject {
                continue;
            }
            let Some(letter) = selected(&sub.name, &Selection::default(), sequence, &msg.headers)
            else {
                continue;
            };
            if letter.unmovable.is_some() {
                continue;
            }
            let outcome = match self.copy_stored(js, &letter, msg.time).await {
                Ok(Some(true)) => Moved::AlreadyRedriven,
                // No copy: it moves as any other.
                Ok(Some(false)) => continue,
                // Within the duplicate window the message id decides.
                Ok(None) => {
                    let copy = redriven_headers(self.name, &letter, msg.time, &msg.headers);
                    publish(js, &letter, copy, msg.payload.clone()).await?
                }
                Err(RedriveError::Uncertain { letter, stream, .. }) if force => {
                    warn(&format!(
                        "--force: {letter} moves again although a copy may be stored in {stream}"
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            delete(self.stream, self.name, sequence).await?;
            moved(&letter, &outcome);
        }
        Ok(())
    }

    /// Whether `letter`'s copy is stored: `Some` when its stream can tell
    /// (it keeps messages to its limits), `None` when the message id can
    /// (the stop was within the stream's duplicate window).
    async fn copy_stored(
        &self,
        js: &jetstream::Context,
        letter: &DeadLetter,
        since: async_nats::datetime::DateTime,
    ) -> Result<Option<bool>, RedriveError> {
        let name = js
            .stream_by_subject(&letter.subject)
            .await
            .map_err(nats(format!("find the stream of {}", letter.subject)))?;
        let mut stream = js
            .get_stream(&name)
            .await
            .map_err(nats(format!("open stream {name}")))?;
        let config = stream
            .info()
            .await
            .map_err(nats(format!("read stream {name}")))?
            .config
            .clone();
        let from = format!("{}:{}", self.name, letter.sequence);
        if config.retention == stream::RetentionPolicy::Limits {
            // Server clocks of two stream leaders: a second's margin.
            let start_time = since - Duration::from_secs(1);
            let mut found = false;
            scan(
                &stream,
                &letter.subject,
                consumer::DeliverPolicy::ByStartTime { start_time },
                &format!("read stream {name}"),
                |_, copy| {
                    found = copy
                        .get(headers::REDRIVEN_FROM)
                        .is_some_and(|v| v.as_str() == from);
                    !found
                },
            )
            .await?;
            return Ok(Some(found));
        }
        let last_active = self
            .previous
            .delivered
            .last_active
            .unwrap_or(self.previous.created);
        let stopped_for = async_nats::datetime::DateTime::now_utc() - last_active;
        if stopped_for < config.duplicate_window {
            return Ok(None);
        }
        Err(RedriveError::Uncertain {
            letter: Box::new(letter.clone()),
            stream: name,
            from,
        })
    }
}

/// The original's headers, the redrive count and the dead letter's name;
/// its message id (the dead letter's stream, sequence and time stored)
/// keeps a second copy out within the duplicate window.
fn redriven_headers(
    dead_letters: &str,
    letter: &DeadLetter,
    stored: async_nats::datetime::DateTime,
    copy: &HeaderMap,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in copy.iter() {
        let n: &str = name.as_ref();
        if n.starts_with("Natsapp-") || n.starts_with("Nats-") {
            continue;
        }
        for v in values {
            out.append(name.clone(), v.clone());
        }
    }
    let times = copy
        .get(headers::REDRIVEN)
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let from = format!("{dead_letters}:{}", letter.sequence);
    let id = format!("natsapp-redrive:{from}:{}", stored.unix_timestamp_nanos());
    out.insert(headers::REDRIVEN, times.to_string().as_str());
    out.insert(headers::REDRIVEN_FROM, from.as_str());
    out.insert("Nats-Msg-Id", id.as_str());
    out
}

async fn publish(
    js: &jetstream::Context,
    letter: &DeadLetter,
    headers: HeaderMap,
    payload: bytes::Bytes,
) -> Result<Moved, RedriveError> {
    let doing = || format!("publish {letter} to {}", letter.subject);
    let ack = js
        .publish_with_headers(letter.subject.clone(), headers, payload)
        .await
        .map_err(nats(doing()))?
        .await
        .map_err(nats(doing()))?;
    Ok(if ack.duplicate {
        Moved::AlreadyRedriven
    } else {
        Moved::Redriven {
            stream: ack.stream,
            sequence: ack.sequence,
        }
    })
}

async fn delete(stream: &stream::Stream, name: &str, sequence: u64) -> Result<(), RedriveError> {
    use async_nats::jetstream::{stream::DeleteMessageErrorKind, ErrorCode};
    match stream.delete_message(sequence).await {
        Ok(_) => Ok(()),
        // Already gone (a work-queue stream removes what is acknowledged).
        Err(e)
            if matches!(e.kind(), DeleteMessageErrorKind::JetStream(j)
            if [ErrorCode::NO_MESSAGE_FOUND, ErrorCode::SEQUENCE_NOT_FOUND].contains(&j.error_code())) =>
        {
            Ok(())
        }
        Err(e) => Err(nats(format!("delete dead letter {sequence} from {name}"))(
            e,
        )),
    }
}

async fn acknowledge(msg: &jetstream::Message) -> Result<(), RedriveError> {
    msg.double_ack()
        .await
        .map_err(nats("record the redrive's progress"))
}
