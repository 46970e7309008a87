//! A guest's delayed outputs. A handler asks for one with the header
//! `Natsapp-Delay: 30s` on a publish. The delay becomes a one-shot
//! nats-server message schedule (ADR-51, `@at`): the output is stored on
//! `natsapp.delayed.<id>` in the stream that captures its subject — which
//! must also capture `natsapp.delayed.>` and allow schedules — and
//! nats-server publishes it to its subject when the time comes; no timer of
//! the runtime's runs. A guest cannot set a repeating schedule: it would
//! publish forever, past every publish quota. (Its output's time-to-live,
//! `Nats-TTL`, is a header the server reads as it is: see `grants`.)

use crate::config::DELAYED_PREFIX;
use crate::grants::Refused;
use async_nats::HeaderMap;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

/// The header a guest asks for a delay with.
pub const DELAY: &str = "Natsapp-Delay";

/// A guest's headers, as it gives them.
type Pairs = Vec<(String, String)>;

/// Takes the delay the guest asks for out of its headers.
pub fn take_delay(headers: Pairs) -> Result<(Option<Duration>, Pairs), Refused> {
    let (asked, rest): (Vec<_>, Vec<_>) = headers
        .into_iter()
        .partition(|(n, _)| n.eq_ignore_ascii_case(DELAY));
    let delay = match asked.as_slice() {
        [] => None,
        [(_, value)] => Some(parse_delay(value)?),
        _ => return Err(Refused::Invalid(format!("more than one {DELAY}"))),
    };
    Ok((delay, rest))
}

fn parse_delay(value: &str) -> Result<Duration, Refused> {
    let d = crate::config::Dur::parse(value)
        .map_err(|e| Refused::Invalid(format!("{DELAY}: {e}")))?
        .0;
    if d < Duration::from_secs(1) {
        return Err(Refused::Invalid(format!(
            "{DELAY}: {value:?} is under 1s; schedules fire by the second"
        )));
    }
    Ok(d)
}

/// Makes a publish to `subject` with `headers` (its `Nats-Msg-Id` set) a
/// schedule firing once `delay` after `now`, rounded up to the second;
/// returns the subject it is held on, named by its `Nats-Msg-Id` so a
/// redelivered input holds it on the same one.
pub fn schedule(
    headers: &mut HeaderMap,
    subject: &str,
    delay: Duration,
    now: SystemTime,
) -> String {
    let id = headers
        .get("Nats-Msg-Id")
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    let at = now + delay;
    let past = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let at = if past == 0 {
        at
    } else {
        at + Duration::from_nanos(u64::from(1_000_000_000 - past))
    };
    headers.insert(
        "Nats-Schedule",
        format!("@at {}", humantime::format_rfc3339_seconds(at)).as_str(),
    );
    headers.insert("Nats-Schedule-Target", subject);
    let digest = Sha256::digest(format!("{id}\n{subject}").as_bytes());
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{DELAYED_PREFIX}.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_taken_out_of_the_headers() {
        let headers = vec![
            ("X-Trace".to_string(), "t".to_string()),
            ("natsapp-delay".to_string(), "90s".to_string()),
        ];
        let (delay, rest) = take_delay(headers).unwrap();
        assert_eq!(delay, Some(Duration::from_secs(90)));
        assert_eq!(rest, vec![("X-Trace".to_string(), "t".to_string())]);
        for (value, refused) in [("500ms", "under 1s"), ("soon", "invalid duration")] {
            let headers = vec![(DELAY.to_string(), value.to_string())];
            assert!(
                matches!(take_delay(headers), Err(Refused::Invalid(m)) if m.contains(refused)),
                "{value}"
            );
        }
    }

    #[test]
    fn a_schedule_fires_on_the_next_whole_second_after_the_delay() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "IN:kit:7:0");
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_454_012_250);
        let held = schedule(&mut headers, "out.x", Duration::from_secs(2), now);
        assert_eq!(
            headers.get("Nats-Schedule").unwrap().as_str(),
            "@at 2026-12-05T07:00:15Z"
        );
        assert_eq!(
            headers.get("Nats-Schedule-Target").unwrap().as_str(),
            "out.x"
        );
        assert!(held.starts_with("natsapp.delayed.") && held.len() == 16 + 32);
        let mut again = HeaderMap::new();
        again.insert("Nats-Msg-Id", "IN:kit:7:0");
        assert_eq!(
            schedule(&mut again, "out.x", Duration::from_secs(9), now),
            held
        );
    }
}
