//! Test support: a real nats-server per test (random port, own store,
//! killed and removed on drop), the built guest components, and helpers
//! to write a service.toml, run a service in-process and poll with a deadline.

use async_nats::jetstream;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

pub mod oci;
pub mod otlp;
pub mod web;

/// Paths of the guest components built by build.rs.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub use nats_test_server::streams::*;
pub use nats_test_server::{nats_server_bin, NatsServer};

/// A directory holding a service.toml for one test.
pub struct ServiceFile {
    dir: tempfile::TempDir,
}

impl ServiceFile {
    /// Writes `toml` (with `{url}` replaced by the server's URL) to service.toml.
    pub fn new(server: &NatsServer, toml: &str) -> ServiceFile {
        let file = ServiceFile {
            dir: tempfile::tempdir().unwrap(),
        };
        file.write(server, "service.toml", toml);
        file
    }

    /// Writes another file (an included one) beside service.toml, with the
    /// same placeholders replaced.
    pub fn write(&self, server: &NatsServer, name: &str, toml: &str) {
        let text = toml
            .replace("{url}", server.url())
            .replace("{testkit}", guests::TESTKIT)
            .replace("{echo}", guests::ECHO)
            .replace("{noop}", guests::NOOP)
            .replace("{order_processor}", guests::ORDER_PROCESSOR)
            .replace("{not_a_handler}", guests::NOT_A_HANDLER)
            .replace("{other_version}", guests::OTHER_VERSION)
            .replace("{unknown_import}", guests::UNKNOWN_IMPORT);
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("service.toml")
    }

    /// The validated configuration (no environment overrides).
    pub fn config(&self) -> natsapp_wasm::config::Config {
        natsapp_wasm::config::Config::load_with_env(self.path(), |_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A service running in-process; stops gracefully on `stop` or drop.
pub struct Running {
    /// Its statistics.
    pub stats: natsapp_wasm::observability::stats::Stats,
    /// Where its admin endpoint listens, when the file sets one.
    pub admin: Option<std::net::SocketAddr>,
    /// Asks it to reload its file and components.
    pub reloader: natsapp_wasm::reload::Reloader,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<
        tokio::task::JoinHandle<
            Result<natsapp_wasm::observability::stats::StatsSnapshot, natsapp_wasm::Error>,
        >,
    >,
}

impl Running {
    /// Starts the service of `file`; panics with the error if it cannot start.
    pub async fn start(file: &ServiceFile) -> Running {
        natsapp_wasm::observability::logs::init_for_tests();
        let service = natsapp_wasm::Service::start(file.config())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "service did not start: {}",
                    natsapp_wasm::error::ErrorChain(&e)
                )
            });
        let stats = service.stats();
        let admin = service.admin_addr();
        let reloader = service.reloader();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(service.run(async {
            let _ = rx.await;
        }));
        Running {
            stats,
            admin,
            reloader,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// One subscriber's statistics.
    pub fn subscriber(&self, name: &str) -> natsapp_wasm::observability::stats::SubscriberSnapshot {
        self.stats
            .subscriber(name)
            .unwrap_or_else(|| panic!("no subscriber {name:?}"))
    }

    /// Stops gracefully and returns the final statistics.
    pub async fn stop(mut self) -> natsapp_wasm::observability::stats::StatsSnapshot {
        let _ = self.stop.take().unwrap().send(());
        self.task
            .take()
            .unwrap()
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("service failed: {e}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Subscribes to `subject` (core NATS) before the test publishes.
pub async fn subscribe(client: &async_nats::Client, subject: &str) -> async_nats::Subscriber {
    let sub = client.subscribe(subject.to_string()).await.unwrap();
    client.flush().await.unwrap();
    sub
}

/// Whether nothing arrives on `sub` for `within`.
pub async fn silent(sub: &mut async_nats::Subscriber, within: Duration) -> bool {
    use futures::StreamExt;
    tokio::time::timeout(within, sub.next()).await.is_err()
}

/// How many messages arrive on `sub` before it is silent for `quiet`.
pub async fn count_until_silent(sub: &mut async_nats::Subscriber, quiet: Duration) -> usize {
    let mut n = 0;
    while !silent(sub, quiet).await {
        n += 1;
    }
    n
}

/// The next message on `sub` within `within`, parsed as JSON.
pub async fn next_json(sub: &mut async_nats::Subscriber, within: Duration) -> serde_json::Value {
    use futures::StreamExt;
    let msg = tokio::time::timeout(within, sub.next())
        .await
        .expect("a message in time")
        .expect("subscription open");
    serde_json::from_slice(&msg.payload)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", msg.payload))
}

/// Message `seq` of `stream`, once the stream holds `seq` messages.
pub async fn stored(
    js: &jetstream::Context,
    stream: &str,
    seq: u64,
) -> jetstream::message::StreamMessage {
    stream_has(js, stream, seq).await;
    js.get_stream(stream)
        .await
        .unwrap()
        .get_raw_message(seq)
        .await
        .unwrap()
}

/// Publishes `payload` with headers to a stream subject and waits for the PubAck.
pub async fn js_publish_with_headers(
    js: &jetstream::Context,
    subject: &str,
    headers: &[(&str, &str)],
    payload: &str,
) -> u64 {
    let mut map = async_nats::HeaderMap::new();
    for (n, v) in headers {
        map.insert(*n, *v);
    }
    js.publish_with_headers(subject.to_string(), map, payload.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// Waits until `check` holds for a subscriber's statistics, returning them.
pub async fn stats_until(
    running: &Running,
    name: &str,
    what: &str,
    check: impl Fn(&natsapp_wasm::observability::stats::SubscriberSnapshot) -> bool,
) -> natsapp_wasm::observability::stats::SubscriberSnapshot {
    eventually(Duration::from_secs(20), what, || async {
        let s = running.subscriber(name);
        check(&s).then_some(s)
    })
    .await
}

/// A subscriber's statistics once nothing is in flight. The runtime counts
/// a settlement just after sending it, so read the counters with this rather
/// than directly once `drained` has seen the server agree.
pub async fn settled_stats(
    running: &Running,
    name: &str,
) -> natsapp_wasm::observability::stats::SubscriberSnapshot {
    stats_until(running, name, "every delivery settled", |s| {
        s.in_flight == 0
    })
    .await
}

/// Runs `command` to completion; panics with its output unless it succeeded.
pub fn succeeds(command: &mut std::process::Command) -> std::process::Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The natsapp-wasm binary of this build (next to this program, or one
/// folder up for test binaries in `deps/`).
pub fn natsapp_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let candidates = [
        dir.join("natsapp-wasm"),
        dir.parent().unwrap().join("natsapp-wasm"),
    ];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| {
        panic!("{} is missing: build it first with `cargo build -p natsapp-wasm` (./scripts/test.sh does)", candidates[1].display())
    })
}

/// Starts `natsapp-wasm run FILE` with its log (stderr) in `log`, free of the
/// caller's NATS_SERVERS, NATS_DEBUG and RUST_LOG, plus `env`.
pub fn spawn_run(file: &ServiceFile, log: &Path, env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(natsapp_bin());
    cmd.args(["run", file.path().to_str().unwrap()])
        .env_remove("NATS_SERVERS")
        .env_remove("NATS_DEBUG")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd.spawn().unwrap()
}

/// Waits up to `within` for `child` to exit by itself; its exit code.
pub fn wait_exit(child: &mut std::process::Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited by itself, not by a signal");
        }
        assert!(
            Instant::now() < deadline,
            "natsapp-wasm did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on `addr` over HTTP/1.1: the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, body.to_string())
}

/// Sends SIGHUP to `child`.
pub fn sighup(child: &std::process::Child) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &std::process::Child) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

/// A service.toml with tenant "acme" (`grants = { GRANTS }`) and its testkit
/// subscriber "charge" (`KEYS` added), written to a fresh folder; the
/// folder (kept alive) and the file's path.
pub fn acme_service(grants: &str, keys: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
[service]
name = "platform"

[[tenants]]
name = "acme"
grants = {{ {grants} }}

[[subscribers]]
name = "charge"
tenant = "acme"
component = "{}"
subject = "acme.in"
stream = "ACME_IN"
durable = "charge"
{keys}
"#,
        guests::TESTKIT
    );
    let path = dir.path().join("service.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

/// A testkit message whose handler waits at the test's [`Gate`] until it
/// opens (a request to `svc.gate`, answered by the gate), then acks.
pub const GATED: &str = r#"{"op":"request","subject":"svc.gate","data":"","timeout_ms":120000}"#;

/// Where [`GATED`] handlers wait: each request that arrives is a handler
/// that started, and it finishes when the test opens the gate.
pub struct Gate {
    client: async_nats::Client,
    requests: async_nats::Subscriber,
    waiting: Vec<async_nats::Subject>,
}

impl Gate {
    /// A closed gate on `client`'s server.
    pub async fn new(client: &async_nats::Client) -> Gate {
        Gate {
            client: client.clone(),
            requests: subscribe(client, "svc.gate").await,
            waiting: Vec::new(),
        }
    }

    /// Waits until `n` handlers in all have arrived at the gate.
    pub async fn arrived(&mut self, n: usize) {
        use futures::StreamExt;
        while self.waiting.len() < n {
            let request = tokio::time::timeout(Duration::from_secs(60), self.requests.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{} of {n} handlers reached the gate in 60s",
                        self.waiting.len()
                    )
                })
                .expect("subscription open");
            self.waiting
                .push(request.reply.expect("a gate request has a reply subject"));
        }
    }

    /// Lets every handler waiting at the gate go on.
    pub async fn open(&mut self) {
        for reply in self.waiting.drain(..) {
            self.client.publish(reply, "open".into()).await.unwrap();
        }
        self.client.flush().await.unwrap();
    }
}

/// Waits until the log file at `path` contains `text`.
pub async fn logged(path: &Path, text: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{text:?} in the log"),
        || async {
            std::fs::read_to_string(path)
                .ok()
                .filter(|log| log.contains(text))
                .map(|_| ())
        },
    )
    .await
}

/// The testkit message whose handler publishes the marker [`count_until`]
/// waits for; sent after a message, its handler runs after that one's (a
/// testkit subscriber handles one message at a time by default).
pub const MARKER: &str = r#"{"op":"publish","subject":"testkit.out.marker","data":"end"}"#;

/// Counts messages with subject `counted` on `sub` (subscribed to
/// `testkit.out.>`) until the [`MARKER`] arrives. What one connection
/// publishes reaches a subscriber in order, so the marker a later handler
/// publishes closes the count: nothing counted can still be on its way.
pub async fn count_until_marker(sub: &mut async_nats::Subscriber, counted: &str) -> usize {
    use futures::StreamExt;
    let mut n = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), sub.next())
            .await
            .unwrap_or_else(|_| panic!("no marker within 60 s ({n} counted)"))
            .expect("subscription open");
        match m.subject.as_str() {
            "testkit.out.marker" => return n,
            s if s == counted => n += 1,
            _ => {}
        }
    }
}
