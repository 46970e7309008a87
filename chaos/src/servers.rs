//! The NATS side of a scenario: one nats-server (killed with SIGKILL and
//! restarted on the same port and store) or a three-node JetStream
//! cluster, and clients that ride through their failures.

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::ServerAddr;
use nats_test_server::{NatsCluster, NatsServer};
use std::time::Duration;

/// The servers a scenario runs against.
pub enum Servers {
    /// One nats-server.
    Single(NatsServer),
    /// Three clustered nats-servers.
    Cluster(NatsCluster),
}

impl Servers {
    /// Starts one nats-server with JetStream.
    pub async fn start_single() -> anyhow::Result<Servers> {
        let server = tokio::task::spawn_blocking(NatsServer::start)
            .await
            .context("cannot start nats-server")?;
        Ok(Servers::Single(server))
    }

    /// Starts a three-node cluster and waits until JetStream is ready.
    pub async fn start_cluster() -> anyhow::Result<Servers> {
        let cluster = NatsCluster::start()
            .await
            .context("cannot start the three-node cluster")?;
        Ok(Servers::Cluster(cluster))
    }

    /// Every client URL.
    pub fn urls(&self) -> Vec<String> {
        match self {
            Servers::Single(s) => vec![s.url().to_string()],
            Servers::Cluster(c) => c.urls().split(',').map(str::to_string).collect(),
        }
    }

    /// Stream replicas to declare: 3 on the cluster, else the default.
    pub fn replicas(&self) -> Option<usize> {
        match self {
            Servers::Single(_) => None,
            Servers::Cluster(_) => Some(nats_test_server::CLUSTER_SIZE),
        }
    }

    /// A JetStream context on a client that reconnects every 100 ms, to any
    /// server, for as long as it takes; requests time out after 2 s.
    pub async fn jetstream(&self) -> anyhow::Result<jetstream::Context> {
        let addrs = self
            .urls()
            .iter()
            .map(|u| u.parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .context("invalid server URL")?;
        let client = async_nats::ConnectOptions::new()
            .name("natsapp-chaos")
            .retry_on_initial_connect()
            .reconnect_delay_callback(|_| Duration::from_millis(100))
            .connect(addrs)
            .await
            .with_context(|| format!("cannot connect to {}", self.urls().join(",")))?;
        Ok(jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(client))
    }

    /// Kills the single server with SIGKILL, keeps it down for `outage`,
    /// then starts it on the same port and store.
    pub async fn restart_single(&mut self, outage: Duration) -> anyhow::Result<()> {
        let Servers::Single(server) = self else {
            anyhow::bail!("restart_single needs a single server");
        };
        server.stop();
        tokio::time::sleep(outage).await;
        tokio::task::block_in_place(|| server.restart());
        Ok(())
    }

    /// The folder with the servers' stores, configs and logs.
    pub fn dir(&self) -> &std::path::Path {
        match self {
            Servers::Single(s) => s.dir(),
            Servers::Cluster(c) => c.dir(),
        }
    }

    /// Kills every node of the cluster with SIGKILL, keeps them down for
    /// `outage`, then starts them all on their ports and stores.
    pub async fn restart_cluster(&mut self, outage: Duration) -> anyhow::Result<()> {
        let cluster = self.cluster_mut()?;
        for node in 0..nats_test_server::CLUSTER_SIZE {
            cluster.kill(node)?;
        }
        tokio::time::sleep(outage).await;
        for node in 0..nats_test_server::CLUSTER_SIZE {
            cluster.restart(node).await?;
        }
        Ok(())
    }

    /// The cluster, for scenarios that look up its leaders.
    pub fn cluster(&self) -> anyhow::Result<&NatsCluster> {
        match self {
            Servers::Cluster(c) => Ok(c),
            Servers::Single(_) => anyhow::bail!("this scenario needs the three-node cluster"),
        }
    }

    /// The cluster, for scenarios that kill its nodes.
    pub fn cluster_mut(&mut self) -> anyhow::Result<&mut NatsCluster> {
        match self {
            Servers::Cluster(c) => Ok(c),
            Servers::Single(_) => anyhow::bail!("this scenario needs the three-node cluster"),
        }
    }
}
