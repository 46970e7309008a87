//! Integration tests: real nats-server per test, real components.

mod admin;
mod atomic;
mod cli;
mod concurrency;
mod deploy;
mod dev;
mod endpoints;
mod flow;
mod guests;
mod hostile;
mod http;
mod invoke;
mod keyvalue;
mod languages;
mod later;
mod logs;
mod micro;
mod objects;
mod oci;
mod packages;
mod pipelined;
mod publish;
mod redrive;
mod reliability;
mod reload;
mod resilience;
mod rollout;
mod scaffold;
mod schedules;
mod sdks;
mod semantics;
mod startup;
mod tenants;
mod traces;
mod watch;

/// A server configuration with three accounts, each with JetStream and a
/// user named after it (password: the same): the service's own, `svc`,
/// and two tenants', `acme` and `beta`.
pub const ACCOUNTS: &str = r#"
accounts {
  SVC: { jetstream: enabled, users: [ { user: svc, password: svc } ] }
  ACME: { jetstream: enabled, users: [ { user: acme, password: acme } ] }
  BETA: { jetstream: enabled, users: [ { user: beta, password: beta }, { user: beta2, password: beta2 } ] }
}
"#;

/// JetStream as `user` (whose password is the same) on `server`.
pub async fn jetstream_as(
    server: &natsapp_wasm_tests::NatsServer,
    user: &str,
) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
        .connect(server.url())
        .await
        .unwrap();
    async_nats::jetstream::new(client)
}

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

/// A running service with its server and clients, for one test. Fields
/// drop in order: the service stops before its server does.
pub struct Kit {
    /// The service.
    pub running: natsapp_wasm_tests::Running,
    /// A core client on the server.
    pub client: async_nats::Client,
    /// JetStream on the server.
    pub js: async_nats::jetstream::Context,
    /// The server.
    pub server: natsapp_wasm_tests::NatsServer,
}

impl Kit {
    /// Starts a server and the service described by `toml` on it.
    pub async fn start(toml: impl AsRef<str>) -> Kit {
        let server = natsapp_wasm_tests::NatsServer::start();
        let file = natsapp_wasm_tests::ServiceFile::new(&server, toml.as_ref());
        let running = natsapp_wasm_tests::Running::start(&file).await;
        let client = server.client().await;
        let js = server.jetstream().await;
        Kit {
            running,
            client,
            js,
            server,
        }
    }
}

const DLQ: &str = r#"
[[streams]]
name = "DLQ"
subjects = ["dlq.>"]
"#;

/// The service with a DLQ stream declared before the subscriber.
pub fn with_dlq(extra: &str) -> String {
    kit_service(extra).replacen("[[subscribers]]", &format!("{DLQ}\n[[subscribers]]"), 1)
}

pub async fn dead_letter(
    js: &async_nats::jetstream::Context,
    seq: u64,
) -> async_nats::jetstream::message::StreamMessage {
    natsapp_wasm_tests::stored(js, "DLQ", seq).await
}

pub fn header<'a>(m: &'a async_nats::jetstream::message::StreamMessage, name: &str) -> &'a str {
    m.headers
        .get(name)
        .map(|v| v.as_str())
        .unwrap_or_else(|| panic!("no header {name} in {:?}", m.headers))
}
