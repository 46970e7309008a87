//! Watches one subscriber's durable on the server while it runs: records
//! the ack floor (what `recover` recreates a deleted durable from, and what
//! the settle ledger prunes by) and reports when an operator pauses or
//! resumes the consumer. A paused consumer is not drift: the runtime keeps
//! its pulls waiting and goes on when the server resumes it.

use crate::dispatch::Subscriber;
use crate::error::ErrorChain;
use std::sync::Arc;
use std::time::Duration;

/// How often the durable is looked at.
pub const EVERY: Duration = Duration::from_secs(2);

/// Looks at the durable every [`EVERY`] until the service stops pulling.
pub async fn run(sub: Arc<Subscriber>) {
    let cfg = &sub.config;
    let settler = sub.settler();
    let mut tick = tokio::time::interval(EVERY);
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

/// When `stream` was created, in nanoseconds since the Unix epoch.
pub fn created_ns(stream: &async_nats::jetstream::stream::Stream) -> u64 {
    u64::try_from(stream.cached_info().created.unix_timestamp_nanos()).unwrap_or(0)
}
