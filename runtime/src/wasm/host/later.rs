//! A guest's delayed outputs. A handler asks for one with the header
//! `Natsapp-Delay: 30s` on a publish. The delay becomes a one-shot
//! nats-server message schedule (ADR-51, `@at`): the output is stored on
//! `natsapp.delayed.<id>` in the stream that captures its subject — which
//! must also capture `natsapp.delayed.>` and allow schedules — and
//! nats-server publishes it to its subject when the time comes; no timer of
//! the runtime's runs. A guest cannot set a repeating schedule: it would
//! publish forever, past every publish quota. The output's own
//! time-to-live (`Nats-TTL`, checked in `grants`) becomes the schedule's
//! `Nats-Schedule-TTL`: the server gives it to the output it publishes, and
//! the held copy waits without one.

use crate::config::DELAYED_PREFIX;
use crate::grants::{Refused, TTL};
use crate::nats::publish::PublishRoutes;
use async_nats::HeaderMap;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

/// The header a guest asks for a delay with.
pub const DELAY: &str = "Natsapp-Delay";

/// The longest delay a guest may ask for.
pub const LONGEST_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

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
    if d > LONGEST_DELAY {
        return Err(Refused::Invalid(format!(
            "{DELAY}: {value:?} is over a year, the longest delay"
        )));
    }
    Ok(d)
}

/// A delayed output as it is stored until it fires.
#[derive(Debug)]
pub struct Held {
    /// The subject it waits on.
    pub subject: String,
    /// Its headers: the output's, with the schedule's.
    pub headers: HeaderMap,
}

/// Makes the publish of `headers` to `subject` (routed by `routes`) a
/// schedule firing once `delay` after `now`, rounded up to the second.
/// It waits on a subject named by `output_id` (its `Nats-Msg-Id`), so a
/// redelivered input holds it on the same subject under the same id; and
/// only in the stream of `subject`, which must capture that one too.
pub fn hold(
    headers: &HeaderMap,
    subject: &str,
    output_id: &str,
    delay: Duration,
    now: SystemTime,
    routes: &PublishRoutes,
) -> Result<Held, Refused> {
    let digest = Sha256::digest(format!("{output_id}\n{subject}").as_bytes());
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let held_on = format!("{DELAYED_PREFIX}.{name}");
    let Some((stream, _)) = routes.stream(subject) else {
        return Err(Refused::Invalid(format!(
            "a delayed output is held in the stream that captures its subject, and none captures {subject:?}"
        )));
    };
    if routes.stream(&held_on).map(|(s, _)| s) != Some(stream) {
        return Err(Refused::Invalid(format!(
            "stream {stream:?} captures {subject:?} but not {DELAYED_PREFIX}.>, where a delayed output waits until it is due: add it to the stream's subjects"
        )));
    }
    let at = round_up_to_second(now + delay);
    let mut held = HeaderMap::new();
    for (name, values) in headers.iter() {
        let n: &str = name.as_ref();
        for value in values {
            // The output's TTL is the schedule's to give it when it fires.
            let n = if n == TTL { "Nats-Schedule-TTL" } else { n };
            held.append(n, value.as_str());
        }
    }
    held.insert(
        "Nats-Schedule",
        format!("@at {}", humantime::format_rfc3339_seconds(at)).as_str(),
    );
    held.insert("Nats-Schedule-Target", subject);
    held.insert("Nats-Expected-Stream", stream);
    Ok(Held {
        subject: held_on,
        headers: held,
    })
}

fn round_up_to_second(t: SystemTime) -> SystemTime {
    let past = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    if past == 0 {
        t
    } else {
        t + Duration::from_nanos(u64::from(1_000_000_000 - past))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn a_delay_is_taken_out_of_the_headers() {
        let headers = vec![
            ("X-Trace".to_string(), "t".to_string()),
            ("natsapp-delay".to_string(), "90s".to_string()),
        ];
        let (delay, rest) = take_delay(headers).unwrap();
        assert_eq!(delay, Some(Duration::from_secs(90)));
        assert_eq!(rest, vec![("X-Trace".to_string(), "t".to_string())]);
        for (value, refused) in [
            ("500ms", "under 1s"),
            ("soon", "invalid duration"),
            ("400days", "over a year"),
            ("1e300", "too long"),
        ] {
            let headers = vec![(DELAY.to_string(), value.to_string())];
            assert!(
                matches!(take_delay(headers), Err(Refused::Invalid(m)) if m.contains(refused)),
                "{value}"
            );
        }
    }

    fn routes(out_subjects: &str) -> PublishRoutes {
        let text = format!(
            "[service]\nname = \"s\"\n[[streams]]\nname = \"OUT\"\nsubjects = {out_subjects}\n\
             [[subscribers]]\nname = \"k\"\ncomponent = \"handler.wasm\"\nsubject = \"in.k\"\nstream = \"IN\"\ndurable = \"k\"\n"
        );
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/testdata/service.toml");
        let config = Config::parse_with(&path, &text, |_| None, &[]).unwrap();
        PublishRoutes::new(&config, &None)
    }

    #[test]
    fn a_held_output_fires_on_the_next_whole_second_after_its_delay_with_its_ttl() {
        let routes = routes(r#"["out.>", "natsapp.delayed.>"]"#);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "IN:kit:7:0");
        headers.insert("Nats-TTL", "60s");
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_454_012_250);
        let held = hold(
            &headers,
            "out.x",
            "IN:kit:7:0",
            Duration::from_secs(2),
            now,
            &routes,
        )
        .unwrap();
        let h = |name| held.headers.get(name).map(|v| v.as_str().to_string());
        assert_eq!(h("Nats-Schedule").unwrap(), "@at 2026-12-05T07:00:15Z");
        assert_eq!(h("Nats-Schedule-Target").unwrap(), "out.x");
        assert_eq!(h("Nats-Expected-Stream").unwrap(), "OUT");
        assert_eq!(h("Nats-Msg-Id").unwrap(), "IN:kit:7:0");
        assert_eq!(
            (h("Nats-TTL"), h("Nats-Schedule-TTL")),
            (None, Some("60s".into()))
        );
        assert!(held.subject.starts_with("natsapp.delayed.") && held.subject.len() == 16 + 32);
        let again = hold(
            &headers,
            "out.x",
            "IN:kit:7:0",
            Duration::from_secs(9),
            now,
            &routes,
        )
        .unwrap();
        assert_eq!(
            again.subject, held.subject,
            "a redelivery holds it on the same subject"
        );

        let on_the_second = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_454_012);
        let held = hold(
            &headers,
            "out.x",
            "IN:kit:7:0",
            Duration::from_secs(2),
            on_the_second,
            &routes,
        )
        .unwrap();
        assert_eq!(
            held.headers.get("Nats-Schedule").unwrap().as_str(),
            "@at 2026-12-05T07:00:14Z"
        );
    }

    #[test]
    fn a_delay_needs_a_stream_that_captures_both_its_subject_and_where_it_waits() {
        let routes = routes(r#"["out.>"]"#);
        let refusal = |subject: &str| {
            let held = hold(
                &HeaderMap::new(),
                subject,
                "id",
                Duration::from_secs(2),
                SystemTime::UNIX_EPOCH,
                &routes,
            );
            match held {
                Err(Refused::Invalid(m)) => m,
                other => panic!("{subject}: {other:?}"),
            }
        };
        let e = refusal("out.x");
        assert!(
            e.contains("stream \"OUT\" captures \"out.x\" but not natsapp.delayed.>"),
            "{e}"
        );
        let e = refusal("svc.x");
        assert!(e.contains("none captures \"svc.x\""), "{e}");
    }
}
