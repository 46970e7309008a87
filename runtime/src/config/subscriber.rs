//! `[[subscribers]]` as validated, and how their component instances are
//! used.

use super::{
    defaults, values, ComponentSource, FragmentKey, KvAccess, Name, Origin, OutputIds, OutputsMode,
    Subject, Watch,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// `[[subscribers]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberConfig {
    /// Name in logs and statistics.
    pub name: String,
    /// Its tenant (`None`: the service's own identity and no tenant quotas).
    pub tenant: Option<String>,
    /// Publishes and requests one message's handler may make (its tenant's quota).
    pub publishes_per_message: u32,
    /// Where its component comes from.
    pub component: ComponentSource,
    /// The key-value fragment that declares it (`None`: a file).
    pub fragment: Option<FragmentKey>,
    /// Filter subject (`$KV.<bucket>.<keys>` for a watch).
    pub subject: Subject,
    /// Stream (`KV_<bucket>` for a watch).
    pub stream: Name,
    /// `watch = { … }`: the bucket whose changes it handles, and where it starts.
    pub watch: Option<Watch>,
    /// Durable consumer name.
    pub durable: Name,
    /// Most messages per pull.
    pub batch_size: usize,
    /// How long one pull waits.
    pub pull_timeout: Duration,
    /// Consumer ack wait.
    pub ack_wait: Duration,
    /// `None`: unlimited deliveries.
    pub max_deliver: Option<u32>,
    /// Redelivery delays by delivery count.
    pub backoff: Vec<Duration>,
    /// Consumer max ack pending (`-1`: unlimited).
    pub max_ack_pending: i64,
    /// Handlers at once.
    pub concurrency: usize,
    /// Dead-letter subject.
    pub dead_letter: Option<Subject>,
    /// Subjects the handler may publish and send requests to.
    pub publish: Vec<Subject>,
    /// Key-value buckets the handler may use, and how.
    pub kv: BTreeMap<String, KvAccess>,
    /// Origins the handler may send HTTP requests to.
    pub http: Vec<Origin>,
    /// The longest an HTTP request may wait: to connect, for its response,
    /// between body chunks.
    pub http_timeout: Duration,
    /// The largest HTTP response body, in bytes.
    pub http_response: u64,
    /// Guest memory cap in bytes.
    pub memory: u64,
    /// Wall-clock limit per message.
    pub timeout: Duration,
    /// wasi:config values.
    pub config: BTreeMap<String, String>,
    /// The `config` keys whose values are secret.
    pub secrets: std::collections::BTreeSet<String>,
    /// Wait for the server to confirm each ack.
    pub double_ack: bool,
    /// Fresh or reused instances.
    pub instances: Instances,
    /// The `Nats-Msg-Id` scheme of the handler's outputs.
    pub output_ids: OutputIds,
    /// When the handler's outputs are stored.
    pub outputs_mode: OutputsMode,
    /// With atomic outputs: the most bytes one message's outputs may hold.
    pub held_outputs: u64,
}

impl SubscriberConfig {
    /// Whether its outputs are atomic and its grants reach a subject one
    /// of `captured` (a stream's subjects) matches.
    pub fn writes_atomically_to(&self, captured: &[Subject]) -> bool {
        self.outputs_mode == OutputsMode::Atomic
            && self.publish.iter().any(|p| {
                captured
                    .iter()
                    .any(|c| values::subjects_intersect(p.as_str(), c.as_str()))
            })
    }

    /// How often a message being handled (or committed, or dead-lettered)
    /// is reported in progress.
    pub fn progress_every(&self) -> Duration {
        self.ack_wait / defaults::PROGRESS_PER_ACK_WAIT
    }

    /// The consumer's `max_deliver` on the server: one more than the
    /// file's, or -1 for no limit. The handler runs on deliveries up to
    /// `max_deliver`; the extra delivery only settles a message whose last
    /// handled delivery did not finish (shutdown, crash, a nak), so it is
    /// dead-lettered or terminated rather than dropped by the server.
    pub fn server_max_deliver(&self) -> i64 {
        self.max_deliver.map_or(-1, |n| i64::from(n) + 1)
    }

    /// The longest time from a message's first delivery to the start of
    /// its last handled one: every delivery before it runs to the time
    /// limit and waits its backoff step. `None` when deliveries are unlimited.
    pub fn redelivery_span(&self) -> Option<Duration> {
        let max = self.max_deliver?;
        let step = |d: u32| {
            self.backoff
                .get((d as usize).saturating_sub(1))
                .or(self.backoff.last())
                .copied()
                .unwrap_or_default()
        };
        Some((1..max).map(|d| self.timeout + step(d)).sum::<Duration>())
    }
}

/// How a subscriber's component instances are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    /// A fresh instance (and store) for every message: nothing a message
    /// leaves in guest memory reaches the next one. Up to `prepared` of
    /// them are made ahead of need, while the handler is busy.
    PerMessage {
        /// Fresh instances kept ready at most (0: none are made ahead).
        prepared: usize,
    },
    /// Warm instances, at most `concurrency`, reused while healthy; an
    /// instance that trapped or hit a limit is dropped. `max_uses` retires
    /// an instance after that many messages.
    Reuse {
        /// Messages per instance before it is replaced.
        max_uses: Option<u64>,
    },
}
