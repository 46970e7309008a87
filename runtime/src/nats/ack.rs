//! The acknowledgement wire format: what a JetStream delivery's ack subject
//! takes (`+ACK`, `-NAK`, `+TERM reason`, `+WPI`) and how it is sent. Only
//! `settle` calls this; it decides which one and counts it.

use async_nats::jetstream::AckKind;
use async_nats::Subject;
use bytes::Bytes;
use std::time::Duration;

/// The longest reason sent with a term (the server puts it in advisories).
pub const MAX_TERM_REASON: usize = 1024;

/// One acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Handled: never redeliver.
    Ack,
    /// Redeliver, after the delay or at once.
    Nak(Option<Duration>),
    /// Never redeliver, telling the server why.
    Term(String),
    /// Still working: restart the ack wait.
    Progress,
}

impl Ack {
    /// The name used in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Ack::Ack => "ack",
            Ack::Nak(_) => "nak",
            Ack::Term(_) => "term",
            Ack::Progress => "in-progress",
        }
    }

    fn payload(&self) -> Bytes {
        match self {
            Ack::Ack => AckKind::Ack.into(),
            Ack::Nak(delay) => AckKind::Nak(*delay).into(),
            Ack::Term(reason) if reason.is_empty() => AckKind::Term.into(),
            Ack::Term(reason) => format!("+TERM {}", one_line(reason, MAX_TERM_REASON)).into(),
            Ack::Progress => AckKind::Progress.into(),
        }
    }
}

/// An acknowledgement that could not be sent (or, confirmed, was not confirmed).
#[derive(Debug, thiserror::Error)]
#[error("cannot send {what} to {reply}")]
pub struct AckError {
    what: &'static str,
    reply: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Sends `ack` to the delivery's ack subject `reply`.
pub async fn send(client: &async_nats::Client, reply: &Subject, ack: &Ack) -> Result<(), AckError> {
    client
        .publish(reply.clone(), ack.payload())
        .await
        .map_err(|e| AckError {
            what: ack.name(),
            reply: reply.to_string(),
            source: Box::new(e),
        })
}

/// Sends an ack and waits up to `wait` for the server to confirm it.
pub async fn send_confirmed(
    client: &async_nats::Client,
    reply: &Subject,
    wait: Duration,
) -> Result<(), AckError> {
    let error = |source: Box<dyn std::error::Error + Send + Sync>| AckError {
        what: "confirmed ack",
        reply: reply.to_string(),
        source,
    };
    match tokio::time::timeout(wait, client.request(reply.clone(), Ack::Ack.payload())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(error(Box::new(e))),
        Err(e) => Err(error(Box::new(e))),
    }
}

/// `s` on one line (control characters become spaces), at most `max` bytes.
pub fn one_line(s: &str, max: usize) -> String {
    let mut s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        assert_eq!(Ack::Ack.payload(), "+ACK");
        assert_eq!(Ack::Nak(None).payload(), "-NAK");
        assert_eq!(
            Ack::Nak(Some(Duration::from_millis(1500))).payload(),
            r#"-NAK {"delay":1500000000}"#
        );
        assert_eq!(Ack::Term(String::new()).payload(), "+TERM");
        assert_eq!(Ack::Term("bad\norder".into()).payload(), "+TERM bad order");
        assert_eq!(Ack::Progress.payload(), "+WPI");
        let long = "é".repeat(MAX_TERM_REASON);
        assert!(Ack::Term(long).payload().len() <= "+TERM ".len() + MAX_TERM_REASON);
    }
}
