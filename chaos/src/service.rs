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

/// The durable's settings a scenario runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ConsumerSettings {
    /// The suite's own: up to 5 deliveries, backoff 200 ms then 1 s.
    #[default]
    Chaos,
    /// The order-processor example's (`examples/order-processor/service.toml`):
    /// up to 3 deliveries, backoff 1 s then 10 s.
    Example,
}

/// How the service is set up for one scenario.
#[derive(Clone)]
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
    /// The consumer's ack_wait.
    pub ack_wait: Duration,
    /// The runtime's backoff steps between deliveries of a failed message.
    pub backoff: Vec<Duration>,
    /// The pull requests' expiry.
    pub pull_timeout: Duration,
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
    /// The order processor on `servers` with the durable `settings`, 4
    /// handlers and no simulated work. `ack_wait` is the runtime's default
    /// (10 s): in-progress signals keep a running handler's message, so it
    /// need not cover the slowest handler.
    pub fn new(
        servers: Vec<String>,
        replicas: Option<usize>,
        component: PathBuf,
        graceful_timeout: Duration,
        settings: ConsumerSettings,
    ) -> ServiceSpec {
        let (max_deliver, backoff) = match settings {
            ConsumerSettings::Chaos => {
                (5, vec![Duration::from_millis(200), Duration::from_secs(1)])
            }
            ConsumerSettings::Example => (3, vec![Duration::from_secs(1), Duration::from_secs(10)]),
        };
        ServiceSpec {
            servers,
            replicas,
            component,
            concurrency: 4,
            max_deliver,
            ack_wait: Duration::from_secs(10),
            backoff,
            pull_timeout: Duration::from_secs(1),
            work: Duration::ZERO,
            slow_every: 0,
            slow: Duration::ZERO,
            graceful_timeout,
            atomic: false,
        }
    }

    /// The `consumer = { … }` line of the service.toml.
    pub fn consumer_line(&self) -> String {
        let backoff: Vec<String> = self
            .backoff
            .iter()
            .map(|d| format!("\"{}\"", humanize(*d)))
            .collect();
        format!(
            "consumer = {{ ack_wait = \"{}\", max_deliver = {}, backoff = [{}] }}",
            humanize(self.ack_wait),
            self.max_deliver,
            backoff.join(", ")
        )
    }

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
             pull = {{ batch_size = {c}, timeout = \"{pull_timeout}\" }}\n\
             {consumer}\n\
             concurrency = {c}\n\
             dead_letter = \"dlq.order\"\n\
             limits = {{ memory = \"64MiB\", timeout = \"5s\" }}\n\
             outputs = {outputs}\n\
             config = {{ status_subject = \"order.status\", inventory_subject = \"inventory.updates\", work_ms = \"{work}\", slow_every = \"{slow_every}\", slow_ms = \"{slow}\" }}\n",
            component = self.component.display().to_string(),
            c = self.concurrency,
            pull_timeout = humanize(self.pull_timeout),
            consumer = self.consumer_line(),
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

/// `d` as a service.toml duration: whole seconds as `"Ns"`, else `"Nms"`.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_settings_are_the_examples() {
        let spec = ServiceSpec::new(
            Vec::new(),
            None,
            PathBuf::new(),
            Duration::from_secs(5),
            ConsumerSettings::Example,
        );
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/order-processor/service.toml"),
        )
        .unwrap();
        assert!(
            example.contains(&spec.consumer_line()),
            "examples/order-processor/service.toml has no line {:?}",
            spec.consumer_line()
        );
    }
}
