//! NATS briefly unavailable — a stream without a leader during an
//! election, a PubAck that does not come, the connection down — is not the
//! message's fault, so it must not cost the message a delivery: a call
//! that fails for that reason is made again, after a pause doubling up to
//! [`MAX_PAUSE`], until NATS answers (the server then de-duplicates a
//! publish that was stored after all, by its `Nats-Msg-Id`). Whether an
//! error means "unavailable" is the error's own kind (`unavailable()` on
//! each); the callers count and time the waits.

use crate::error::ErrorChain;
use std::time::Duration;
use tokio::time::Instant;

/// The first pause after a call failed for want of NATS.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between tries.
pub const MAX_PAUSE: Duration = Duration::from_secs(2);
/// Every this many tries, the wait is logged again.
const LOG_EVERY: u32 = 10;

/// Runs `call` until it succeeds, or fails for another reason than NATS
/// being unavailable (`unavailable` tells); `waited` hears how long each
/// failed try and the pause after it took. `what` names the call in logs.
pub async fn retrying<T, E, F>(
    what: &str,
    mut call: impl FnMut() -> F,
    unavailable: impl Fn(&E) -> bool,
    mut waited: impl FnMut(Duration),
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let mut pause = FIRST_PAUSE;
    let mut tries = 0u32;
    let first = Instant::now();
    loop {
        let started = Instant::now();
        match call().await {
            Err(e) if unavailable(&e) => {
                tries += 1;
                if tries == 1 || tries.is_multiple_of(LOG_EVERY) {
                    tracing::warn!(
                        "{what}: {}; NATS is unavailable, trying again until it answers (try {tries}, {:.1}s so far)",
                        ErrorChain(&e),
                        first.elapsed().as_secs_f64()
                    );
                }
                tokio::time::sleep(pause).await;
                waited(started.elapsed());
                pause = (pause * 2).min(MAX_PAUSE);
            }
            done => {
                if tries > 0 {
                    tracing::info!(
                        "{what}: NATS answered after {tries} failed tries in {:.1}s",
                        first.elapsed().as_secs_f64()
                    );
                }
                return done;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct E(&'static str);

    #[tokio::test(start_paused = true)]
    async fn tries_again_while_unavailable_and_stops_at_another_failure() {
        let mut calls = 0;
        let mut waits = Vec::new();
        let done: Result<u32, E> = retrying(
            "a publish",
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
            "a publish",
            || {
                calls += 1;
                async { Err(E("too large")) }
            },
            |e| e.0 == "no leader",
            |_| panic!("no wait for another failure"),
        )
        .await;
        assert_eq!((failed.unwrap_err().0, calls), ("too large", 1));
    }
}
