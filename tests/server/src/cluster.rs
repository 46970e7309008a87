//! A three-node nats-server cluster with JetStream on loopback, for chaos
//! runs and tests that need leaders to fail over: each node has its own
//! config file, store and ports; nodes are killed by pid with SIGKILL and
//! restarted on the same ports and store; everything is killed and removed
//! on drop.

use crate::nats_server_bin;
use async_nats::jetstream;
use async_nats::ServerAddr;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How many nodes a cluster has.
pub const CLUSTER_SIZE: usize = 3;

/// How long a node may take to accept clients, and the cluster to elect a
/// JetStream meta leader.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// One node: its name, ports, files and (while running) its process.
struct Node {
    server_name: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Three nats-servers in one cluster, each with JetStream, on loopback.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts three nodes and waits until each accepts clients and a
    /// JetStream account-info request succeeds through a client connected
    /// to all of them (a meta leader has been elected).
    pub async fn start() -> io::Result<NatsCluster> {
        let dir = tempfile::tempdir()?;
        // Hold every listener until all ports are chosen, so no two agree.
        let listeners = (0..2 * CLUSTER_SIZE)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<io::Result<Vec<_>>>()?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<io::Result<Vec<_>>>()?;
        drop(listeners);
        let (client_ports, cluster_ports) = ports.split_at(CLUSTER_SIZE);
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::with_capacity(CLUSTER_SIZE);
        for i in 0..CLUSTER_SIZE {
            let server_name = format!("n{i}");
            let store = dir.path().join(format!("{server_name}-store"));
            let config = dir.path().join(format!("{server_name}.conf"));
            let text = format!(
                "server_name: {server_name}\n\
                 listen: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: {store:?} }}\n\
                 cluster {{\n  name: chaos\n  listen: 127.0.0.1:{cport}\n  routes: [{routes}]\n}}\n",
                port = client_ports[i],
                cport = cluster_ports[i],
            );
            std::fs::write(&config, text)?;
            nodes.push(Node {
                log: dir.path().join(format!("{server_name}.log")),
                server_name,
                port: client_ports[i],
                config,
                child: None,
            });
        }
        let mut cluster = NatsCluster { nodes, dir };
        for node in 0..CLUSTER_SIZE {
            cluster.spawn(node)?;
        }
        for node in 0..CLUSTER_SIZE {
            cluster.wait_accepting(node).await?;
        }
        cluster.wait_jetstream().await?;
        Ok(cluster)
    }

    /// The client URL of `node`, `nats://127.0.0.1:PORT`.
    pub fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[node].port)
    }

    /// Every node's client URL, comma-separated (the NATS_SERVERS form).
    pub fn urls(&self) -> String {
        (0..CLUSTER_SIZE)
            .map(|n| self.url(n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client connected to any node, reconnecting to the others.
    pub async fn client(&self) -> io::Result<async_nats::Client> {
        let addrs = (0..CLUSTER_SIZE)
            .map(|n| self.url(n).parse::<ServerAddr>())
            .collect::<io::Result<Vec<_>>>()?;
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .reconnect_delay_callback(|_| Duration::from_millis(100))
            .connect(addrs)
            .await
            .map_err(|e| {
                io::Error::other(format!(
                    "cannot connect to the cluster {}: {e}",
                    self.urls()
                ))
            })
    }

    /// Kills `node` with SIGKILL (by its pid) and waits for it to exit.
    pub fn kill(&mut self, node: usize) -> io::Result<()> {
        if let Some(mut child) = self.nodes[node].child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops `node` with SIGSTOP: it keeps its connections and its place
    /// in the RAFT groups but answers nothing, like a paused machine or a
    /// partitioned one.
    pub fn freeze(&self, node: usize) -> io::Result<()> {
        self.signal(node, libc::SIGSTOP)
    }

    /// Resumes a frozen `node` with SIGCONT.
    pub fn thaw(&self, node: usize) -> io::Result<()> {
        self.signal(node, libc::SIGCONT)
    }

    fn signal(&self, node: usize, signal: libc::c_int) -> io::Result<()> {
        let child = self.nodes[node]
            .child
            .as_ref()
            .ok_or_else(|| io::Error::other(format!("node n{node} is not running")))?;
        let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
        // SAFETY: kill(2) on the pid of a child this cluster spawned and has
        // not yet waited for.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Asks the leader of `stream` to step down in favour of `node`
    /// (nats-server 2.11 or newer honours the preference).
    pub async fn move_stream_leader(&self, stream: &str, node: usize) -> io::Result<()> {
        self.step_down(&format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"), node)
            .await
    }

    /// Asks the leader of `consumer` on `stream` to step down in favour of
    /// `node`.
    pub async fn move_consumer_leader(
        &self,
        stream: &str,
        consumer: &str,
        node: usize,
    ) -> io::Result<()> {
        self.step_down(
            &format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{stream}.{consumer}"),
            node,
        )
        .await
    }

    async fn step_down(&self, subject: &str, node: usize) -> io::Result<()> {
        let client = self.client().await?;
        let body = format!(
            r#"{{"placement":{{"preferred":"{}"}}}}"#,
            self.nodes[node].server_name
        );
        let answer = client
            .request(subject.to_string(), body.into())
            .await
            .map_err(|e| io::Error::other(format!("{subject}: {e}")))?;
        let text = String::from_utf8_lossy(&answer.payload);
        if text.contains("\"error\"") {
            return Err(io::Error::other(format!("{subject} refused: {text}")));
        }
        Ok(())
    }

    /// The folder holding every node's config, log and store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `node` again (killing it first if it runs) on the same ports
    /// and store, and waits until it accepts clients.
    pub async fn restart(&mut self, node: usize) -> io::Result<()> {
        self.kill(node)?;
        self.spawn(node)?;
        self.wait_accepting(node).await
    }

    /// Waits up to `within` until `node` is a current, online member of
    /// the RAFT groups of `streams` and of `consumer` on the first of them:
    /// a restarted node catches up before it counts towards a quorum
    /// again, so a fault right after its restart would stall the group.
    pub async fn caught_up(
        &self,
        node: usize,
        streams: &[&str],
        consumer: &str,
        within: Duration,
    ) -> io::Result<()> {
        let name = &self.nodes[node].server_name;
        let js = jetstream::new(self.client().await?);
        let current = |info: Option<&jetstream::stream::ClusterInfo>| {
            info.is_some_and(|c| {
                c.leader.as_deref() == Some(name.as_str())
                    || c.replicas
                        .iter()
                        .any(|r| &r.name == name && r.current && !r.offline)
            })
        };
        let deadline = Instant::now() + within;
        loop {
            let mut behind = Vec::new();
            for stream in streams {
                let info = match js.get_stream(*stream).await {
                    Ok(mut s) => s.info().await.ok().map(|i| i.cluster.clone()),
                    Err(_) => None,
                };
                if !current(info.flatten().as_ref()) {
                    behind.push(format!("stream {stream:?}"));
                }
            }
            let consumer_info = match js.get_stream(streams[0]).await {
                Ok(s) => s
                    .consumer_info(consumer)
                    .await
                    .ok()
                    .map(|i| i.cluster.clone()),
                Err(_) => None,
            };
            if !current(consumer_info.flatten().as_ref()) {
                behind.push(format!("consumer {consumer:?}"));
            }
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "node {name} did not catch up within {within:?}: {}",
                    behind.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node leading `stream`'s RAFT group.
    pub async fn stream_leader(&self, stream: &str) -> io::Result<usize> {
        let js = jetstream::new(self.client().await?);
        let mut handle = js
            .get_stream(stream)
            .await
            .map_err(|e| io::Error::other(format!("stream {stream:?}: {e}")))?;
        let info = handle
            .info()
            .await
            .map_err(|e| io::Error::other(format!("info of stream {stream:?}: {e}")))?;
        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        self.node_named(leader.as_deref(), &format!("stream {stream:?}"))
    }

    /// The node leading the RAFT group of `consumer` on `stream`.
    pub async fn consumer_leader(&self, stream: &str, consumer: &str) -> io::Result<usize> {
        Ok(self.consumer_leadership(stream, consumer).await?.0)
    }

    /// The node leading the RAFT group of `consumer` on `stream`, and since
    /// when: a leader elected again on the same node has a new time.
    pub async fn consumer_leadership(
        &self,
        stream: &str,
        consumer: &str,
    ) -> io::Result<(usize, Option<async_nats::datetime::DateTime>)> {
        let js = jetstream::new(self.client().await?);
        let handle = js
            .get_stream(stream)
            .await
            .map_err(|e| io::Error::other(format!("stream {stream:?}: {e}")))?;
        let info = handle.consumer_info(consumer).await.map_err(|e| {
            io::Error::other(format!("info of consumer {consumer:?} on {stream:?}: {e}"))
        })?;
        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        let node = self.node_named(
            leader.as_deref(),
            &format!("consumer {consumer:?} on {stream:?}"),
        )?;
        Ok((node, info.cluster.as_ref().and_then(|c| c.leader_since)))
    }

    fn node_named(&self, leader: Option<&str>, what: &str) -> io::Result<usize> {
        let leader = leader.ok_or_else(|| io::Error::other(format!("{what} has no leader")))?;
        self.nodes
            .iter()
            .position(|n| n.server_name == leader)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{what} is led by {leader:?}, not a node of this cluster"
                ))
            })
    }

    fn spawn(&mut self, node: usize) -> io::Result<()> {
        let bin = nats_server_bin();
        let n = &mut self.nodes[node];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&n.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::other(format!("cannot start {}: {e}", bin.display())))?;
        n.child = Some(child);
        Ok(())
    }

    /// Waits until `node` accepts TCP connections on its client port.
    async fn wait_accepting(&mut self, node: usize) -> io::Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.nodes[node].port));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let n = &mut self.nodes[node];
            let exited = match n.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                return Err(io::Error::other(format!(
                    "nats-server {} exited ({status}) before accepting clients; its log:\n{}",
                    n.server_name,
                    log_tail(&n.log)
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "nats-server {} did not accept clients on {addr} within {READY_WITHIN:?}; its log:\n{}",
                    n.server_name,
                    log_tail(&n.log)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a JetStream account-info request succeeds.
    async fn wait_jetstream(&self) -> io::Result<()> {
        let js = jetstream::new(self.client().await?);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match js.query_account().await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(io::Error::other(format!(
                        "JetStream on the cluster {} not ready within {READY_WITHIN:?}: {e}",
                        self.urls()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// The last lines of a node's log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..CLUSTER_SIZE {
            let _ = self.kill(node);
        }
    }
}
