//! Step 2 of the data flow: one NATS connection for the service, with the
//! Python wrapper's connection options, and connection events reported to
//! the log (and, when reconnecting is not allowed or gives up, or the server
//! refuses the service, on a channel as the [`ConnectionEnd`] reason).

use crate::config::{Auth, NatsConfig};
use async_nats::{ClientError, ConnectOptions, Event, ServerAddr, ServerError};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Why the service could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A server URL does not parse.
    #[error("nats.servers: invalid server URL {url:?}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The credentials file cannot be read.
    #[error("nats.credentials: cannot read {path}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No server could be reached, or the one reached refused the connection.
    #[error("cannot connect to NATS at {servers}")]
    Unreachable {
        /// The servers tried.
        servers: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Why a connection is gone for good, or refused by the server while up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionEnd {
    /// The connection dropped and reconnecting is off.
    #[error("the connection to NATS was lost and nats.allow_reconnect is false")]
    Lost,
    /// Every reconnect attempt failed.
    #[error("the connection to NATS is closed: nats.max_reconnect_attempts ({attempts}) reconnect attempts failed")]
    ReconnectsExhausted {
        /// The configured limit.
        attempts: usize,
    },
    /// The client closed the connection for another reason.
    #[error("the connection to NATS is closed")]
    Closed,
    /// The server refused the connection's credentials, or the pulls or
    /// subscriptions it needs.
    #[error("NATS refused the service")]
    Denied(#[source] ServerError),
}

/// When a connection was last made, the first time included.
#[derive(Debug)]
pub struct LastConnect(Mutex<Instant>);

impl Default for LastConnect {
    /// Made now.
    fn default() -> LastConnect {
        LastConnect(Mutex::new(Instant::now()))
    }
}

impl LastConnect {
    fn mark(&self) {
        *self.0.lock().expect("last connect lock") = Instant::now();
    }

    /// When it was last made.
    pub fn at(&self) -> Instant {
        *self.0.lock().expect("last connect lock")
    }
}

/// A client and when its connection was last made.
pub struct Connected {
    /// The client.
    pub client: async_nats::Client,
    /// When its connection was last made (again).
    pub last_connect: Arc<LastConnect>,
}

/// Connects with every option of `nats`. Events that end the connection
/// are sent on `ended`; the channel closes when the client gives up for good.
pub async fn connect(
    service: &str,
    nats: &NatsConfig,
    ended: mpsc::UnboundedSender<ConnectionEnd>,
) -> Result<Connected, ConnectError> {
    let last_connect = Arc::<LastConnect>::default();
    let marked = last_connect.clone();
    let servers = nats
        .servers
        .iter()
        .map(|url| {
            ServerAddr::from_str(url).map_err(|source| ConnectError::BadUrl {
                url: url.clone(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = match &nats.auth {
        Auth::None => ConnectOptions::new(),
        Auth::Token(t) => ConnectOptions::with_token(t.clone()),
        Auth::UserPassword(u, p) => ConnectOptions::with_user_and_password(u.clone(), p.clone()),
        Auth::NKey(seed) => ConnectOptions::with_nkey(seed.clone()),
        Auth::Credentials(path) => {
            ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| ConnectError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?
        }
    };
    if let Some(tls) = &nats.tls {
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options = options.require_tls(tls.required);
    }
    let wait = nats.reconnect_time_wait;
    let allow_reconnect = nats.allow_reconnect;
    let limit = if allow_reconnect {
        nats.max_reconnect_attempts
    } else {
        Some(1)
    };
    options = options
        .name(service)
        .ping_interval(nats.ping_interval)
        .connection_timeout(nats.connect_timeout)
        .max_reconnects(limit)
        // async-nats counts the first try of every (re)connect as attempt 1:
        // make it at once, and wait between the attempts after it.
        .reconnect_delay_callback(move |attempt| if attempt <= 1 { Duration::ZERO } else { wait })
        .event_callback(move |event| {
            let ended = ended.clone();
            if matches!(event, Event::Connected) {
                marked.mark();
            }
            async move {
                if let Some(reason) = ending_event(&event, allow_reconnect, limit) {
                    let _ = ended.send(reason);
                    return;
                }
                match event {
                    Event::Connected => tracing::info!("connected to NATS"),
                    Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
                    Event::LameDuckMode => tracing::warn!("the NATS server entered lame duck mode"),
                    Event::SlowConsumer(sid) => {
                        tracing::warn!("slow consumer on subscription {sid}")
                    }
                    other => tracing::warn!("NATS: {other}"),
                }
            }
        });
    let client = options
        .connect(servers)
        .await
        .map_err(|source| ConnectError::Unreachable {
            servers: nats.servers.join(", "),
            source,
        })?;
    Ok(Connected {
        client,
        last_connect,
    })
}

/// The connection event that ends the connection's use, if `event` is one.
fn ending_event(
    event: &Event,
    allow_reconnect: bool,
    attempts: Option<usize>,
) -> Option<ConnectionEnd> {
    match event {
        Event::Disconnected if !allow_reconnect => Some(ConnectionEnd::Lost),
        Event::ClientError(ClientError::MaxReconnects) if !allow_reconnect => {
            Some(ConnectionEnd::Lost)
        }
        Event::ClientError(ClientError::MaxReconnects) => {
            Some(ConnectionEnd::ReconnectsExhausted {
                attempts: attempts.unwrap_or(0),
            })
        }
        Event::Closed => Some(ConnectionEnd::Closed),
        Event::ServerError(e @ ServerError::AuthorizationViolation) => {
            Some(ConnectionEnd::Denied(e.clone()))
        }
        // The service's pulls or its subscriptions refused: nothing can be
        // pulled. A guest's publish refused by the server is that guest's
        // error, never fatal; so are the micro-service endpoints (`$SRV.…`,
        // `<service>.health`), which a user without those permissions
        // simply does not serve. async-nats gives every other `-ERR` as
        // text (`ServerError::Other`), so the permission and the subject it
        // names are read from that text.
        Event::ServerError(ServerError::Other(e))
            if e.to_ascii_lowercase().contains("permissions violation")
                && (e.contains("$JS.API.CONSUMER.MSG.NEXT.")
                    || (e.contains("Subscription") && !micro_endpoint(e))) =>
        {
            Some(ConnectionEnd::Denied(ServerError::Other(e.clone())))
        }
        _ => None,
    }
}

/// Whether a refused subscription is one of the micro-service endpoints
/// (or the reload subject beside them).
fn micro_endpoint(error: &str) -> bool {
    let refused = error.split('"').nth(1).unwrap_or_default();
    refused.starts_with("$SRV.") || refused.ends_with(".health") || refused.ends_with(".reload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_that_end_the_service() {
        let fatal = |e: Event, allow| ending_event(&e, allow, Some(3)).map(|f| f.to_string());
        assert_eq!(fatal(Event::Disconnected, true), None);
        assert_eq!(
            fatal(Event::Disconnected, false).as_deref(),
            Some("the connection to NATS was lost and nats.allow_reconnect is false")
        );
        assert_eq!(
            fatal(Event::ClientError(ClientError::MaxReconnects), true).as_deref(),
            Some("the connection to NATS is closed: nats.max_reconnect_attempts (3) reconnect attempts failed")
        );
        assert!(fatal(
            Event::ServerError(ServerError::AuthorizationViolation),
            true
        )
        .is_some());
        let denied = |subject: &str| {
            Event::ServerError(ServerError::Other(format!(
                "Permissions Violation for Publish to \"{subject}\""
            )))
        };
        assert!(fatal(denied("$JS.API.CONSUMER.MSG.NEXT.IN.kit"), true).is_some());
        assert_eq!(
            fatal(denied("acme.payments.x"), true),
            None,
            "a guest's publish refused by the server is not fatal"
        );
        let unsubscribable = |subject: &str| {
            Event::ServerError(ServerError::Other(format!(
                "Permissions Violation for Subscription to \"{subject}\""
            )))
        };
        assert!(fatal(unsubscribable("_INBOX.abc.*"), true).is_some());
        for endpoint in [
            "$SRV.PING",
            "$SRV.STATS.orders",
            "orders.health",
            "orders.reload",
        ] {
            assert_eq!(
                fatal(unsubscribable(endpoint), true),
                None,
                "{endpoint}: the micro-service is optional"
            );
        }
        assert_eq!(fatal(Event::LameDuckMode, true), None);
    }
}
