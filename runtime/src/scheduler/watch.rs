//! Watches one subscriber's durable on the server while it runs: records
//! the ack floor (what `recover` recreates a deleted durable from, and what
//! the settle ledger prunes by), reports when an operator pauses or
//! resumes the consumer — a paused consumer is not drift: the runtime keeps
//! its pulls waiting and goes on when the server resumes it — and finds a
//! pull that stopped making progress: messages pending, room to take them
//! (acks pending below `max_ack_pending`, free handler slots, no wait for
//! the tenant's quota), and nothing delivered for three pull timeouts. The
//! loop then gives up its pull and sends a new one, again every three pull
//! timeouts while it lasts. An election looks the same for a while, and
//! pulling again is all it needs; only when the stall outlasts any
//! election ([`STEP_DOWN_AFTER`]) while the stream and the consumer both
//! have a leader is the consumer's leader asked, once, to step down, so
//! another server of a cluster leads it.

use super::progress::Progress;
use crate::dispatch::Subscriber;
use crate::error::ErrorChain;
use async_nats::jetstream::consumer::Info;
use std::sync::Arc;
use std::time::Duration;

/// How often the durable is looked at.
pub const EVERY: Duration = Duration::from_secs(2);

/// Pull timeouts without a delivery, messages pending and room to take
/// them, that make a stall.
const STALLED_AFTER: u32 = 3;

/// How long a stall lasts before the consumer's leader is asked to step
/// down: longer than an election takes (about 10 s on a loaded 3-node
/// cluster), whose own step-down would start another.
const STEP_DOWN_AFTER: Duration = Duration::from_secs(30);

/// What the watcher did about the current stall.
#[derive(Debug, Default)]
struct StallRecovery {
    /// When it last asked for a new pull.
    last: Option<tokio::time::Instant>,
    /// Whether it asked the consumer's leader to step down.
    stepped_down: bool,
}

/// Looks at the durable every [`EVERY`] until the service stops pulling.
pub async fn run(sub: Arc<Subscriber>, progress: Arc<Progress>) {
    let cfg = &sub.config;
    let settler = sub.settler();
    let mut tick = tokio::time::interval(EVERY);
    // A look that took long (the server slow to answer during an
    // election) is not followed by a burst of them.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut recovery = StallRecovery::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sub.stop.cancelled() => return,
        }
        let Ok(stream) = sub.jetstream.get_stream(cfg.stream.as_str()).await else {
            continue;
        };
        if settler.ledger.observe_stream(created_ns(&stream)) {
            tracing::warn!(subscriber = %cfg.name, stream = %cfg.stream, "the stream was created again under the same name; its sequences start anew");
        }
        let info = match stream.consumer_info(cfg.durable.as_str()).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(subscriber = %cfg.name, "cannot look at the durable now: {}", ErrorChain(&e));
                continue;
            }
        };
        if progress.since_delivery() < STALLED_AFTER * cfg.pull_timeout {
            recovery = StallRecovery::default();
        } else if stalled(&sub, &progress, &info) {
            let stream_led = stream
                .cached_info()
                .cluster
                .as_ref()
                .is_none_or(|c| c.leader.is_some());
            let consumer_led = info.cluster.as_ref().is_none_or(|c| c.leader.is_some());
            recover_stall(
                &sub,
                &progress,
                &info,
                stream_led && consumer_led,
                &mut recovery,
            )
            .await;
        }
        settler.ledger.observe_floor(info.ack_floor.stream_sequence);
        settler.stats.set_ack_floor(info.ack_floor.stream_sequence);
        let was_paused = settler.stats.set_paused(info.paused);
        match (was_paused, info.paused) {
            (false, true) => tracing::warn!(
                subscriber = %cfg.name, durable = %cfg.durable,
                "the consumer is paused on the server ({} left); pulls wait until it resumes",
                info.pause_remaining.map_or("no end given".to_string(), |d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
            ),
            (true, false) => {
                tracing::info!(subscriber = %cfg.name, durable = %cfg.durable, "the consumer resumed")
            }
            _ => {}
        }
    }
}

/// Whether the server holds messages for the subscriber it has room to
/// take, and has delivered none for [`STALLED_AFTER`] pull timeouts.
fn stalled(sub: &Subscriber, progress: &Progress, info: &Info) -> bool {
    Room {
        pending: info.num_pending,
        paused: info.paused,
        ack_pending: info.num_ack_pending as i64,
        max_ack_pending: info.config.max_ack_pending,
        in_flight: sub.settler().stats.in_flight(),
        concurrency: sub.config.concurrency as u64,
        waiting_for_quota: progress.is_waiting_for_quota(),
    }
    .to_take_more()
}

/// What the server holds for a subscriber and what keeps it from taking it.
#[derive(Debug, Clone, Copy)]
struct Room {
    pending: u64,
    paused: bool,
    ack_pending: i64,
    /// The durable's limit (0 or less: none).
    max_ack_pending: i64,
    in_flight: u64,
    concurrency: u64,
    waiting_for_quota: bool,
}

impl Room {
    /// Messages wait on the server and nothing of the subscriber's own
    /// holds them back.
    fn to_take_more(self) -> bool {
        self.pending > 0
            && !self.paused
            && (self.max_ack_pending <= 0 || self.ack_pending < self.max_ack_pending)
            && self.in_flight < self.concurrency
            && !self.waiting_for_quota
    }
}

/// Gets a stalled pull going: a new pull request every stall period, and
/// once, when it outlasts [`STEP_DOWN_AFTER`] with every group led, the
/// consumer's leader asked to step down.
async fn recover_stall(
    sub: &Subscriber,
    progress: &Progress,
    info: &Info,
    led: bool,
    recovery: &mut StallRecovery,
) {
    let cfg = &sub.config;
    let stalled_for = STALLED_AFTER * cfg.pull_timeout;
    if recovery.last.is_some_and(|t| t.elapsed() < stalled_for) {
        return;
    }
    let first = recovery.last.is_none();
    recovery.last = Some(tokio::time::Instant::now());
    let since = progress.since_delivery();
    let state = format!(
        "{} pending, {} awaiting ack, {} pull requests waiting on the server, nothing delivered for {:.1}s",
        info.num_pending,
        info.num_ack_pending,
        info.num_waiting,
        since.as_secs_f64()
    );
    sub.settler().stats.pull_stalled();
    progress.ask_restart();
    if first {
        tracing::warn!(subscriber = %cfg.name, durable = %cfg.durable, "the pull stalled ({state}): sending a new pull request");
    } else {
        tracing::debug!(subscriber = %cfg.name, durable = %cfg.durable, "the pull is still stalled ({state}): sending a new pull request");
    }
    if recovery.stepped_down || since < STEP_DOWN_AFTER || !led {
        return;
    }
    recovery.stepped_down = true;
    tracing::warn!(subscriber = %cfg.name, durable = %cfg.durable, "the pull is still stalled ({state}) with the stream and the consumer led: asking the consumer's leader to step down");
    let subject = format!(
        "$JS.API.CONSUMER.LEADER.STEPDOWN.{}.{}",
        cfg.stream, cfg.durable
    );
    match sub.jetstream.client().request(subject, "".into()).await {
        Ok(answer) => {
            tracing::info!(subscriber = %cfg.name, "the consumer's leader answered the step-down: {}", String::from_utf8_lossy(&answer.payload))
        }
        Err(e) => {
            tracing::warn!(subscriber = %cfg.name, "asking the consumer's leader to step down failed: {}", ErrorChain(&e))
        }
    }
}

/// When `stream` was created, in nanoseconds since the Unix epoch.
pub fn created_ns(stream: &async_nats::jetstream::stream::Stream) -> u64 {
    u64::try_from(stream.cached_info().created.unix_timestamp_nanos()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::Room;

    #[test]
    fn a_stall_is_pending_messages_with_room_to_take_them() {
        let room = Room {
            pending: 166,
            paused: false,
            ack_pending: 0,
            max_ack_pending: 1000,
            in_flight: 0,
            concurrency: 4,
            waiting_for_quota: false,
        };
        assert!(room.to_take_more());
        assert!(Room {
            max_ack_pending: -1,
            ..room
        }
        .to_take_more());
        assert!(!Room { pending: 0, ..room }.to_take_more());
        assert!(!Room {
            paused: true,
            ..room
        }
        .to_take_more());
        assert!(!Room {
            ack_pending: 1000,
            ..room
        }
        .to_take_more());
        assert!(!Room {
            in_flight: 4,
            ..room
        }
        .to_take_more());
        assert!(!Room {
            waiting_for_quota: true,
            ..room
        }
        .to_take_more());
    }
}
