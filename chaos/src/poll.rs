//! Polling with a deadline: how every step waits for the system to reach a
//! state (never a bare sleep for correctness).

use anyhow::anyhow;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked.
const EVERY: Duration = Duration::from_millis(100);

/// Calls `check` every 100 ms until it returns `Ok(Some(_))`. An `Err` counts
/// as "not yet" (servers fail over, clients reconnect); after `within` the
/// error names `what` and carries the last error seen.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(e) => e.context(format!("timed out after {within:?} waiting for {what}")),
                None => anyhow!("timed out after {within:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(EVERY).await;
    }
}
