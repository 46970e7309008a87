//! `[[schedules]]` as validated: when a schedule fires, and the subject
//! its message is held on.

use super::{Name, Subject};
use std::collections::BTreeMap;
use std::time::Duration;

/// `[[schedules]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Its name.
    pub name: String,
    /// Where each firing is published.
    pub subject: Subject,
    /// When it fires.
    pub when: ScheduleWhen,
    /// What each firing carries.
    pub payload: String,
    /// Headers each firing carries.
    pub headers: BTreeMap<String, String>,
    /// The stream holding it.
    pub stream: Name,
    /// The tenant whose identity puts it, into its account's stream
    /// (`None`: the service's own).
    pub tenant: Option<String>,
    /// The subject the schedule message is held on:
    /// `natsapp.schedules.<service>.<name>`, or
    /// `natsapp.schedules.<service>.<tenant>.<name>` for a tenant's.
    pub held_on: String,
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleWhen {
    /// A cron pattern, six fields, seconds first, in UTC.
    Cron(String),
    /// At this interval.
    Every(Duration),
    /// Once, at this RFC 3339 time.
    At(String),
}

impl ScheduleWhen {
    /// The `Nats-Schedule` header's value.
    pub fn header(&self) -> String {
        match self {
            ScheduleWhen::Cron(pattern) => pattern.clone(),
            ScheduleWhen::Every(d) => format!("@every {}ms", d.as_millis()),
            ScheduleWhen::At(at) => format!("@at {at}"),
        }
    }
}

/// The subject prefix of the subjects schedule messages are held on.
pub const SCHEDULES_PREFIX: &str = "natsapp.schedules";

/// The subject prefix a guest's delayed outputs are held on until they
/// fire (`Natsapp-Delay`), in the stream that captures their subject.
pub const DELAYED_PREFIX: &str = "natsapp.delayed";

/// Whether `name` is one subject token of letters, digits, `-` and `_`,
/// as the names in the subjects schedules are held on must be.
pub fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The subject schedule `name` of `service` is held on,
/// `natsapp.schedules.<service>.<name>`, or for a tenant's,
/// `natsapp.schedules.<service>.<tenant>.<name>` (validation keeps each
/// one token): each owner's schedules are told apart by their subjects,
/// even when a tenant shares the service's account.
pub fn schedule_subject(service: &str, tenant: Option<&str>, name: &str) -> String {
    match tenant {
        None => format!("{SCHEDULES_PREFIX}.{service}.{name}"),
        Some(tenant) => format!("{SCHEDULES_PREFIX}.{service}.{tenant}.{name}"),
    }
}
