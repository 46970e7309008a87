//! Step 4 of the data flow: the pull loop of one subscriber. A permit is
//! taken before each fetch and the fetch never asks for more messages than
//! permits held, so at most `concurrency` handlers run and nothing waits
//! unhandled in the client. A request is read until it is really over
//! (`nats::pull`): what the server sent before ending it early is handled,
//! not left to wait out ack_wait. A failed pull is handled by kind
//! (`recover`); a watcher keeps the consumer's ack floor and pause state,
//! and finds a pull that stopped making progress (`watch`). On shutdown
//! the loop stops fetching and hands back whatever its open pull delivers;
//! handlers still running when the grace period ends are abandoned to the
//! settler.

pub mod progress;
pub mod recover;
pub mod watch;

use crate::config::StreamConfig;
use crate::dispatch::Subscriber;
use crate::error::ErrorChain;
use crate::fatal::Fatal;
use crate::message::InFlight;
use crate::nats::pull::{PullRequest, Pulled, EXPIRY_MARGIN};
use async_nats::jetstream::{self, consumer::PullConsumer};
use progress::Progress;
use recover::{PullFailure, Recovered};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest pause between failed pulls.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// What the loops share with the service.
pub struct PullContext {
    /// Cancelled when in-flight handlers must be abandoned (grace period over).
    pub abandon: CancellationToken,
    /// Tracks handler tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The `[[streams]]` of the file, as last reloaded (a declared one lost
    /// by the server is declared again).
    pub streams: std::sync::RwLock<Vec<StreamConfig>>,
    /// Where a subscriber that cannot go on says why.
    pub fatal: mpsc::UnboundedSender<Fatal>,
}

/// A handler slot: the subscriber's, and its tenant's when it has a quota.
type Slot = (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>);

/// Pulls and dispatches until the subscriber's `stop` is cancelled (the
/// service stops, or its tenant's connection is gone for good).
pub async fn run(sub: Arc<Subscriber>, mut consumer: PullConsumer, ctx: Arc<PullContext>) {
    let cfg = &sub.config;
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let progress = Arc::new(Progress::default());
    let watcher = tokio::spawn(watch::run(sub.clone(), progress.clone()));
    let client = sub.jetstream.client();
    let mut failures = 0u32;
    // After a pull that brought nothing, the next asks for one message: an
    // idle subscriber then holds one handler slot (and one of its tenant's)
    // while it waits, not a whole batch its siblings could use.
    let mut idle = false;
    'pull: loop {
        let Some(mut held) = take_slots(&sub, &permits, &progress, idle).await else {
            break;
        };
        let asked = held.len();
        // While the connection is down a request would only be queued, and
        // sent with every other queued one when it comes back.
        if !connected(&client, &sub.stop).await {
            break;
        }
        let request =
            PullRequest::send(&consumer, &sub.jetstream, &client, asked, cfg.pull_timeout);
        // Not abandoned on stop: a request the server already holds would
        // deliver into a subscription nobody reads. Sending it takes no
        // server round trip; a stop now is seen first thing below.
        let mut request = match request.await {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                tracing::warn!(subscriber = %cfg.name, "{}", ErrorChain(&e));
                if !pause(&sub.stop, &progress, failures).await {
                    break;
                }
                continue;
            }
        };
        let mut restarts = progress.restarts();
        let mut ended = None;
        loop {
            tokio::select! {
                biased;
                _ = sub.stop.cancelled() => {
                    // A reload's replacement starts once this one's
                    // handlers are done, not once its request has expired.
                    let read_until = if sub.retiring.load(std::sync::atomic::Ordering::Relaxed) {
                        request.expires_at() + EXPIRY_MARGIN
                    } else {
                        tokio::time::Instant::now() + cfg.pull_timeout.min(HAND_BACK_WAIT)
                    };
                    let (handing, abandon) = (sub.clone(), ctx.abandon.clone());
                    ctx.tracker.spawn(sub.handing_back.track_future(async move {
                        tokio::select! {
                            () = hand_back(&handing, request, read_until) => {}
                            () = abandon.cancelled() => {}
                        }
                    }));
                    break 'pull;
                }
                _ = restarts.changed() => {
                    tracing::warn!(subscriber = %cfg.name, "the pull made no progress: pulling again");
                    read_out(&sub, &ctx, request, held);
                    break;
                }
                pulled = request.next() => match pulled {
                    None => {
                        idle = held.len() == asked;
                        break;
                    }
                    Some(Pulled::Message(message)) => {
                        failures = 0;
                        progress.delivered();
                        let slot = held.pop().expect("a request never delivers more messages than asked for");
                        dispatch(&sub, &ctx, *message, slot).await;
                    }
                    Some(Pulled::ServerEnded(e)) => {
                        // After a leadership change what the server sent
                        // may still arrive: the request is read to its
                        // expiry first (`next` ends at once otherwise).
                        tracing::debug!(subscriber = %cfg.name, "{e}");
                        ended = Some(e);
                    }
                    Some(Pulled::Silent) => {
                        sub.settler().stats.pull_silent();
                        tracing::warn!(subscriber = %cfg.name, "no message, status or heartbeat from the server for this pull request: pulling again");
                        read_out(&sub, &ctx, request, held);
                        break;
                    }
                }
            }
        }
        let Some(ended) = ended else { continue };
        failures += 1;
        match recover::recover(&sub, &ctx, PullFailure::of(ended)).await {
            Ok(Recovered::Consumer(c)) => consumer = *c,
            Ok(Recovered::Nothing) => {
                if !pause(&sub.stop, &progress, failures).await {
                    break 'pull;
                }
            }
            Err(fatal) => {
                let _ = ctx.fatal.send(fatal);
                break 'pull;
            }
        }
    }
    watcher.abort();
    tracing::debug!(subscriber = %cfg.name, "stopped pulling");
}

/// Waits until `client` is connected; false when the subscriber stops first.
async fn connected(client: &async_nats::Client, stop: &CancellationToken) -> bool {
    while !matches!(
        client.connection_state(),
        async_nats::connection::State::Connected
    ) {
        tokio::select! {
            () = tokio::time::sleep(CONNECTION_POLL) => {}
            () = stop.cancelled() => return false,
        }
    }
    true
}

/// How often a pull waiting for the connection looks at it.
const CONNECTION_POLL: Duration = Duration::from_millis(100);

/// Reads a request the loop gave up on (silent, or making no progress)
/// to its end in a task of its own, keeping its handler slots: whatever
/// the server still sends to it is handled as usual, not handed back at
/// the cost of a delivery. On stop, what is left is handed back.
fn read_out(
    sub: &Arc<Subscriber>,
    ctx: &Arc<PullContext>,
    mut request: PullRequest,
    mut held: Vec<Slot>,
) {
    let (sub, ctx_) = (sub.clone(), ctx.clone());
    ctx.tracker.spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = sub.stop.cancelled() => {
                    let until = tokio::time::Instant::now() + HAND_BACK_WAIT;
                    tokio::select! {
                        () = hand_back(&sub, request, until) => {}
                        () = ctx_.abandon.cancelled() => {}
                    }
                    return;
                }
                pulled = request.next() => match pulled {
                    None => return,
                    Some(Pulled::Message(message)) => {
                        let Some(slot) = held.pop() else { return };
                        dispatch(&sub, &ctx_, *message, slot).await;
                    }
                    Some(Pulled::ServerEnded(_) | Pulled::Silent) => {}
                },
            }
        }
    });
}

/// Takes the handler slots for the next request: one at least, waiting
/// for it, then as many more as are free at once (one only when the last
/// pull brought nothing), each with a slot of the tenant's concurrency
/// quota when it has one. `None` when the subscriber stops meanwhile.
async fn take_slots(
    sub: &Subscriber,
    permits: &Arc<Semaphore>,
    progress: &Progress,
    idle: bool,
) -> Option<Vec<Slot>> {
    let first = tokio::select! {
        p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        _ = sub.stop.cancelled() => return None,
    };
    let quota = sub.tenant_slots.as_ref();
    let first_of_tenant = match quota {
        None => None,
        Some(q) => match q.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                sub.settler().stats.concurrency_quota_wait();
                progress.waiting_for_quota(true);
                let of_tenant = tokio::select! {
                    p = q.clone().acquire_owned() => p.expect("semaphore is never closed"),
                    _ = sub.stop.cancelled() => return None,
                };
                progress.waiting_for_quota(false);
                Some(of_tenant)
            }
        },
    };
    let mut held = vec![(first, first_of_tenant)];
    let want = if idle { 1 } else { sub.config.batch_size };
    while held.len() < want {
        let Ok(p) = permits.clone().try_acquire_owned() else {
            break;
        };
        let of_tenant = match quota.map(|q| q.clone().try_acquire_owned()) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(_)) => break,
        };
        held.push((p, of_tenant));
    }
    Some(held)
}

/// Handles `message` in a task of its own, holding `slot` until it is settled.
async fn dispatch(
    sub: &Arc<Subscriber>,
    ctx: &Arc<PullContext>,
    message: jetstream::Message,
    slot: Slot,
) {
    let msg = match InFlight::new(message) {
        Ok(mut msg) => {
            msg.ledger_generation = sub.settler().ledger.generation();
            Arc::new(msg)
        }
        Err((message, why)) => {
            sub.settler().not_a_delivery(&message, &why).await;
            return;
        }
    };
    let (sub, abandon) = (sub.clone(), ctx.abandon.clone());
    let tasks = sub.tasks.clone();
    ctx.tracker.spawn(tasks.track_future(async move {
        let _slot = slot;
        // On the heap: the handler's state is kilobytes, which spawning and
        // finishing the task would otherwise copy (memmove showed in the
        // profile).
        let dispatch = Box::pin(sub.dispatch(msg.clone()));
        tokio::select! {
            // Dispatch first: it counts the delivery before an abandonment
            // can settle it.
            biased;
            _ = dispatch => {}
            _ = abandon.cancelled() => sub.settler().abandoned(&msg).await,
        }
    }));
}

/// How long shutdown keeps reading an open pull request for messages the
/// server already sent to it.
const HAND_BACK_WAIT: Duration = Duration::from_secs(1);

/// Stopping with a pull request open: what it delivers until `read_until`
/// is handed back unstarted. Shutdown reads it for a moment (messages the
/// server sent before it saw the request go); a subscriber retired by a
/// reload reads it until it ends or expires, while its replacement already
/// pulls, so the server never delivers into a request nobody reads: such a
/// delivery counts as one of the message's deliveries and waits out
/// ack_wait, and on its last allowed delivery it would never come back.
/// Messages are handed back once reading stops: at once when the request
/// is over, else with a redelivery delay past its expiry, as the server
/// would deliver them into the same open request again, each time spending
/// one of their deliveries.
async fn hand_back(sub: &Subscriber, mut request: PullRequest, read_until: tokio::time::Instant) {
    let fetched = request.drain(read_until).await;
    let over = read_until >= request.expires_at();
    let redeliver_after = (!over).then(|| {
        request
            .expires_at()
            .saturating_duration_since(tokio::time::Instant::now())
            + EXPIRY_MARGIN
    });
    tracing::debug!(subscriber = %sub.config.name, handed_back = fetched.len(), ?redeliver_after, "last pull request read");
    for message in fetched {
        match InFlight::new(message) {
            Ok(msg) => sub.settler().hand_back(&msg, redeliver_after).await,
            Err((message, why)) => sub.settler().not_a_delivery(&message, &why).await,
        }
    }
}

/// Waits before the next try, longer after each failure; false when
/// stopping. A stall the watcher sees (messages wait, none delivered) ends
/// the wait: after an outage the pause has grown to its longest, and the
/// first pull once the cluster answers should not wait it out.
async fn pause(stop: &CancellationToken, progress: &Progress, failures: u32) -> bool {
    let wait =
        (Duration::from_millis(100) * 2u32.saturating_pow(failures.min(6))).min(MAX_RETRY_PAUSE);
    let mut restarts = progress.restarts();
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = restarts.changed() => true,
        _ = stop.cancelled() => false,
    }
}
