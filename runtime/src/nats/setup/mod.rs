//! Step 3 of the data flow: streams and durable pull consumers. Declares what
//! is missing and may be declared; verifies what exists; never silently
//! changes or ignores a stream or consumer that differs from the file
//! (`streams`), and sets the fields of a durable the runtime manages in place
//! (`consumers`); opens the key-value buckets subscribers are granted
//! (`buckets`).

mod buckets;
mod consumers;
mod schedules;
mod streams;

pub use buckets::*;
pub use consumers::*;
pub use schedules::*;
pub use streams::*;

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
    /// A bucket a subscriber is granted does not exist and is not declared.
    #[error("bucket {bucket:?} (granted to subscriber {subscriber:?}) is neither declared in [[buckets]] nor present on the server")]
    BucketMissing {
        /// The bucket.
        bucket: String,
        /// The subscriber granted it.
        subscriber: String,
    },
    /// A bucket exists with other settings than the file's.
    #[error("bucket {bucket:?} on the server differs from [[buckets]] in the file: {}; change the file or the bucket (the runtime never changes it)", diffs.join("; "))]
    BucketDiffers {
        /// The bucket.
        bucket: String,
        /// One entry per differing field.
        diffs: Vec<String>,
    },
    /// A stream an atomic subscriber publishes to does not allow atomic publish.
    #[error("stream {stream:?} does not allow atomic publish, and subscriber {subscriber:?} (outputs.mode = \"atomic\") may publish to it; allow it on the stream (allow_atomic), or use outputs.mode = \"immediate\" (the runtime never changes an existing stream)")]
    NotAtomic {
        /// The stream.
        stream: String,
        /// The subscriber.
        subscriber: String,
    },
    /// The server created a stream without the atomic publish it was asked for.
    #[error("stream {stream:?} was created without atomic publish: the server ignores allow_atomic (outputs.mode = \"atomic\" needs nats-server 2.12 or newer)")]
    AtomicUnsupported {
        /// The stream.
        stream: String,
    },
    /// A schedule's stream does not allow message schedules.
    #[error("schedule {schedule:?}: stream {stream:?} does not allow message schedules; set allow_schedules = true on it (a stream that exists must be changed on the server: the runtime never changes it)")]
    SchedulesNotAllowed {
        /// The schedule.
        schedule: String,
        /// Its stream.
        stream: String,
    },
    /// A stream the service needs is gone and may not be declared again.
    #[error("stream {stream:?} is gone from the server")]
    StreamGone {
        /// The stream.
        stream: String,
    },
    /// The server refused or failed a request.
    #[error("{what}")]
    Server {
        /// What was being done.
        what: String,
        /// The server's or client's answer.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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

fn server(
    what: impl Into<String>,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    invalid: bool,
) -> SetupError {
    SetupError::Server {
        what: what.into(),
        source: e.into(),
        invalid,
    }
}

/// Whether `stream`, a platform's entry, is the input stream of a
/// tenant's subscriber or holds a tenant's schedule (the tenant declaring
/// no stream of that name), and nothing of the service's uses it: such a
/// stream lives in the tenant's account only and is set up through its
/// connection (`ensure_subscriber`, `sync_schedules`), not the service's.
fn tenant_input(config: &Config, stream: &str) -> bool {
    let platforms_in_tenant = |tenant: &Option<String>| {
        tenant.is_some()
            && config
                .stream_for(stream, tenant)
                .is_some_and(|st| st.tenant.is_none())
    };
    let read = (config.subscribers.iter())
        .any(|s| s.stream.as_str() == stream && platforms_in_tenant(&s.tenant));
    let scheduled = (config.schedules.iter())
        .any(|s| s.stream.as_str() == stream && platforms_in_tenant(&s.tenant));
    // One the service uses too lives in its account as well.
    let services = (config.subscribers.iter())
        .any(|s| s.tenant.is_none() && s.stream.as_str() == stream)
        || (config.schedules.iter()).any(|s| s.tenant.is_none() && s.stream.as_str() == stream)
        || (config.publishers.iter())
            .any(|p| p.stream.as_ref().is_some_and(|st| st.as_str() == stream));
    (read || scheduled) && !services
}

/// What a subscriber needs from the server to run.
pub struct SubscriberSetup {
    /// Its durable consumer.
    pub consumer: PullConsumer,
    /// The key-value buckets it is granted, opened.
    pub buckets: Vec<OpenedBucket>,
}

/// Sets up one subscriber on `js` — its tenant's connection, or the
/// service's: a tenant's input stream is declared (or verified) when the
/// file lists it, else it must exist, and the streams the tenant's
/// fragments declare are declared in its account; its dead-letter subject
/// must be captured by a stream; its buckets are opened (a watched
/// bucket among them); its durable is created or verified.
pub async fn ensure_subscriber(
    js: &jetstream::Context,
    config: &Config,
    sub: &SubscriberConfig,
) -> Result<SubscriberSetup, SetupError> {
    if sub.tenant.is_some() {
        let own = config.streams.iter().filter(|s| s.tenant == sub.tenant);
        for st in own.filter(|s| s.name != sub.stream) {
            ensure_stream(js, st).await?;
        }
        match config.stream_for(sub.stream.as_str(), &sub.tenant) {
            // A watch's stream is its bucket's, opened with its buckets below.
            _ if sub.watch.is_some() => {}
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
    let buckets = open_buckets(js, config, sub).await?;
    Ok(SubscriberSetup {
        consumer: ensure_consumer(js, sub).await?,
        buckets,
    })
}

/// Sets up one endpoint on `js`, its tenant's connection or the
/// service's: the streams its tenant's fragments declare, and the buckets
/// it is granted, opened. It reads no stream.
pub async fn ensure_endpoint(
    js: &jetstream::Context,
    config: &Config,
    handler: &SubscriberConfig,
) -> Result<Vec<OpenedBucket>, SetupError> {
    if handler.tenant.is_some() {
        for st in config.streams.iter().filter(|s| s.tenant == handler.tenant) {
            ensure_stream(js, st).await?;
        }
    }
    open_buckets(js, config, handler).await
}

/// Whether a stream lookup failed because the stream does not exist.
pub fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}
