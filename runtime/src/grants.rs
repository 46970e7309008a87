//! What a guest may reach on NATS: the subjects its `publish` and `request`
//! may name, and the headers it may set. Checked by the host before
//! anything reaches the wire.
//!
//! - A subject must match the subscriber's allow-list (`publish = […]`).
//! - System subjects — `$JS.>`, `$KV.>`, `$O.>`, `$SYS.>`, `$SRV.>`,
//!   `_INBOX.>` — are never covered by a wildcard: only an entry that names
//!   the system prefix itself (`"$KV.ORDERS.>"`) reaches them.
//! - The current message's `Reply-To` may always be published to, whatever
//!   the allow-list: the reply path, and the only way into `_INBOX.>`.
//! - `Nats-*` headers are the server's controls. A guest's `Nats-Msg-Id` is
//!   kept inside its subscriber's namespace (`<stream>:<durable>:<id>`), so
//!   one subscriber cannot suppress another's outputs; its `Nats-TTL` (a
//!   duration, 1s or more) lets the stored output expire; the others
//!   (`Nats-Rollup`, `Nats-Schedule`, `Nats-Expected-*`, …) are refused.

use crate::config::values::check_subject;
use crate::config::Subject;
use async_nats::HeaderMap;
use std::time::Duration;

/// First tokens of the subjects no wildcard reaches.
pub const SYSTEM_PREFIXES: [&str; 6] = ["$JS", "$KV", "$O", "$SYS", "$SRV", "_INBOX"];

/// Why a guest's publish or request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The request itself is malformed.
    Invalid(String),
    /// It is well-formed but not granted.
    Denied(String),
}

/// What the guest is doing, for the messages and the reply path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// `publish`
    Publish,
    /// `request`
    Request,
}

impl Use {
    fn verb(self) -> &'static str {
        match self {
            Use::Publish => "publish",
            Use::Request => "send a request",
        }
    }
}

fn first_token(subject: &str) -> &str {
    subject.split('.').next().unwrap_or(subject)
}

/// Whether `subject` is a system subject.
pub fn is_system(subject: &str) -> bool {
    SYSTEM_PREFIXES.contains(&first_token(subject))
}

/// Checks that `subscriber`, whose allow-list is `allow`, may `use` `subject`
/// while handling a message whose `Reply-To` is `reply_to`.
pub fn check_subject_grant(
    subscriber: &str,
    allow: &[Subject],
    subject: &str,
    what: Use,
    reply_to: Option<&str>,
) -> Result<(), Refused> {
    check_subject(subject).map_err(Refused::Invalid)?;
    if subject.split('.').any(|t| t == "*" || t == ">") {
        return Err(Refused::Invalid(format!(
            "cannot {} to a wildcard subject {subject:?}",
            what.verb()
        )));
    }
    if what == Use::Publish && reply_to == Some(subject) {
        return Ok(());
    }
    let system = is_system(subject);
    let granted = |p: &&Subject| {
        p.matches(subject) && (!system || first_token(p.as_str()) == first_token(subject))
    };
    if allow.iter().any(|p| granted(&p)) {
        return Ok(());
    }
    let listed: Vec<&str> = allow.iter().map(|s| s.as_str()).collect();
    let listed = if listed.is_empty() {
        "nothing".to_string()
    } else {
        listed.join(", ")
    };
    if system && allow.iter().any(|p| p.matches(subject)) {
        return Err(Refused::Denied(format!(
            "subscriber {subscriber:?} may not {} to system subject {subject:?}: a wildcard never covers {}; list the prefix itself to grant it (allowed: {listed})",
            what.verb(),
            SYSTEM_PREFIXES.map(|p| format!("{p}.>")).join(", ")
        )));
    }
    Err(Refused::Denied(format!(
        "subscriber {subscriber:?} may not {} to {subject:?} (allowed: {listed})",
        what.verb()
    )))
}

/// A guest's `Nats-TTL`: how long the stored output lives.
pub const TTL: &str = "Nats-TTL";

/// The longest `Nats-TTL` a guest may set.
pub const LONGEST_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Applies the header rules to a guest's publish: namespaces its
/// `Nats-Msg-Id` under `namespace`, writes its `Nats-TTL` in whole seconds
/// and refuses the other `Nats-*` headers.
pub fn check_guest_headers(headers: &mut HeaderMap, namespace: &str) -> Result<(), Refused> {
    let mut msg_id = None;
    let mut ttl = None;
    for (name, values) in headers.iter() {
        let n: &str = name.as_ref();
        if !n.to_ascii_lowercase().starts_with("nats-") {
            continue;
        }
        if n != "Nats-Msg-Id" && n != TTL {
            return Err(Refused::Denied(format!(
                "header {n:?} is reserved: a handler may set Nats-Msg-Id and Nats-TTL but no other Nats-* header"
            )));
        }
        if values.len() > 1 {
            return Err(Refused::Invalid(format!("more than one {n}")));
        }
        let value = values.first().map(|v| v.as_str().to_string());
        if n == TTL {
            ttl = value;
        } else {
            msg_id = value;
        }
    }
    if let Some(id) = msg_id {
        headers.insert("Nats-Msg-Id", format!("{namespace}:{id}").as_str());
    }
    if let Some(ttl) = ttl {
        let d = crate::config::Dur::parse(&ttl)
            .map_err(|e| Refused::Invalid(format!("{TTL}: {e}")))?
            .0;
        if d < Duration::from_secs(1) {
            return Err(Refused::Invalid(format!(
                "{TTL}: {ttl:?} is under 1s, the shortest time-to-live a stream keeps"
            )));
        }
        if d > LONGEST_TTL {
            return Err(Refused::Invalid(format!(
                "{TTL}: {ttl:?} is over ten years, the longest time-to-live a handler may give"
            )));
        }
        // The server reads whole seconds: a part of one is rounded up.
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        headers.insert(TTL, format!("{secs}s").as_str());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(list: &[&str]) -> Vec<Subject> {
        list.iter()
            .map(|s| Subject::try_from(s.to_string()).unwrap())
            .collect()
    }

    #[test]
    fn allow_list() {
        let allow = subjects(&["order.status", "inventory.>"]);
        let check = |subject: &str| check_subject_grant("s", &allow, subject, Use::Publish, None);
        assert_eq!(check("order.status"), Ok(()));
        assert_eq!(check("inventory.eu.item"), Ok(()));
        assert_eq!(
            check("order.created"),
            Err(Refused::Denied(
                "subscriber \"s\" may not publish to \"order.created\" (allowed: order.status, inventory.>)".into()
            ))
        );
        assert_eq!(
            check_subject_grant("s", &[], "a.b", Use::Request, None),
            Err(Refused::Denied(
                "subscriber \"s\" may not send a request to \"a.b\" (allowed: nothing)".into()
            ))
        );
        assert!(matches!(check("inventory.*"), Err(Refused::Invalid(_))));
        assert!(matches!(check("bad subject"), Err(Refused::Invalid(_))));
    }

    #[test]
    fn wildcards_never_reach_system_subjects() {
        for pattern in [">", "*.>", "$JS.API.>"] {
            let allow = subjects(&[pattern]);
            for subject in [
                "$JS.API.STREAM.DELETE.ORDERS",
                "$JS.ACK.ORDERS.d.1.2.3.4.5",
                "$KV.CONFIG.k",
                "$O.B.x",
                "$SYS.REQ.SERVER.PING",
                "$SRV.PING",
                "_INBOX.abc",
            ] {
                let granted = check_subject_grant("s", &allow, subject, Use::Request, None).is_ok();
                let named = pattern == "$JS.API.>" && subject.starts_with("$JS.API.");
                assert_eq!(granted, named, "{pattern} → {subject}");
            }
        }
        let err = check_subject_grant("s", &subjects(&[">"]), "$SYS.REQ.X", Use::Publish, None)
            .unwrap_err();
        assert!(
            matches!(&err, Refused::Denied(m) if m.contains("a wildcard never covers $JS.>, $KV.>, $O.>, $SYS.>, $SRV.>, _INBOX.>")),
            "{err:?}"
        );
        assert_eq!(
            check_subject_grant(
                "s",
                &subjects(&["$KV.ORDERS.>"]),
                "$KV.ORDERS.o1",
                Use::Publish,
                None
            ),
            Ok(())
        );
    }

    #[test]
    fn the_reply_path_is_always_open_for_publish() {
        let reply = Some("_INBOX.caller.7");
        assert_eq!(
            check_subject_grant("s", &[], "_INBOX.caller.7", Use::Publish, reply),
            Ok(())
        );
        assert!(check_subject_grant("s", &[], "_INBOX.caller.8", Use::Publish, reply).is_err());
        assert!(
            check_subject_grant("s", &[], "_INBOX.caller.7", Use::Request, reply).is_err(),
            "the reply path is for answering, not for requests"
        );
    }

    #[test]
    fn guest_headers() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "order-7");
        h.insert("X-Trace", "t");
        check_guest_headers(&mut h, "IN:kit").unwrap();
        assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), "IN:kit:order-7");
        assert_eq!(h.get("X-Trace").unwrap().as_str(), "t");
        let mut h = HeaderMap::new();
        h.insert("Nats-TTL", "1m");
        check_guest_headers(&mut h, "IN:kit").unwrap();
        assert_eq!(h.get("Nats-TTL").unwrap().as_str(), "60s");
        h.insert("Nats-TTL", "1500ms");
        check_guest_headers(&mut h, "IN:kit").unwrap();
        assert_eq!(h.get("Nats-TTL").unwrap().as_str(), "2s", "rounded up");
        for (value, refused) in [
            ("200ms", "under 1s"),
            ("20years", "over ten years"),
            ("1e300", "too long"),
        ] {
            h.insert("Nats-TTL", value);
            assert!(
                matches!(check_guest_headers(&mut h, "IN:kit"), Err(Refused::Invalid(m)) if m.contains(refused)),
                "{value}"
            );
        }
        for reserved in [
            "Nats-Rollup",
            "Nats-Schedule",
            "Nats-Expected-Last-Sequence",
            "nats-msg-ttl",
        ] {
            let mut h = HeaderMap::new();
            h.insert(reserved, "x");
            assert!(
                matches!(check_guest_headers(&mut h, "IN:kit"), Err(Refused::Denied(m)) if m.contains(reserved)),
                "{reserved}"
            );
        }
    }
}
