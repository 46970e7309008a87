//! The service.toml a scenario runs: the order-processor example's streams,
//! publishers and subscriber, with timeouts short enough that faults are
//! noticed and recovered from within seconds.

use anyhow::Context as _;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The stream the orders go to.
pub const INPUT_STREAM: &str = "ORDER_EVENTS";
/// The order-processor's durable pull consumer.
pub const DURABLE: &str = "order_processor_chaos";
/// The subject orders are published on.
pub const ORDER_SUBJECT: &str = "order.created";
/// (stream, subjects) declared by the service.
pub const STREAMS: [(&str, &str); 4] = [
    (INPUT_STREAM, "order.created"),
    ("ORDER_STATUS", "order.status"),
    ("INVENTORY", "inventory.>"),
    ("DEAD_LETTERS", "dlq.>"),
];

/// How the service is set up for one scenario.
pub struct ServiceSpec {
    /// Client URLs (NATS_SERVERS may override them per process).
    pub servers: Vec<String>,
    /// Replicas of every stream; `None`: the server's default (1).
    pub replicas: Option<usize>,
    /// The order-processor component.
    pub component: PathBuf,
    /// Handlers at once (also the pull batch size).
    pub concurrency: usize,
    /// The consumer's max_deliver.
    pub max_deliver: i64,
    /// Simulated work per message (the guest's `work_ms` config value).
    pub work: Duration,
    /// Every this many messages (by stream sequence) take `slow` instead; 0: none.
    pub slow_every: u64,
    /// The work of those messages (the guest's `slow_ms`).
    pub slow: Duration,
    /// The graceful stop's bound.
    pub graceful_timeout: Duration,
    /// `outputs.mode = "atomic"` (else immediate outputs with sequence ids).
    pub atomic: bool,
}

impl ServiceSpec {
    /// The consumer's ack_wait: longer than a handler may take (its 5 s
    /// limit), so a running handler is never redelivered.
    pub const ACK_WAIT: Duration = Duration::from_secs(6);

    /// The service.toml text.
    pub fn render(&self) -> String {
        let mut t = String::new();
        let servers: Vec<String> = self.servers.iter().map(|s| format!("{s:?}")).collect();
        let _ = write!(
            t,
            "# Written by natsapp-chaos: the order-processor example with fast timeouts.\n\
             [service]\n\
             name = \"chaos-order-processor\"\n\
             graceful_timeout = \"{graceful}ms\"\n\n\
             [nats]\n\
             servers = [{servers}]\n\
             allow_reconnect = true\n\
             reconnect_time_wait = \"100ms\"\n\
             max_reconnect_attempts = -1\n\
             ping_interval = \"2s\"\n\
             connect_timeout = \"2s\"\n",
            graceful = self.graceful_timeout.as_millis(),
            servers = servers.join(", "),
        );
        for (name, subject) in STREAMS {
            let _ = write!(
                t,
                "\n[[streams]]\nname = \"{name}\"\nsubjects = [\"{subject}\"]\n"
            );
            if let Some(r) = self.replicas {
                let _ = writeln!(t, "replicas = {r}");
            }
        }
        for (subject, stream) in [
            ("order.status", "ORDER_STATUS"),
            ("inventory.updates", "INVENTORY"),
        ] {
            let _ = write!(
                t,
                "\n[[publishers]]\nsubject = \"{subject}\"\nstream = \"{stream}\"\ntimeout = \"2s\"\n"
            );
        }
        let _ = write!(
            t,
            "\n[[subscribers]]\n\
             name = \"process-order\"\n\
             component = {component:?}\n\
             subject = \"{ORDER_SUBJECT}\"\n\
             stream = \"{INPUT_STREAM}\"\n\
             durable = \"{DURABLE}\"\n\
             pull = {{ batch_size = {c}, timeout = \"1s\" }}\n\
             consumer = {{ ack_wait = \"{ack_wait}s\", max_deliver = {max_deliver}, backoff = [\"200ms\", \"1s\"] }}\n\
             concurrency = {c}\n\
             dead_letter = \"dlq.order\"\n\
             limits = {{ memory = \"64MiB\", timeout = \"5s\" }}\n\
             outputs = {outputs}\n\
             config = {{ status_subject = \"order.status\", inventory_subject = \"inventory.updates\", work_ms = \"{work}\", slow_every = \"{slow_every}\", slow_ms = \"{slow}\" }}\n",
            component = self.component.display().to_string(),
            c = self.concurrency,
            ack_wait = Self::ACK_WAIT.as_secs(),
            max_deliver = self.max_deliver,
            work = self.work.as_millis(),
            slow_every = self.slow_every,
            slow = self.slow.as_millis(),
            outputs = if self.atomic {
                "{ mode = \"atomic\" }"
            } else {
                "{ ids = \"sequence\" }"
            },
        );
        t
    }

    /// Writes `service.toml` into `dir` and returns its path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("service.toml");
        std::fs::write(&path, self.render())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}
