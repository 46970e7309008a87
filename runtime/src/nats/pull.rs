//! Step 4 of the data flow: the pull loop of one subscriber. A permit is
//! taken before each fetch and the fetch never asks for more messages than
//! permits held, so at most `concurrency` handlers run and nothing waits
//! unhandled in the client. On shutdown the loop stops fetching and naks
//! whatever was fetched but not started.

use crate::dispatch::Subscriber;
use crate::nats::setup;
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest pause between failed pulls.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// What the loop shares with the service.
pub struct PullContext {
    /// Cancelled when the service stops pulling.
    pub stop_pulling: CancellationToken,
    /// Cancelled when in-flight handlers must be abandoned (grace period over).
    pub abandon: CancellationToken,
    /// Tracks handler tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// JetStream, to rebuild the consumer after it disappears.
    pub jetstream: jetstream::Context,
}

/// Pulls and dispatches until `ctx.stop_pulling` is cancelled.
pub async fn run(sub: Arc<Subscriber>, mut consumer: PullConsumer, ctx: Arc<PullContext>) {
    let cfg = &sub.config;
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    let mut failures = 0u32;
    'pull: loop {
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = ctx.stop_pulling.cancelled() => break,
        };
        let mut held = vec![first];
        while held.len() < cfg.batch_size {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        let request = consumer
            .batch()
            .max_messages(held.len())
            .expires(cfg.pull_timeout)
            .messages();
        let batch = tokio::select! {
            b = request => b,
            _ = ctx.stop_pulling.cancelled() => break,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                failures += 1;
                tracing::warn!(subscriber = %cfg.name, "pull request failed: {e}");
                if !pause(&ctx, failures).await {
                    break;
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                biased;
                _ = ctx.stop_pulling.cancelled() => {
                    // Fetched but never started: hand back at once.
                    while let Some(Some(Ok(m))) = batch.next().now_or_never() {
                        sub.stats.returned_unstarted();
                        if let Err(e) = m.ack_with(AckKind::Nak(None)).await {
                            tracing::warn!(subscriber = %cfg.name, "could not hand back a fetched message: {e}");
                        }
                    }
                    break 'pull;
                }
                item = batch.next() => match item {
                    None => break,
                    Some(Ok(message)) => {
                        failures = 0;
                        let permit = held.pop().expect("a batch never returns more messages than asked for");
                        let (sub, abandon) = (sub.clone(), ctx.abandon.clone());
                        ctx.tracker.spawn(async move {
                            let _permit = permit;
                            let reply = message.reply.clone();
                            tokio::select! {
                                _ = sub.dispatch(message) => {}
                                _ = abandon.cancelled() => {
                                    abandoned(&sub, reply).await;
                                }
                            }
                        });
                    }
                    Some(Err(e)) => {
                        failures += 1;
                        tracing::warn!(subscriber = %cfg.name, "pull failed: {e}");
                        if !pause(&ctx, failures).await {
                            break 'pull;
                        }
                        if failures >= 3 {
                            match setup::ensure_consumer(&ctx.jetstream, cfg).await {
                                Ok(c) => {
                                    tracing::warn!(subscriber = %cfg.name, durable = %cfg.durable, "durable consumer verified or recreated after repeated pull failures");
                                    consumer = c;
                                }
                                Err(e) => tracing::error!(subscriber = %cfg.name, "{e}"),
                            }
                        }
                        break;
                    }
                }
            }
        }
    }
    tracing::debug!(subscriber = %cfg.name, "stopped pulling");
}

/// Waits before the next try, longer after each failure; false when stopping.
async fn pause(ctx: &PullContext, failures: u32) -> bool {
    let wait =
        (Duration::from_millis(100) * 2u32.saturating_pow(failures.min(6))).min(MAX_RETRY_PAUSE);
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = ctx.stop_pulling.cancelled() => false,
    }
}

/// The grace period ended with the handler still running: nak so another
/// replica (or the next start) handles it at once.
async fn abandoned(sub: &Subscriber, reply: Option<async_nats::Subject>) {
    tracing::warn!(subscriber = %sub.config.name, "graceful_timeout reached with the handler still running; the message is nak'd for redelivery");
    let result = match reply {
        Some(reply) => sub
            .host
            .client
            .publish(reply, AckKind::Nak(None).into())
            .await
            .map_err(|e| e.to_string()),
        None => Err("no ack subject".into()),
    };
    sub.stats.failed(crate::nats::ack::FailureCause::Timeout);
    sub.stats.settled(if result.is_ok() {
        crate::stats::Settled::Naked
    } else {
        crate::stats::Settled::Error
    });
}
