//! Validating `[[schedules]]`: messages nats-server publishes on a
//! schedule (ADR-51), each held on a subject of its own that its stream
//! captures and no subscriber reads.

use super::super::raw::RawSchedule;
use super::super::values::subject_matches;
use super::super::{
    is_token, schedule_subject, stream_named, ScheduleConfig, ScheduleWhen, StreamConfig,
    SubscriberConfig, TenantConfig, DELAYED_PREFIX, SCHEDULES_PREFIX,
};
use super::handler::no_such_tenant;
use super::Validator;
use std::time::Duration;

/// The shortest interval nats-server schedules.
const SHORTEST_EVERY: Duration = Duration::from_secs(1);

/// Cron shorthands nats-server knows.
const CRON_SHORTHANDS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

impl<E: Fn(&str) -> Option<String>> Validator<'_, E> {
    pub(super) fn schedules(
        &mut self,
        raw: Vec<RawSchedule>,
        service: &str,
        streams: &[StreamConfig],
        subscribers: &[SubscriberConfig],
        tenants: &[TenantConfig],
    ) -> Vec<ScheduleConfig> {
        if !raw.is_empty() && !is_token(service) {
            self.problem(
                "service.name",
                "must be letters, digits, '-' and '_' when the file has [[schedules]]: it names the subjects they are held on",
            );
        }
        self.unique(raw.iter().map(|s| s.name.clone()), "schedules", "name");
        self.unique(
            raw.iter().map(|s| s.subject.to_string()),
            "schedules",
            "subject",
        );
        raw.into_iter()
            .enumerate()
            .filter_map(|(i, s)| self.schedule(i, s, service, streams, subscribers, tenants))
            .collect()
    }

    /// Refuses a subscriber that would read guests' delayed outputs from
    /// where they wait (`natsapp.delayed.>`) in a stream the file declares
    /// with schedules allowed (no other can hold them).
    pub(super) fn delayed_readers(
        &mut self,
        streams: &[StreamConfig],
        subscribers: &[SubscriberConfig],
    ) {
        let waiting = format!("{DELAYED_PREFIX}.x");
        for (i, sub) in subscribers.iter().enumerate() {
            let holds_delayed = streams.iter().any(|st| {
                st.name == sub.stream
                    && st.allow_schedules
                    && st.seen_by(&sub.tenant)
                    && st
                        .subjects
                        .iter()
                        .any(|p| subject_matches(p.as_str(), &waiting))
            });
            if holds_delayed && subject_matches(sub.subject.as_str(), &waiting) {
                self.problem(
                    format!("subscribers[{i}] ({:?}).subject", sub.name),
                    format!(
                        "{:?} also reads {DELAYED_PREFIX}.>, where stream {:?} holds delayed outputs until they fire: narrow it",
                        sub.subject.as_str(),
                        sub.stream.as_str()
                    ),
                );
            }
        }
    }

    fn schedule(
        &mut self,
        i: usize,
        s: RawSchedule,
        service: &str,
        streams: &[StreamConfig],
        subscribers: &[SubscriberConfig],
        tenants: &[TenantConfig],
    ) -> Option<ScheduleConfig> {
        let key = format!("schedules[{i}] ({:?}){}", s.name, super::origin(&s.origin));
        if let Some(name) = &s.tenant {
            if !tenants.iter().any(|t| &t.name == name) {
                self.problem(format!("{key}.tenant"), no_such_tenant(name, tenants));
            } else if !is_token(name) {
                self.problem(
                    format!("{key}.tenant"),
                    format!("tenant {name:?} must be letters, digits, '-' and '_' to have schedules: it names the subjects they are held on"),
                );
            }
        }
        if !is_token(&s.name) {
            self.problem(
                format!("{key}.name"),
                "must be letters, digits, '-' and '_': it names the subject the schedule is held on",
            );
        }
        if s.subject.has_wildcards() {
            self.problem(
                format!("{key}.subject"),
                "a schedule publishes to one subject: no wildcards",
            );
        }
        if subject_matches(&format!("{SCHEDULES_PREFIX}.>"), s.subject.as_str()) {
            self.problem(
                format!("{key}.subject"),
                format!("{SCHEDULES_PREFIX}.> holds the schedules themselves: publish elsewhere"),
            );
        }
        for (name, value) in &s.headers {
            if name.to_ascii_lowercase().starts_with("nats-") {
                self.problem(
                    format!("{key}.headers"),
                    format!("{name:?}: Nats- headers are nats-server's and the runtime's to set"),
                );
            } else if name.parse::<async_nats::HeaderName>().is_err() {
                self.problem(
                    format!("{key}.headers"),
                    format!("{name:?} is not a header name (printable ASCII, no spaces or ':')"),
                );
            }
            if value.parse::<async_nats::HeaderValue>().is_err() {
                self.problem(
                    format!("{key}.headers"),
                    format!("the value of {name:?} must not hold a line break"),
                );
            }
        }
        let when = match (&s.cron, &s.every, &s.at) {
            (Some(cron), None, None) => self.cron(&key, cron),
            (None, Some(every), None) if every.0 < SHORTEST_EVERY => {
                self.problem(
                    format!("{key}.every"),
                    "must be 1s or more (nats-server's shortest interval)",
                );
                None
            }
            (None, Some(every), None) => Some(ScheduleWhen::Every(every.0)),
            (None, None, Some(at)) => match async_nats::datetime::parse_rfc3339(at) {
                Ok(_) => Some(ScheduleWhen::At(at.clone())),
                Err(_) => {
                    self.problem(
                        format!("{key}.at"),
                        format!("{at:?} is not an RFC 3339 time with its offset, such as \"2027-01-01T00:00:00Z\""),
                    );
                    None
                }
            },
            _ => {
                self.problem(key.clone(), "give exactly one of cron, every and at");
                None
            }
        };
        let held_on = schedule_subject(service, s.tenant.as_deref(), &s.name);
        // The stream as the schedule's account sees it: a tenant's own
        // first, then the platform's entry (declared in the tenant's
        // account for a tenant's schedule).
        let declared = stream_named(streams, s.stream.as_str(), &s.tenant);
        if let Some(stream) = declared {
            if !stream.allow_schedules {
                self.problem(
                    format!("{key}.stream"),
                    format!(
                        "stream {:?} must allow schedules: set allow_schedules = true on it",
                        s.stream.as_str()
                    ),
                );
            }
            for (what, subject) in [
                ("its subject", s.subject.as_str()),
                ("the subject it is held on", &held_on),
            ] {
                if !stream.subjects.is_empty()
                    && !stream.subjects.iter().any(|p| p.matches(subject))
                {
                    self.problem(
                        format!("{key}.stream"),
                        format!(
                            "stream {:?} does not capture {what}, {subject:?}: add it (or \"{SCHEDULES_PREFIX}.>\") to its subjects",
                            s.stream.as_str()
                        ),
                    );
                }
            }
        }
        for sub in subscribers
            .iter()
            .filter(|sub| sub.stream == s.stream && sub.tenant == s.tenant)
        {
            if subject_matches(sub.subject.as_str(), &held_on) {
                self.problem(
                    format!("{key}.name"),
                    format!(
                        "subscriber {:?} (subject {:?}) would read the schedule itself, held on {held_on:?}: narrow its subject",
                        sub.name,
                        sub.subject.as_str()
                    ),
                );
            }
        }
        Some(ScheduleConfig {
            name: s.name,
            subject: s.subject,
            when: when?,
            payload: s.payload,
            headers: s.headers,
            stream: s.stream,
            tenant: s.tenant,
            held_on,
        })
    }

    fn cron(&mut self, key: &str, cron: &str) -> Option<ScheduleWhen> {
        let shorthand = CRON_SHORTHANDS.contains(&cron.trim());
        if shorthand || cron.split_whitespace().count() == 6 {
            return Some(ScheduleWhen::Cron(cron.trim().to_string()));
        }
        self.problem(
            format!("{key}.cron"),
            format!(
                "{cron:?} is not a cron pattern of six fields, seconds first (\"0 */5 * * * *\"), nor one of {}",
                CRON_SHORTHANDS.join(", ")
            ),
        );
        None
    }
}
