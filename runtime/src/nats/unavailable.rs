//! NATS briefly unavailable — a stream without a leader during an
//! election, a PubAck that does not come, JetStream answering 503, the
//! connection down — is not the message's fault, so it must not cost the
//! message a delivery: a call that fails for that reason is made again,
//! after a pause doubling up to [`MAX_PAUSE`], until NATS answers (the
//! server then de-duplicates a publish that was stored after all, by its
//! `Nats-Msg-Id`). While the connection is down, the next try waits for it
//! to come back: the client would queue every try and send them all at
//! once. Whether an error means "unavailable" is the error's own kind
//! (`unavailable()` on each); the callers count and time the waits.

use crate::error::ErrorChain;
use std::time::Duration;
use tokio::time::Instant;

/// The first pause after a call failed for want of NATS.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between tries.
pub const MAX_PAUSE: Duration = Duration::from_secs(2);
/// How often a try waiting for the connection looks at it.
const CONNECTION_POLL: Duration = Duration::from_millis(100);
/// Every this many tries, the wait is logged again.
const LOG_EVERY: u32 = 10;
/// How long a call keeps trying unless it is its message's last delivery:
/// a stream's default duplicate window, past which a try whose first
/// attempt was stored after all would be stored again.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// How long a call keeps trying while NATS is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// At most this long; then the last failure is returned.
    AtMost(Duration),
    /// Until NATS answers (the message's last delivery: failing would
    /// dead-letter it for NATS's sake), or the runtime gives up on it.
    UntilAnswered,
}

/// Runs `call` until it succeeds, fails for another reason than NATS
/// being unavailable (`unavailable` tells), or `patience` runs out; while
/// `connected` says no, the next try waits for it. `waited` hears how long
/// each failed try and the wait after it took. `what` names the call in
/// logs, and is only formatted when there is something to log: most calls
/// succeed at once, on the per-message path.
pub async fn retrying<T, E, F>(
    what: impl Fn() -> String,
    patience: Patience,
    mut call: impl FnMut() -> F,
    unavailable: impl Fn(&E) -> bool,
    connected: impl Fn() -> bool,
    mut waited: impl FnMut(Duration),
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let mut pause = FIRST_PAUSE;
    let mut tries = 0u32;
    let first = Instant::now();
    let out_of_patience = |now: Instant| match patience {
        Patience::AtMost(limit) => now.duration_since(first) >= limit,
        Patience::UntilAnswered => false,
    };
    loop {
        let started = Instant::now();
        match call().await {
            Err(e) if unavailable(&e) && !out_of_patience(Instant::now()) => {
                tries += 1;
                if tries == 1 || tries.is_multiple_of(LOG_EVERY) {
                    tracing::warn!(
                        "{}: {}; NATS is unavailable, trying again until it answers (try {tries}, {:.1}s so far)",
                        what(),
                        ErrorChain(&e),
                        first.elapsed().as_secs_f64()
                    );
                }
                tokio::time::sleep(pause).await;
                while !connected() && !out_of_patience(Instant::now()) {
                    tokio::time::sleep(CONNECTION_POLL).await;
                }
                waited(started.elapsed());
                pause = (pause * 2).min(MAX_PAUSE);
            }
            done => {
                if tries > 0 {
                    match &done {
                        Err(e) if unavailable(e) => tracing::warn!(
                            "{}: NATS still unavailable after {tries} tries in {:.1}s: giving up ({})",
                            what(),
                            first.elapsed().as_secs_f64(),
                            ErrorChain(e)
                        ),
                        _ => tracing::info!(
                            "{}: NATS answered after {tries} failed tries in {:.1}s",
                            what(),
                            first.elapsed().as_secs_f64()
                        ),
                    }
                }
                return done;
            }
        }
    }
}

/// [`retrying`] for a call on `client` outside the message path (reading
/// a component, deploying): for at most `limit`, waiting for the
/// connection when it is down.
pub async fn patiently<T, E, F>(
    client: &async_nats::Client,
    limit: Duration,
    what: impl Fn() -> String,
    call: impl FnMut() -> F,
    unavailable: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    retrying(
        what,
        Patience::AtMost(limit),
        call,
        unavailable,
        || client.connection_state() == async_nats::connection::State::Connected,
        |_| {},
    )
    .await
}

/// Whether `e` says its stream (a bucket's) does not exist, rather than
/// that NATS did not answer.
pub fn stream_missing(e: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
    e.source()
        .and_then(|s| s.downcast_ref::<GetStreamError>())
        .is_some_and(|g| {
            matches!(g.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct E(&'static str);

    #[tokio::test(start_paused = true)]
    async fn tries_again_while_unavailable_and_stops_at_another_failure() {
        let mut calls = 0;
        let mut waits = Vec::new();
        let done: Result<u32, E> = retrying(
            || "a publish".to_string(),
            Patience::UntilAnswered,
            || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1..=3 => Err(E("no leader")),
                        _ => Ok(n),
                    }
                }
            },
            |e| e.0 == "no leader",
            || true,
            |d| waits.push(d),
        )
        .await;
        assert_eq!(done.unwrap(), 4);
        assert_eq!(
            waits,
            [100, 200, 400].map(Duration::from_millis),
            "each failed try's pause, doubling"
        );
        let mut calls = 0;
        let failed: Result<(), E> = retrying(
            || "a publish".to_string(),
            Patience::UntilAnswered,
            || {
                calls += 1;
                async { Err(E("too large")) }
            },
            |e| e.0 == "no leader",
            || true,
            |_| panic!("no wait for another failure"),
        )
        .await;
        assert_eq!((failed.unwrap_err().0, calls), ("too large", 1));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_connection_and_gives_up_when_out_of_patience() {
        // Down for the first 1.5 s: the second try waits for it.
        let start = Instant::now();
        let mut tried_at = Vec::new();
        let up = || start.elapsed() >= Duration::from_millis(1500);
        let result: Result<(), E> = retrying(
            || "a request".to_string(),
            Patience::AtMost(Duration::from_secs(10)),
            || {
                tried_at.push(start.elapsed());
                async { Err(E("disconnected")) }
            },
            |e| e.0 == "disconnected",
            up,
            |_| {},
        )
        .await;
        assert!(result.is_err(), "given up after 10 s");
        assert_eq!(tried_at[0], Duration::ZERO);
        assert!(
            tried_at[1] >= Duration::from_millis(1500),
            "the second try waited for the connection: {tried_at:?}"
        );
        let last = *tried_at.last().unwrap();
        assert!(
            last >= Duration::from_secs(10) && last <= Duration::from_secs(10) + MAX_PAUSE,
            "the first try past its patience was the last: {tried_at:?}"
        );
        let calls = Cell::new(0);
        let _ = retrying(
            || "a request".to_string(),
            Patience::AtMost(Duration::ZERO),
            || {
                calls.set(calls.get() + 1);
                async { Err::<(), _>(E("disconnected")) }
            },
            |e| e.0 == "disconnected",
            || true,
            |_| panic!("no patience, no wait"),
        )
        .await;
        assert_eq!(calls.get(), 1);
    }
}
