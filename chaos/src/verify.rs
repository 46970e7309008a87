//! Counting what the service stored: every order in ORDER_EVENTS must have
//! an order.status output or a DEAD_LETTERS copy (else it is lost), no
//! output may be stored twice, and the durable must end with nothing
//! pending and nothing awaiting an ack. Each stored message's time is kept:
//! an order's wait ends when its status output was stored.

use crate::poll::eventually;
use crate::service::{DURABLE, INPUT_STREAM};
use anyhow::{anyhow, Context as _};
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long reads may take while a cluster settles after a restart.
const READ_WITHIN: Duration = Duration::from_secs(30);

/// What the streams hold at the end of a scenario.
pub struct Counts {
    /// Orders stored in ORDER_EVENTS.
    pub inputs: u64,
    /// Orders stored more than once in ORDER_EVENTS (the Msg-Id failed).
    pub duplicate_inputs: u64,
    /// Messages in ORDER_STATUS.
    pub status: u64,
    /// Messages in INVENTORY.
    pub inventory: u64,
    /// Messages in DEAD_LETTERS.
    pub dead_lettered: u64,
    /// Dead letters by their `Natsapp-Cause` header.
    pub dead_letter_causes: BTreeMap<String, u64>,
    /// When each order's first status output was stored.
    pub status_at: HashMap<String, SystemTime>,
    /// The order ids of ORDER_EVENTS by stream sequence (index 0 is
    /// sequence 1).
    pub inputs_by_sequence: Vec<String>,
    /// Order ids with neither a status output nor a dead-letter copy.
    pub lost: BTreeSet<String>,
    /// Status outputs beyond one per order.
    pub duplicate_status: u64,
    /// Inventory outputs beyond one per item.
    pub duplicate_inventory: u64,
}

/// The durable's backlog.
#[derive(Clone, Copy)]
pub struct ConsumerState {
    /// Messages not yet delivered.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub ack_pending: usize,
}

impl ConsumerState {
    /// Nothing left to deliver and nothing awaiting an ack.
    pub fn settled(&self) -> bool {
        self.pending == 0 && self.ack_pending == 0
    }
}

/// The durable's info as the server gives it now.
pub async fn durable_info(js: &jetstream::Context) -> anyhow::Result<consumer::Info> {
    js.get_stream(INPUT_STREAM)
        .await
        .with_context(|| format!("cannot look up stream {INPUT_STREAM}"))?
        .consumer_info(DURABLE)
        .await
        .with_context(|| format!("cannot read consumer {DURABLE} on {INPUT_STREAM}"))
}

/// The durable's current state.
pub async fn consumer_state(js: &jetstream::Context) -> anyhow::Result<ConsumerState> {
    let info = durable_info(js).await?;
    Ok(ConsumerState {
        pending: info.num_pending,
        ack_pending: info.num_ack_pending,
    })
}

/// The stream sequences delivered and not yet acknowledged: above the ack
/// floor, up to the last delivered.
pub async fn unacknowledged(
    js: &jetstream::Context,
) -> anyhow::Result<std::ops::RangeInclusive<u64>> {
    let info = durable_info(js).await?;
    Ok(info.ack_floor.stream_sequence + 1..=info.delivered.stream_sequence)
}

/// Waits until the durable exists (the first runtime has declared
/// everything).
pub async fn wait_durable(js: &jetstream::Context, within: Duration) -> anyhow::Result<()> {
    eventually(&format!("durable {DURABLE} to exist"), within, || async {
        consumer_state(js).await.map(|_| Some(()))
    })
    .await
}

/// Waits until some messages are delivered and unacknowledged, so a fault
/// hits handlers at work.
pub async fn wait_in_flight(js: &jetstream::Context, within: Duration) -> anyhow::Result<()> {
    eventually("messages in flight", within, || async {
        Ok((consumer_state(js).await?.ack_pending > 0).then_some(()))
    })
    .await
}

/// Polls until the durable is settled or `within` passes; returns the last
/// state either way (not settling is a finding, not an error).
pub async fn wait_settled(
    js: &jetstream::Context,
    within: Duration,
) -> anyhow::Result<ConsumerState> {
    let settled = eventually("the durable to settle", within, || async {
        Ok(consumer_state(js).await?.settled().then_some(()))
    })
    .await;
    match settled {
        Ok(()) => consumer_state(js).await,
        Err(_) => {
            eventually("the durable's state", READ_WITHIN, || async {
                consumer_state(js).await.map(Some)
            })
            .await
        }
    }
}

/// Reads every stream and counts.
pub async fn count(js: &jetstream::Context) -> anyhow::Result<Counts> {
    let inputs = order_ids(&stored(js, INPUT_STREAM).await?, INPUT_STREAM, "order_id")?;
    let status_messages = stored(js, "ORDER_STATUS").await?;
    let status = order_ids(&status_messages, "ORDER_STATUS", "order_id")?;
    let inventory = order_ids(&stored(js, "INVENTORY").await?, "INVENTORY", "item_id")?;
    let dead_messages = stored(js, "DEAD_LETTERS").await?;
    let dead = order_ids(&dead_messages, "DEAD_LETTERS", "order_id")?;

    let mut status_at = HashMap::new();
    for (id, message) in status.iter().zip(&status_messages) {
        status_at.entry(id.clone()).or_insert(message.at);
    }
    let mut dead_letter_causes = BTreeMap::new();
    for message in &dead_messages {
        let cause = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Natsapp-Cause"))
            .map_or("(none)".to_string(), |v| v.as_str().to_string());
        *dead_letter_causes.entry(cause).or_insert(0) += 1;
    }
    let distinct_inputs: HashSet<&String> = inputs.iter().collect();
    let distinct_status: HashSet<&String> = status.iter().collect();
    let distinct_inventory: HashSet<&String> = inventory.iter().collect();
    let dead: HashSet<&String> = dead.iter().collect();
    let lost = distinct_inputs
        .iter()
        .filter(|id| !distinct_status.contains(*id) && !dead.contains(*id))
        .map(|id| id.to_string())
        .collect();
    Ok(Counts {
        inputs: inputs.len() as u64,
        duplicate_inputs: (inputs.len() - distinct_inputs.len()) as u64,
        status: status.len() as u64,
        inventory: inventory.len() as u64,
        dead_lettered: dead.len() as u64,
        dead_letter_causes,
        status_at,
        lost,
        inputs_by_sequence: inputs.clone(),
        duplicate_status: (status.len() - distinct_status.len()) as u64,
        duplicate_inventory: (inventory.len() - distinct_inventory.len()) as u64,
    })
}

/// One message as its stream holds it.
struct Stored {
    payload: Bytes,
    headers: Option<async_nats::HeaderMap>,
    /// When the stream stored it.
    at: SystemTime,
}

/// The string field `key` of each JSON payload.
fn order_ids(messages: &[Stored], stream: &str, key: &str) -> anyhow::Result<Vec<String>> {
    messages
        .iter()
        .enumerate()
        .map(|(n, Stored { payload: p, .. })| {
            let value: serde_json::Value = serde_json::from_slice(p).with_context(|| {
                format!(
                    "message {} of {stream} is not JSON: {:?}",
                    n + 1,
                    String::from_utf8_lossy(p)
                )
            })?;
            value[key].as_str().map(str::to_string).ok_or_else(|| {
                anyhow!(
                    "message {} of {stream} has no string {key:?}: {value}",
                    n + 1
                )
            })
        })
        .collect()
}

/// Every message of `stream`, read with an ordered consumer.
async fn stored(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<Stored>> {
    eventually(
        &format!("every message of {stream}"),
        READ_WITHIN,
        || async { read_all(js, stream).await.map(Some) },
    )
    .await
}

async fn read_all(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<Stored>> {
    let mut handle = js
        .get_stream(stream)
        .await
        .with_context(|| format!("cannot look up stream {stream}"))?;
    let expected = handle
        .info()
        .await
        .with_context(|| format!("cannot read info of {stream}"))?
        .state
        .messages;
    let mut out = Vec::with_capacity(expected as usize);
    if expected == 0 {
        return Ok(out);
    }
    let mut messages = handle
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .with_context(|| format!("cannot create an ordered consumer on {stream}"))?
        .messages()
        .await
        .with_context(|| format!("cannot read {stream}"))?;
    while (out.len() as u64) < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .with_context(|| {
                format!(
                    "{stream}: no message {} of {expected} within 10s",
                    out.len() + 1
                )
            })?
            .with_context(|| format!("{stream}: the ordered consumer ended"))?
            .with_context(|| format!("{stream}: cannot read message {}", out.len() + 1))?;
        let at = message
            .info()
            .map_err(|e| anyhow!("{stream}: message {} has no metadata: {e}", out.len() + 1))?
            .published
            .unix_timestamp_nanos();
        out.push(Stored {
            payload: message.payload.clone(),
            headers: message.headers.clone(),
            at: UNIX_EPOCH + Duration::from_nanos(u64::try_from(at).unwrap_or(0)),
        });
    }
    Ok(out)
}
