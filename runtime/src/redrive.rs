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
            selection.limit.is_none_or(|limit| found.len() < limit)
        },
    )
    .await?;
    Ok(found)
}

/// Reads the headers of the messages of `stream` on `subject` from
/// `start` on, in order, handing each to `each` until it returns false or
/// none is left.
async fn scan(
    stream: &stream::Stream,
    subject: &str,
    start: consumer::DeliverPolicy,
    doing: &str,
    mut each: impl FnMut(u64, &HeaderMap) -> bool,
) -> Result<(), RedriveError> {
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
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(nats(doing))?;
        let info = msg.info().map_err(nats(doing))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let headers = msg.headers.clone().unwrap_or_default();
        if !each(sequence, &headers) || pending == 0 {
            break;
        }
    }
    Ok(())
}

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

/// The redrive's progress: a durable consumer of the dead-letter stream.
fn progress_name(durable: &str) -> String {
    format!("natsapp-redrive-{durable}")
}

/// Moves the dead letters of subscriber `sub` on `subject` that
/// `selection` takes back to their original subjects, telling `moved`
/// each one as it goes; how many it moved.
pub async fn redrive(
    js: &jetstream::Context,
    sub: &SubscriberConfig,
    subject: &str,
    selection: &Selection,
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
    let progress = progress_name(sub.durable.as_str());

    // A redrive that was stopped left its consumer: what it delivered and
    // did not acknowledge was in flight — perhaps published, not deleted.
    let in_flight = match stream.consumer_info(&progress).await {
        Ok(info) => {
            let range = info.ack_floor.stream_sequence + 1..=info.delivered.stream_sequence;
            let what = if range.is_empty() {
                "no dead letter was in flight".to_string()
            } else {
                format!(
                    "dead letters {}..={} were in flight: each is looked for in its stream before it moves",
                    range.start(),
                    range.end()
                )
            };
            warn(&format!(
                "resuming a redrive of {} that was stopped; {what}",
                sub.name
            ));
            stream
                .delete_consumer(&progress)
                .await
                .map_err(nats(format!("remove consumer {progress}")))?;
            Some(range)
        }
        Err(e) if e.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound => {
            None
        }
        Err(e) => return Err(nats(format!("read consumer {progress}"))(e)),
    };
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

    let mut count = 0;
    while selection.limit.is_none_or(|limit| count < limit) {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .messages()
            .await
            .map_err(nats(format!("read the dead letters on {subject}")))?;
        let Some(msg) = batch.next().await else { break };
        let msg = msg.map_err(nats(format!("read the dead letters on {subject}")))?;
        let (sequence, published) = {
            let info = msg.info().map_err(nats("read a dead letter's metadata"))?;
            (info.stream_sequence, info.published)
        };
        let headers = msg.headers.clone().unwrap_or_default();
        let was_in_flight = in_flight.as_ref().is_some_and(|r| r.contains(&sequence));
        let Some(letter) = selected(&sub.name, selection, sequence, &headers) else {
            if was_in_flight {
                // Moved under another selection before the stop: finish it.
                if let Some(letter) = selected(&sub.name, &Selection::default(), sequence, &headers)
                {
                    if copy_exists(js, &stream_name, &letter, published, &mut warn).await? {
                        delete(&stream, &stream_name, sequence).await?;
                        moved(&letter, &Moved::AlreadyRedriven);
                    }
                }
            }
            acknowledge(&msg).await?;
            continue;
        };
        if let Some(why) = &letter.unmovable {
            moved(&letter, &Moved::Skipped(why.clone()));
            acknowledge(&msg).await?;
            continue;
        }
        let outcome = if was_in_flight
            && copy_exists(js, &stream_name, &letter, published, &mut warn).await?
        {
            Moved::AlreadyRedriven
        } else {
            publish(js, &stream_name, &letter, &headers, msg.payload.clone()).await?
        };
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

/// The original's headers, the redrive count and the dead letter's name;
/// its message id keeps a second copy out within the duplicate window.
fn redriven_headers(dead_letters: &str, letter: &DeadLetter, copy: &HeaderMap) -> HeaderMap {
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
    out.insert(headers::REDRIVEN, times.to_string().as_str());
    out.insert(headers::REDRIVEN_FROM, from.as_str());
    out.insert("Nats-Msg-Id", format!("natsapp-redrive:{from}").as_str());
    out
}

async fn publish(
    js: &jetstream::Context,
    dead_letters: &str,
    letter: &DeadLetter,
    copy: &HeaderMap,
    payload: bytes::Bytes,
) -> Result<Moved, RedriveError> {
    let doing = || format!("publish {letter} to {}", letter.subject);
    let ack = js
        .publish_with_headers(
            letter.subject.clone(),
            redriven_headers(dead_letters, letter, copy),
            payload,
        )
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

/// Whether the stream that captures `letter`'s subject holds a copy of it
/// published since it became a dead letter (`Natsapp-Redriven-From`).
async fn copy_exists(
    js: &jetstream::Context,
    dead_letters: &str,
    letter: &DeadLetter,
    since: async_nats::datetime::DateTime,
    warn: &mut impl FnMut(&str),
) -> Result<bool, RedriveError> {
    let wanted = format!("{dead_letters}:{}", letter.sequence);
    let name = js
        .stream_by_subject(&letter.subject)
        .await
        .map_err(nats(format!("find the stream of {}", letter.subject)))?;
    let mut stream = js
        .get_stream(&name)
        .await
        .map_err(nats(format!("open stream {name}")))?;
    let retention = stream
        .info()
        .await
        .map_err(nats(format!("read stream {name}")))?
        .config
        .retention;
    if retention != stream::RetentionPolicy::Limits {
        warn(&format!(
            "stream {name} removes what its consumers acknowledge: a copy of {letter} that was published and already handled cannot be seen there"
        ));
    }
    let mut found = false;
    scan(
        &stream,
        &letter.subject,
        consumer::DeliverPolicy::ByStartTime { start_time: since },
        &format!("read stream {name}"),
        |_, copy| {
            found = copy
                .get(headers::REDRIVEN_FROM)
                .is_some_and(|v| v.as_str() == wanted);
            !found
        },
    )
    .await?;
    Ok(found)
}
