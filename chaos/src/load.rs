//! The load generator: publishes the orders on `order.created` at a steady
//! rate while the scenario breaks things, each with the Msg-Id `order-<i>`
//! and awaiting its PubAck, retrying a failed publish with the same id so a
//! retry never stores an input twice. It notes when each order was first
//! sent: an order's wait runs from then to its status output.

use crate::service::ORDER_SUBJECT;
use anyhow::{anyhow, Context as _};
use async_nats::jetstream;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Publishes awaiting their PubAck at once.
const IN_FLIGHT: usize = 64;
/// One attempt's bound (the request itself times out after 2 s).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before retrying a failed publish.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long one order may take to be stored before the run gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// The payload of order `i`: one item, `o<i>-a`.
pub fn order(i: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"order_id":"o{i}","user_id":"u","total_amount":1.0,"items":[{{"id":"o{i}-a","quantity":1}}]}}"#
    ))
}

/// What the generator did.
pub struct LoadSummary {
    /// Orders stored (PubAck received).
    pub stored: u64,
    /// Publish attempts that failed and were retried.
    pub retries: u64,
    /// When each order (by its number) was first sent.
    pub first_sent: Vec<SystemTime>,
}

/// A running load generator.
pub struct Load {
    stored: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
    /// Per order, microseconds since the Unix epoch of its first attempt.
    first_sent: Arc<Vec<AtomicU64>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Load {
    /// Starts publishing `messages` orders spread evenly over `spread`.
    pub fn start(js: jetstream::Context, messages: u64, spread: Duration) -> Load {
        let stored = Arc::new(AtomicU64::new(0));
        let retries = Arc::new(AtomicU64::new(0));
        let first_sent = Arc::new((0..messages).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let task = tokio::spawn(generate(
            js,
            messages,
            spread,
            Counters {
                stored: stored.clone(),
                retries: retries.clone(),
                first_sent: first_sent.clone(),
            },
        ));
        Load {
            stored,
            retries,
            first_sent,
            task,
        }
    }

    /// Orders stored so far.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Waits until `n` orders are stored.
    pub async fn wait_stored(&self, n: u64, within: Duration) -> anyhow::Result<()> {
        crate::poll::eventually(&format!("{n} orders stored"), within, || async {
            Ok((self.stored() >= n).then_some(()))
        })
        .await
    }

    /// Waits until every order is stored.
    pub async fn finish(self) -> anyhow::Result<LoadSummary> {
        let Load {
            stored,
            retries,
            first_sent,
            task,
        } = self;
        task.await.context("the load generator panicked")??;
        Ok(LoadSummary {
            stored: stored.load(Ordering::Relaxed),
            retries: retries.load(Ordering::Relaxed),
            first_sent: first_sent
                .iter()
                .map(|t| UNIX_EPOCH + Duration::from_micros(t.load(Ordering::Relaxed)))
                .collect(),
        })
    }
}

/// What the generator counts and notes as it goes.
#[derive(Clone)]
struct Counters {
    stored: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
    first_sent: Arc<Vec<AtomicU64>>,
}

async fn generate(
    js: jetstream::Context,
    messages: u64,
    spread: Duration,
    counters: Counters,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut publishes = JoinSet::new();
    let start = Instant::now();
    for i in 0..messages {
        tokio::time::sleep_until(start + spread.mul_f64(i as f64 / messages as f64)).await;
        let permit = permits.clone().acquire_owned().await?;
        let (js, counters) = (js.clone(), counters.clone());
        publishes.spawn(async move {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            counters.first_sent[i as usize].store(now.as_micros() as u64, Ordering::Relaxed);
            publish_until_stored(&js, i, &counters.retries).await?;
            counters.stored.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            anyhow::Ok(())
        });
        // Surface a failure as soon as it happens rather than after the rest.
        while let Some(done) = publishes.try_join_next() {
            done??;
        }
    }
    while let Some(done) = publishes.join_next().await {
        done??;
    }
    Ok(())
}

async fn publish_until_stored(
    js: &jetstream::Context,
    i: u64,
    retries: &AtomicU64,
) -> anyhow::Result<()> {
    let id = format!("order-{i}");
    let give_up = Instant::now() + GIVE_UP_AFTER;
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let attempt = async {
            js.publish_with_headers(ORDER_SUBJECT, headers, order(i))
                .await
                .map_err(anyhow::Error::from)?
                .await
                .map_err(anyhow::Error::from)
        };
        let error = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(Ok(_ack)) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => anyhow!("no PubAck within {ATTEMPT_TIMEOUT:?}"),
        };
        if Instant::now() >= give_up {
            return Err(error.context(format!(
                "order {id} not stored after {GIVE_UP_AFTER:?} of retries"
            )));
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}
