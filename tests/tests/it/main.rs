//! Integration tests: real nats-server per test, real components.

mod cli;
mod concurrency;
mod flow;
mod guests;
mod publish;
mod semantics;
mod startup;

/// A service with the testkit guest on `in.kit` (stream IN) and an OUT
/// stream capturing `out.>`; `extra` is appended to the subscriber.
pub fn kit_service(extra: &str) -> String {
    format!(
        r#"
[service]
name = "kit-service"
graceful_timeout = "5s"

[nats]
servers = ["{{url}}"]

[[streams]]
name = "IN"
subjects = ["in.>"]

[[streams]]
name = "OUT"
subjects = ["out.>"]

[[subscribers]]
name = "kit"
component = "{{testkit}}"
subject = "in.kit"
stream = "IN"
durable = "kit"
publish = ["testkit.out.>", "out.>", "svc.>"]
{extra}
"#
    )
}
