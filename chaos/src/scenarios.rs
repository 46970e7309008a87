//! The fault scripts. Each starts its servers and natsapp-wasm processes,
//! starts the load, breaks something while orders flow, and hands over to
//! [`Harness::finish`] to wait, stop gracefully and count.

use crate::artifacts::Artifacts;
use crate::harness::{Fault, Harness};
use crate::load::Load;
use crate::poll::eventually;
use crate::process::Stop;
use crate::report::Row;
use crate::servers::Servers;
use crate::service::{ConsumerSettings, DURABLE, INPUT_STREAM, STREAMS};
use crate::verify;
use clap::builder::PossibleValue;
use std::fmt;
use std::time::{Duration, Instant};

/// How long the load may take to reach the point where a fault is due.
const LOAD_WITHIN: Duration = Duration::from_secs(120);
/// How long to wait for delivered, unacknowledged messages before a fault.
const IN_FLIGHT_WITHIN: Duration = Duration::from_secs(60);
/// How long after the thawed node caught up leader-freeze watches for the
/// durable's leader being elected again.
const LEADER_WATCH: Duration = Duration::from_secs(3);
/// The atomic scenario's load rate at most, well under what the runtime's
/// commits keep up with.
const ATOMIC_ORDERS_PER_SEC: f64 = 100.0;
/// How long a cluster may take to elect a new leader.
const ELECTION_WITHIN: Duration = Duration::from_secs(60);

/// A chaos scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// One nats-server killed with SIGKILL and restarted twice under load.
    ServerRestart,
    /// The runtime killed with SIGKILL under load; a new one takes over.
    RuntimeKill,
    /// The runtime stopped with SIGTERM under load; a new one takes over.
    RuntimeTerm,
    /// Three SIGTERM-and-replace restarts of slow handlers with max_deliver 2.
    RollingMaxDeliver,
    /// R3 streams on a cluster: the stream leader, then the consumer leader, killed and restarted.
    ClusterLeaders,
    /// The stream leader's node frozen (SIGSTOP) past an election, then resumed.
    LeaderFreeze,
    /// The stream's and the consumer's leader on one node, killed at once.
    LeadersTogether,
    /// All three nodes killed and restarted under load.
    ClusterRestart,
    /// Two processes on one durable on a cluster, one killed with SIGKILL.
    Replicas2,
    /// Three processes on one durable on a cluster, one killed with SIGKILL.
    Replicas3,
    /// Atomic outputs: the runtime killed with SIGKILL, then the server.
    Atomic,
}

impl Scenario {
    /// Every scenario, in the order they run by default.
    pub const ALL: [Scenario; 11] = [
        Scenario::ServerRestart,
        Scenario::RuntimeKill,
        Scenario::RuntimeTerm,
        Scenario::RollingMaxDeliver,
        Scenario::ClusterLeaders,
        Scenario::LeaderFreeze,
        Scenario::LeadersTogether,
        Scenario::ClusterRestart,
        Scenario::Replicas2,
        Scenario::Replicas3,
        Scenario::Atomic,
    ];

    /// Whether it runs on a three-node cluster (what `--soak` runs by
    /// default).
    pub fn on_cluster(self) -> bool {
        matches!(
            self,
            Scenario::ClusterLeaders
                | Scenario::LeaderFreeze
                | Scenario::LeadersTogether
                | Scenario::ClusterRestart
                | Scenario::Replicas2
                | Scenario::Replicas3
        )
    }

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::ServerRestart => "server-restart",
            Scenario::RuntimeKill => "runtime-kill",
            Scenario::RuntimeTerm => "runtime-term",
            Scenario::RollingMaxDeliver => "rolling-max-deliver",
            Scenario::ClusterLeaders => "cluster-leaders",
            Scenario::LeaderFreeze => "leader-freeze",
            Scenario::LeadersTogether => "leaders-together",
            Scenario::ClusterRestart => "cluster-restart",
            Scenario::Replicas2 => "replicas-2",
            Scenario::Replicas3 => "replicas-3",
            Scenario::Atomic => "atomic",
        }
    }
}

impl clap::ValueEnum for Scenario {
    fn value_variants<'a>() -> &'a [Self] {
        &Scenario::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

/// Sizes and timings shared by the scenarios.
#[derive(Clone)]
pub struct Timing {
    /// Orders per scenario.
    pub messages: u64,
    /// How long the load generator spreads the orders over.
    pub spread: Duration,
    /// How long a killed single server stays down.
    pub outage: Duration,
    /// The service's graceful_timeout.
    pub graceful: Duration,
    /// How long the durable may take to settle once the load is stored.
    pub settle_within: Duration,
    /// How long a frozen leader stays frozen: past nats-server's longest
    /// election timeout (9 s), so the others elect a new one meanwhile.
    pub freeze: Duration,
    /// The durable's settings.
    pub consumer: ConsumerSettings,
}

impl Timing {
    /// Short (CI): 250 orders over 8 s, 1 s outages. Full: 20,000 orders
    /// over 40 s, 3 s outages. `messages` overrides the count.
    pub fn new(short: bool, messages: Option<u64>, consumer: ConsumerSettings) -> Timing {
        let messages = messages.unwrap_or(if short { 250 } else { 20_000 }).max(1);
        Timing {
            messages,
            spread: Duration::from_secs(if short { 8 } else { 40 }),
            outage: Duration::from_secs(if short { 1 } else { 3 }),
            graceful: Duration::from_secs(5),
            settle_within: Duration::from_secs(60) + Duration::from_millis(10) * messages as u32,
            freeze: Duration::from_secs(12),
            consumer,
        }
    }

    /// Simulated work per message that keeps 4 handlers busy `utilisation`
    /// of the load's duration (above 1: a backlog builds), at most `cap`.
    fn work(&self, cap: Duration, utilisation: f64) -> Duration {
        (self.spread.mul_f64(4.0 * utilisation) / self.messages as u32).min(cap)
    }
}

/// Runs one scenario; a scenario that cannot run to the end gives a row
/// carrying the error.
pub async fn run(scenario: Scenario, artifacts: &Artifacts, timing: &Timing) -> Row {
    let started = Instant::now();
    let result = match scenario {
        Scenario::ServerRestart => server_restart(artifacts, timing).await,
        Scenario::RuntimeKill => runtime_stop(Stop::Kill, scenario, artifacts, timing).await,
        Scenario::RuntimeTerm => runtime_stop(Stop::Term, scenario, artifacts, timing).await,
        Scenario::RollingMaxDeliver => rolling_max_deliver(artifacts, timing).await,
        Scenario::ClusterLeaders => cluster_leaders(artifacts, timing).await,
        Scenario::LeaderFreeze => leader_freeze(artifacts, timing).await,
        Scenario::LeadersTogether => leaders_together(artifacts, timing).await,
        Scenario::ClusterRestart => cluster_restart(artifacts, timing).await,
        Scenario::Replicas2 => replicas(2, scenario, artifacts, timing).await,
        Scenario::Replicas3 => replicas(3, scenario, artifacts, timing).await,
        Scenario::Atomic => atomic(artifacts, timing).await,
    };
    result.unwrap_or_else(|e| Row::failed(scenario.name(), timing.messages, &e, started.elapsed()))
}

/// [server-restart]: kill -9 the only server and restart it on the same
/// port and store, at a third and two thirds of the load.
async fn server_restart(artifacts: &Artifacts, timing: &Timing) -> anyhow::Result<Row> {
    let mut h = Harness::new(Servers::start_single().await?, artifacts, timing, |_| {}).await?;
    h.start_runtime(None).await?;
    let load = h.start_load(timing.spread);
    for k in 1..=2 {
        restart_server_at(&mut h, &load, timing.messages * k / 3).await?;
    }
    h.finish(Scenario::ServerRestart.name(), load, timing.settle_within)
        .await
}

/// Once `at` orders are stored, kills the only server with SIGKILL and
/// restarts it on the same port and store after the outage.
async fn restart_server_at(h: &mut Harness, load: &Load, at: u64) -> anyhow::Result<()> {
    load.wait_stored(at, LOAD_WITHIN).await?;
    let stored = load.stored();
    let outage = h.timing.outage;
    let killed = Instant::now();
    h.servers.restart_single(outage).await?;
    h.fault(Fault {
        what: format!(
            "nats-server killed with SIGKILL at {stored} orders stored, restarted after {outage:?} and accepting clients again"
        ),
        lasted: killed.elapsed(),
        in_flight_lost: true,
    });
    Ok(())
}

/// Once `at` orders are stored and messages are in flight, stops runtime
/// `index` with `stop` and starts a new one; `why` ends the note.
async fn replace_runtime_at(
    h: &mut Harness,
    load: &Load,
    at: u64,
    index: usize,
    stop: Stop,
    why: &str,
) -> anyhow::Result<()> {
    load.wait_stored(at, LOAD_WITHIN).await?;
    verify::wait_in_flight(&h.js, IN_FLIGHT_WITHIN).await?;
    let stored = load.stored();
    let stopped = Instant::now();
    h.stop_runtime(index, stop).await?;
    h.start_runtime(None).await?;
    h.fault(Fault {
        what: format!(
            "r{index} stopped by {stop:?} at {stored} orders stored ({why}), a new one running"
        ),
        lasted: stopped.elapsed(),
        in_flight_lost: stop == Stop::Kill,
    });
    Ok(())
}

/// [runtime-kill] and [runtime-term]: stop the runtime halfway through the
/// load while messages are in flight, then start a new one. Handlers work
/// up to 50 ms per order so that the runtime is busy when the signal comes.
async fn runtime_stop(
    stop: Stop,
    scenario: Scenario,
    artifacts: &Artifacts,
    timing: &Timing,
) -> anyhow::Result<Row> {
    let work = timing.work(Duration::from_millis(50), 0.5);
    let mut h = Harness::new(Servers::start_single().await?, artifacts, timing, |s| {
        s.work = work
    })
    .await?;
    let first = h.start_runtime(None).await?;
    let load = h.start_load(timing.spread);
    let why = format!("handlers work {work:?} per order");
    replace_runtime_at(&mut h, &load, timing.messages / 2, first, stop, &why).await?;
    h.finish(scenario.name(), load, timing.settle_within).await
}

/// [atomic]: the order processor with `outputs.mode = "atomic"` (its
/// status and inventory outputs are two batches, one per stream). At a
/// third of the load the runtime is killed with SIGKILL while messages
/// are in flight, and a new one started; at two thirds the server is
/// killed with SIGKILL and restarted. Every order must end with its
/// outputs stored once in each stream.
async fn atomic(artifacts: &Artifacts, timing: &Timing) -> anyhow::Result<Row> {
    let work = timing.work(Duration::from_millis(50), 0.5);
    let mut h = Harness::new(Servers::start_single().await?, artifacts, timing, |s| {
        s.work = work;
        s.atomic = true;
    })
    .await?;
    let first = h.start_runtime(None).await?;
    // One commit per message keeps up with about 175 orders a second (the
    // debug build, two cores shared with the server and the load): sent
    // faster, a backlog builds and its wait would be taken for the faults'.
    let spread = timing.spread.max(Duration::from_secs_f64(
        timing.messages as f64 / ATOMIC_ORDERS_PER_SEC,
    ));
    let load = h.start_load(spread);
    let why = format!("atomic outputs; handlers work {work:?} per order");
    replace_runtime_at(&mut h, &load, timing.messages / 3, first, Stop::Kill, &why).await?;
    restart_server_at(&mut h, &load, timing.messages * 2 / 3).await?;
    h.finish(Scenario::Atomic.name(), load, timing.settle_within)
        .await
}

/// [rolling-max-deliver]: slow handlers (more work than 4 handlers can
/// keep up with, so a backlog builds; every 20th order takes 400 ms) on a
/// consumer with max_deliver 2 and a grace period shorter than the slow
/// orders' work: a SIGTERM abandons the handlers at work. Three times,
/// SIGTERM the runtime while messages are in flight and start a new one;
/// the second and third come as soon as the new runtime is at work, so
/// slow messages it was handed back (redelivered first) are abandoned on
/// their last allowed delivery. They must end up dead-lettered, not dropped.
async fn rolling_max_deliver(artifacts: &Artifacts, timing: &Timing) -> anyhow::Result<Row> {
    let work = timing.work(Duration::from_millis(300), 2.0);
    let slow = Duration::from_millis(400);
    let mut h = Harness::new(Servers::start_single().await?, artifacts, timing, |s| {
        s.max_deliver = 2;
        s.work = work;
        s.slow_every = 20;
        s.slow = slow;
        s.concurrency = 4;
        s.graceful_timeout = (work / 2).max(Duration::from_millis(1));
    })
    .await?;
    let mut current = h.start_runtime(None).await?;
    let load = h.start_load(timing.spread);
    for round in 0..3 {
        if round == 0 {
            // A pause to let work pile up, not a wait for correctness.
            tokio::time::sleep(timing.spread / 4).await;
        }
        verify::wait_in_flight(&h.js, IN_FLIGHT_WITHIN).await?;
        let state = verify::consumer_state(&h.js).await?;
        let stopped = Instant::now();
        h.stop_runtime(current, Stop::Term).await?;
        let previous = current;
        current = h.start_runtime(None).await?;
        h.fault(Fault {
            what: format!(
                "rolling restart: r{previous} sent SIGTERM with {} delivered and unacknowledged, {} pending (work {work:?} per order, {slow:?} for every 20th), r{current} running",
                state.ack_pending, state.pending
            ),
            lasted: stopped.elapsed(),
            in_flight_lost: false,
        });
    }
    let processing =
        (work.mul_f64(0.95) + slow.mul_f64(0.05)).mul_f64(timing.messages as f64 / 4.0 * 2.0);
    // Orders arrive twice as fast as they are handled: the last waits for
    // the whole backlog.
    h.backlog(processing);
    h.finish(
        Scenario::RollingMaxDeliver.name(),
        load,
        timing.settle_within + processing,
    )
    .await
}

/// Which RAFT group's leader to kill.
#[derive(Clone, Copy)]
enum Leader {
    Stream,
    Consumer,
}

impl fmt::Display for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Leader::Stream => "stream ORDER_EVENTS",
            Leader::Consumer => "consumer",
        })
    }
}

/// The node the runtime of the cluster scenarios is first connected to;
/// the leaders a scenario breaks are moved off it first, so what is
/// measured is an election, not a lost connection.
const RUNTIME_NODE: usize = 0;
/// The node a scenario moves the leaders it breaks to.
const VICTIM: usize = 1;
/// The third node.
const BYSTANDER: usize = 2;

/// [cluster-leaders]: R3 streams; kill the input stream's leader at a
/// third of the load and restart it once a new leader is elected; then the
/// same for the durable's leader at two thirds. The load is spread over
/// three times the usual time: an election stalls publishing for seconds,
/// and the orders it held back must not all be stored before the second
/// fault.
async fn cluster_leaders(artifacts: &Artifacts, timing: &Timing) -> anyhow::Result<Row> {
    let mut h = cluster_harness(artifacts, timing).await?;
    let load = h.start_load(timing.spread * 3);
    for (k, which) in [(1, Leader::Stream), (2, Leader::Consumer)] {
        load.wait_stored(timing.messages * k / 3, LOAD_WITHIN)
            .await?;
        move_leader(&h, which, VICTIM).await?;
        let stored = load.stored();
        fail_over(&mut h, &[which], stored).await?;
    }
    h.finish(Scenario::ClusterLeaders.name(), load, timing.settle_within)
        .await
}

/// [leader-freeze]: the input stream's leader (moved off the runtime's
/// node) is frozen with SIGSTOP at half the load, for longer than an
/// election takes, then resumed: a paused or partitioned leader comes back
/// believing it leads, and must give way without losing or doubling
/// anything.
async fn leader_freeze(artifacts: &Artifacts, timing: &Timing) -> anyhow::Result<Row> {
    let (mut h, load) = at_half_load(artifacts, timing).await?;
    move_leader(&h, Leader::Stream, VICTIM).await?;
    // Only the stream's leader is frozen: the durable's leads elsewhere.
    move_leader(&h, Leader::Consumer, BYSTANDER).await?;
    let durable_leader = || async {
        h.servers
            .cluster()?
            .consumer_leadership(INPUT_STREAM, DURABLE)
            .await
            .map_err(anyhow::Error::from)
    };
    let before = durable_leader().await?;
    let stored = load.stored();
    let frozen = Instant::now();
    h.servers.cluster()?.freeze(VICTIM)?;
    let new = eventually("a new stream leader", ELECTION_WITHIN, || async {
        Ok(leader(&h, Leader::Stream)
            .await
            .ok()
            .flatten()
            .filter(|&n| n != VICTIM))
    })
    .await;
    tokio::time::sleep(h.timing.freeze.saturating_sub(frozen.elapsed())).await;
    h.servers.cluster()?.thaw(VICTIM)?;
    let lasted = frozen.elapsed();
    let new = new?;
    catch_up(&h, VICTIM).await?;
    // The thawed node campaigns with a higher term and may unseat the
    // durable's leader too, up to a few seconds after it caught up; a
    // delivery that leader recorded and had not sent is then delivered
    // again only after ack_wait, as when a process dies with messages in
    // flight. Watched for a while; a server that does not say since when
    // its leader leads cannot show a re-election, so that counts as one.
    let mut elected_again = None;
    let watching = Instant::now();
    while watching.elapsed() < LEADER_WATCH && elected_again.is_none() {
        if let Ok(now) = durable_leader().await {
            if now != before || now.1.is_none() {
                elected_again = Some(now.0);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let durable = match elected_again {
        Some(node) if node == before.0 => {
            format!("; the durable's leader n{node} was elected again meanwhile")
        }
        Some(node) => format!(
            "; the durable's leader n{} stepped down meanwhile, n{node} leads it now",
            before.0
        ),
        None => String::new(),
    };
    h.fault(Fault {
        what: format!(
            "stream leader n{VICTIM} frozen with SIGSTOP at {stored} orders stored, n{new} elected meanwhile; resumed with SIGCONT{durable}"
        ),
        lasted,
        in_flight_lost: elected_again.is_some(),
    });
    h.finish(Scenario::LeaderFreeze.name(), load, timing.settle_within)
        .await
}

/// [leaders-together]: the input stream's leader and the durable's leader
/// moved onto one node (not the runtime's), which is killed at half the
/// load and restarted once both have new leaders.
async fn leaders_together(artifacts: &Artifacts, timing: &Timing) -> anyhow::Result<Row> {
    let (mut h, load) = at_half_load(artifacts, timing).await?;
    move_leader(&h, Leader::Stream, VICTIM).await?;
    move_leader(&h, Leader::Consumer, VICTIM).await?;
    let stored = load.stored();
    fail_over(&mut h, &[Leader::Stream, Leader::Consumer], stored).await?;
    h.finish(Scenario::LeadersTogether.name(), load, timing.settle_within)
        .await
}

/// [cluster-restart]: every node killed with SIGKILL at half the load and
/// all restarted after the outage: nothing answers for a while, then the
/// whole cluster elects its leaders again from its stores.
async fn cluster_restart(artifacts: &Artifacts, timing: &Timing) -> anyhow::Result<Row> {
    let (mut h, load) = at_half_load(artifacts, timing).await?;
    let stored = load.stored();
    let killed = Instant::now();
    let outage = h.timing.outage;
    h.servers.restart_cluster(outage).await?;
    for which in [Leader::Stream, Leader::Consumer] {
        eventually(&format!("a {which} leader"), ELECTION_WITHIN, || async {
            Ok(leader(&h, which).await.ok().flatten())
        })
        .await?;
    }
    h.fault(Fault {
        what: format!(
            "all three nodes killed with SIGKILL at {stored} orders stored, restarted after {outage:?}; stream and consumer leaders elected again"
        ),
        lasted: killed.elapsed(),
        in_flight_lost: true,
    });
    h.finish(Scenario::ClusterRestart.name(), load, timing.settle_within)
        .await
}

/// A cluster scenario under load, once half the orders are stored. The
/// load is spread over three times the usual time: an election stalls
/// publishing for seconds.
async fn at_half_load(artifacts: &Artifacts, timing: &Timing) -> anyhow::Result<(Harness, Load)> {
    let h = cluster_harness(artifacts, timing).await?;
    let load = h.start_load(timing.spread * 3);
    load.wait_stored(timing.messages / 2, LOAD_WITHIN).await?;
    Ok((h, load))
}

/// A cluster with the runtime started on [`RUNTIME_NODE`].
async fn cluster_harness(artifacts: &Artifacts, timing: &Timing) -> anyhow::Result<Harness> {
    let mut h = Harness::new(Servers::start_cluster().await?, artifacts, timing, |_| {}).await?;
    let url = h.servers.cluster()?.url(RUNTIME_NODE);
    h.start_runtime(Some(&url)).await?;
    Ok(h)
}

/// Moves `which` leader to `node` (a step-down preferring it), and waits
/// until it leads.
async fn move_leader(h: &Harness, which: Leader, node: usize) -> anyhow::Result<()> {
    let cluster = h.servers.cluster()?;
    eventually(
        &format!("the {which} leader on n{node}"),
        ELECTION_WITHIN,
        || async {
            match leader(h, which).await {
                Ok(Some(n)) if n == node => return Ok(Some(())),
                Ok(Some(_)) => {
                    let moved = match which {
                        Leader::Stream => cluster.move_stream_leader(INPUT_STREAM, node).await,
                        Leader::Consumer => {
                            cluster
                                .move_consumer_leader(INPUT_STREAM, DURABLE, node)
                                .await
                        }
                    };
                    if let Err(e) = moved {
                        crate::progress(format!("moving the {which} leader to n{node}: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => {}
            }
            Ok(None)
        },
    )
    .await
}

/// Kills the node leading every one of `which` (one node), waits for each
/// group to elect another, restarts the node and waits for it to catch up.
async fn fail_over(h: &mut Harness, which: &[Leader], stored: u64) -> anyhow::Result<()> {
    let first = which[0];
    let old = eventually(&format!("the {first} leader"), ELECTION_WITHIN, || {
        leader(h, first)
    })
    .await?;
    let killed = Instant::now();
    h.servers.cluster_mut()?.kill(old)?;
    let mut elected = Vec::new();
    for &w in which {
        let new = eventually(&format!("a new {w} leader"), ELECTION_WITHIN, || async {
            Ok(leader(h, w).await.ok().flatten().filter(|&n| n != old))
        })
        .await?;
        elected.push(format!("n{new} leads the {w}"));
    }
    let lasted = killed.elapsed();
    h.servers.cluster_mut()?.restart(old).await?;
    catch_up(h, old).await?;
    let names: Vec<String> = which.iter().map(ToString::to_string).collect();
    h.fault(Fault {
        what: format!(
            "n{old}, leading the {}, killed with SIGKILL at {stored} orders stored; {} (polled, an upper bound); n{old} restarted",
            names.join(" and the "),
            elected.join(", ")
        ),
        lasted,
        in_flight_lost: old == RUNTIME_NODE,
    });
    Ok(())
}

/// Waits until `node` is a current member of every group again: a group
/// with one member down and another still catching up has no quorum.
/// STREAMS starts with the input stream, the durable's.
async fn catch_up(h: &Harness, node: usize) -> anyhow::Result<()> {
    let streams: Vec<&str> = STREAMS.iter().map(|(name, _)| *name).collect();
    h.servers
        .cluster()?
        .caught_up(node, &streams, DURABLE, ELECTION_WITHIN)
        .await?;
    Ok(())
}

async fn leader(h: &Harness, which: Leader) -> anyhow::Result<Option<usize>> {
    let cluster = h.servers.cluster()?;
    let node = match which {
        Leader::Stream => cluster.stream_leader(INPUT_STREAM).await?,
        Leader::Consumer => cluster.consumer_leader(INPUT_STREAM, DURABLE).await?,
    };
    Ok(Some(node))
}

/// [replicas-2], [replicas-3]: `n` processes with the same service.toml on
/// one durable, each given only its own node's URL in NATS_SERVERS so each
/// connects to a different node first (the client learns the others from
/// the cluster); the first is killed with SIGKILL halfway through the load.
/// Handlers work up to 50 ms per order: with instant handlers the durable
/// is rarely seen with messages in flight, and a load that ends unseen
/// leaves nothing to kill the process over.
async fn replicas(
    n: usize,
    scenario: Scenario,
    artifacts: &Artifacts,
    timing: &Timing,
) -> anyhow::Result<Row> {
    let work = timing.work(Duration::from_millis(50), 0.5);
    let mut h = Harness::new(Servers::start_cluster().await?, artifacts, timing, |s| {
        s.work = work
    })
    .await?;
    for node in 0..n {
        let url = h.servers.cluster()?.url(node);
        h.start_runtime(Some(&url)).await?;
    }
    let load = h.start_load(timing.spread);
    load.wait_stored(timing.messages / 2, LOAD_WITHIN).await?;
    verify::wait_in_flight(&h.js, IN_FLIGHT_WITHIN).await?;
    let stored = load.stored();
    h.stop_runtime(0, Stop::Kill).await?;
    h.fault(Fault {
        what: format!(
            "r0 (of {n}) killed with SIGKILL at {stored} orders stored (handlers work {work:?} per order)"
        ),
        lasted: Duration::ZERO,
        in_flight_lost: true,
    });
    let mut row = h
        .finish(scenario.name(), load, timing.settle_within)
        .await?;
    row.label = Some("correctness run, not a scaling figure (2 cores)".to_string());
    let per_process: Vec<String> = row
        .processed
        .iter()
        .map(|(r, p)| format!("{r} {p}"))
        .collect();
    row.notes.push(format!(
        "orders each process logged as processed (\"processed order\" lines, redeliveries included): {}",
        per_process.join(", ")
    ));
    Ok(row)
}
