//! Step 7 of the data flow: publishing outputs. Decides per subject whether
//! a publish goes to a stream (await the PubAck, with a `Nats-Msg-Id`) or is
//! a core publish, and performs it. Used by the guest's `publish` and by
//! dead-lettering (always a JetStream publish).

use crate::config::{defaults, Config, Subject};
use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::time::Duration;

/// How a subject is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A stream captures it: wait this long for the PubAck.
    JetStream(Duration),
    /// Core NATS: fire and forget.
    Core,
}

/// Subject → route, from `[[publishers]]` and `[[streams]]`.
#[derive(Debug, Default)]
pub struct PublishRoutes {
    /// Each `[[publishers]]` subject, with its stream and PubAck wait when it names one.
    publishers: Vec<(Subject, Option<(String, Duration)>)>,
    /// Each subject a `[[streams]]` entry captures, with the stream.
    streams: Vec<(Subject, String)>,
}

impl PublishRoutes {
    /// Routes of subscribers of `tenant` (`None`: the service's own) from
    /// the service's configuration: a tenant's own streams route only its
    /// own publishes.
    pub fn new(config: &Config, tenant: &Option<String>) -> Self {
        PublishRoutes {
            publishers: config
                .publishers
                .iter()
                .map(|p| {
                    let stream = p.stream.as_ref().map(|s| (s.to_string(), p.timeout));
                    (p.subject.clone(), stream)
                })
                .collect(),
            streams: config
                .streams
                .iter()
                .filter(|s| s.seen_by(tenant))
                .flat_map(|s| s.subjects.iter().map(|x| (x.clone(), s.name.to_string())))
                .collect(),
        }
    }

    /// The route of `subject`: a `[[publishers]]` entry with a stream, or a
    /// `[[streams]]` entry that captures it, makes it a JetStream publish.
    pub fn route(&self, subject: &str) -> Route {
        match self.stream(subject) {
            Some((_, timeout)) => Route::JetStream(timeout),
            None => Route::Core,
        }
    }

    /// The longest a PubAck is awaited on these routes: the longest
    /// publisher timeout, and never less than the default, which
    /// `[[streams]]` subjects and dead letters to core subjects wait.
    pub fn longest_wait(&self) -> Duration {
        self.publishers
            .iter()
            .filter_map(|(_, stream)| stream.as_ref().map(|(_, wait)| *wait))
            .fold(defaults::PUBLISH_TIMEOUT, Duration::max)
    }

    /// The stream that stores `subject`, and how long its PubAck is awaited.
    pub fn stream(&self, subject: &str) -> Option<(&str, Duration)> {
        let publisher = self.publishers.iter().find(|(p, _)| p.matches(subject));
        if let Some((_, Some((stream, timeout)))) = publisher {
            return Some((stream, *timeout));
        }
        self.streams
            .iter()
            .find(|(s, _)| s.matches(subject))
            .map(|(_, stream)| (stream.as_str(), defaults::PUBLISH_TIMEOUT))
    }
}

/// Why a publish failed, by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No PubAck in time.
    #[error("no PubAck for {subject:?} within {timeout:?}")]
    Timeout {
        /// The subject.
        subject: String,
        /// The wait.
        timeout: Duration,
    },
    /// The server cannot take it now (no stream, no connection); may succeed later.
    #[error("cannot publish to {subject:?} now")]
    Unavailable {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: PublishFailure,
    },
    /// The message is not acceptable (too large, bad subject).
    #[error("cannot publish to {subject:?}")]
    Invalid {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: PublishFailure,
    },
}

/// What refused a publish.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// The client could not send a core publish.
    #[error(transparent)]
    Core(async_nats::client::PublishError),
    /// The server or the client failed a JetStream publish.
    #[error(transparent)]
    JetStream(jetstream::context::PublishError),
    /// No stream captures the subject, or its stream has no leader.
    #[error("no stream captures this subject (or its leader is being elected)")]
    NoStream(#[source] jetstream::context::PublishError),
    /// The stream's own size limit is lower than the server's.
    #[error("the message exceeds the stream's maximum message size")]
    TooLargeForStream(#[source] jetstream::context::PublishError),
    /// Larger than the server accepts, found before sending.
    #[error("maximum payload exceeded: {size} bytes, the server accepts {max}")]
    TooLarge {
        /// The message's size with its headers.
        size: usize,
        /// The server's `max_payload`.
        max: usize,
    },
}

/// The server's error codes for "not now": JetStream temporarily
/// unavailable (10008) and a cluster that cannot handle the request, as in
/// a leader change (10009). Their status, 503, is shared with errors that
/// are the message's own (a stream's maximum bytes, 10077), so the codes
/// decide.
pub const UNAVAILABLE_CODES: [u64; 2] = [10008, 10009];

/// Whether the server answered the publish with one of
/// [`UNAVAILABLE_CODES`]. async-nats reports it as `Other` with the
/// server's error as its source.
fn server_unavailable(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|api| UNAVAILABLE_CODES.contains(&api.error_code().0))
}

impl PublishError {
    /// Whether it failed for want of NATS — no PubAck in time, no stream
    /// leader (an election), a broken connection — rather than for what
    /// was published: the same publish (the same `Nats-Msg-Id`) may be
    /// made again. A stream deleted from under the service looks the same
    /// as one without a leader; the wait is logged until it is back.
    pub fn unavailable(&self) -> bool {
        match self {
            PublishError::Timeout { .. } => true,
            PublishError::Unavailable { source, .. } => match source {
                PublishFailure::NoStream(_) => true,
                PublishFailure::JetStream(e) => {
                    matches!(
                        e.kind(),
                        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                    ) || server_unavailable(e)
                }
                // The client gives up sending only when it is closed for good.
                PublishFailure::Core(_) => false,
                PublishFailure::TooLargeForStream(_) | PublishFailure::TooLarge { .. } => false,
            },
            PublishError::Invalid { .. } => false,
        }
    }

    /// Its kind, as traces name it (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            PublishError::Timeout { .. } => "timeout",
            PublishError::Unavailable { .. } => "unavailable",
            PublishError::Invalid { .. } => "invalid",
        }
    }
}

/// The server's acknowledgement of a JetStream publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The stream that stored it.
    pub stream: String,
    /// Its sequence there.
    pub sequence: u64,
    /// It was a duplicate inside the stream's window.
    pub duplicate: bool,
}

/// Publishes by `route`; returns the PubAck for a JetStream publish.
pub async fn publish(
    client: &async_nats::Client,
    js: &jetstream::Context,
    route: Route,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<Option<Acked>, PublishError> {
    match route {
        Route::Core => {
            // A subject's clone shares its bytes: kept for the error, uncopied.
            let to = async_nats::Subject::from(subject);
            client
                .publish_with_headers(to.clone(), headers, payload)
                .await
                .map_err(|e| match e.kind() {
                    // Too large or malformed: retrying cannot fix it.
                    async_nats::client::PublishErrorKind::MaxPayloadExceeded
                    | async_nats::client::PublishErrorKind::InvalidSubject => {
                        PublishError::Invalid {
                            subject: to.to_string(),
                            source: PublishFailure::Core(e),
                        }
                    }
                    async_nats::client::PublishErrorKind::Send => PublishError::Unavailable {
                        subject: to.to_string(),
                        source: PublishFailure::Core(e),
                    },
                })?;
            Ok(None)
        }
        Route::JetStream(timeout) => {
            let sent = tokio::time::timeout(timeout, async {
                let ack = send_to_stream(js, &subject, headers, payload).await?;
                confirmed(ack.await, &subject, timeout)
            })
            .await;
            match sent {
                Ok(acked) => acked.map(Some),
                Err(_) => Err(PublishError::Timeout { subject, timeout }),
            }
        }
    }
}

/// Sends a JetStream publish without waiting for its PubAck; the returned
/// future resolves to it (see [`confirmed`]).
pub async fn send_to_stream(
    js: &jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: Bytes,
) -> Result<jetstream::context::PublishAckFuture, PublishError> {
    js.publish_with_headers(subject.to_string(), headers, payload)
        .await
        .map_err(|e| classify(e, subject, None))
}

/// The result of a JetStream publish's PubAck future, as a [`PublishError`]
/// when the server or the client refused it; `timeout` is the wait the
/// publish was given, named in a timeout's error.
pub fn confirmed(
    ack: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    subject: &str,
    timeout: Duration,
) -> Result<Acked, PublishError> {
    match ack {
        Ok(ack) => Ok(Acked {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        }),
        Err(e) => Err(classify(e, subject, Some(timeout))),
    }
}

/// What a failed JetStream publish means for its caller.
fn classify(
    e: jetstream::context::PublishError,
    subject: &str,
    timeout: Option<Duration>,
) -> PublishError {
    let subject = subject.to_string();
    match e.kind() {
        PublishErrorKind::TimedOut => PublishError::Timeout {
            subject,
            timeout: timeout.unwrap_or(defaults::PUBLISH_TIMEOUT),
        },
        PublishErrorKind::StreamNotFound => PublishError::Unavailable {
            subject,
            source: PublishFailure::NoStream(e),
        },
        PublishErrorKind::MaxPayloadExceeded => PublishError::Invalid {
            subject,
            source: PublishFailure::JetStream(e),
        },
        _ if too_large_for_stream(&e) => PublishError::Invalid {
            subject,
            source: PublishFailure::TooLargeForStream(e),
        },
        _ => PublishError::Unavailable {
            subject,
            source: PublishFailure::JetStream(e),
        },
    }
}

/// Whether the stream refused the message for its size (its `max_msg_size`
/// or header limit, lower than the server's `max_payload`).
fn too_large_for_stream(e: &jetstream::context::PublishError) -> bool {
    use async_nats::jetstream::ErrorCode;
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|j| {
            matches!(
                j.error_code(),
                ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                    | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn routes() {
        let text = format!(
            r#"
[service]
name = "svc"
[[streams]]
name = "STATUS"
subjects = ["order.status", "audit.>"]
[[publishers]]
subject = "inventory.>"
stream = "INVENTORY"
timeout = "3s"
[[publishers]]
subject = "notify.email"
[[subscribers]]
name = "s"
component = "{}"
subject = "order.created"
stream = "ORDERS"
durable = "d"
"#,
            file!().rsplit('/').next().unwrap()
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/nats");
        let config = Config::parse(&dir.join("service.toml"), &text, |_| None).unwrap();
        let routes = PublishRoutes::new(&config, &None);
        assert_eq!(
            routes.route("inventory.item.7"),
            Route::JetStream(Duration::from_secs(3))
        );
        assert_eq!(
            routes.route("order.status"),
            Route::JetStream(defaults::PUBLISH_TIMEOUT)
        );
        assert_eq!(
            routes.route("audit.x.y"),
            Route::JetStream(defaults::PUBLISH_TIMEOUT)
        );
        assert_eq!(routes.route("notify.email"), Route::Core);
        assert_eq!(
            routes.stream("inventory.item.7"),
            Some(("INVENTORY", Duration::from_secs(3)))
        );
        assert_eq!(
            routes.stream("audit.x"),
            Some(("STATUS", defaults::PUBLISH_TIMEOUT))
        );
        assert_eq!(routes.stream("notify.email"), None);
        assert_eq!(routes.route("anything.else"), Route::Core);
        assert_eq!(routes.longest_wait(), defaults::PUBLISH_TIMEOUT);
        let longer = text.replace("timeout = \"3s\"", "timeout = \"45s\"");
        let config = Config::parse(&dir.join("service.toml"), &longer, |_| None).unwrap();
        let routes = PublishRoutes::new(&config, &None);
        assert_eq!(routes.longest_wait(), Duration::from_secs(45));
    }

    #[test]
    fn a_tenants_own_stream_routes_only_its_publishes() {
        let text = r#"
[service]
name = "svc"
include = [{ kv = "DEPLOY", keys = ">" }]
[[tenants]]
name = "acme"
deploy = { kv = "ACME_DEPLOY", keys = ">" }
"#;
        let fragment = crate::config::Fragment {
            key: crate::config::FragmentKey {
                tenant: Some("acme".into()),
                bucket: "ACME_DEPLOY".into(),
                key: "audit".into(),
            },
            revision: 1,
            text: "[[streams]]\nname = \"AUDIT\"\nsubjects = [\"acme.audit.>\"]\n".into(),
        };
        let path = Path::new("/srv/service.toml");
        let config = Config::parse_with(path, text, |_| None, &[fragment]).unwrap();
        let acme = PublishRoutes::new(&config, &Some("acme".into()));
        assert_eq!(
            acme.route("acme.audit.x"),
            Route::JetStream(defaults::PUBLISH_TIMEOUT)
        );
        let own = PublishRoutes::new(&config, &None);
        assert_eq!(own.route("acme.audit.x"), Route::Core);
    }
}
