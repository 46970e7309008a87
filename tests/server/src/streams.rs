//! What tests, the benchmark and the demo wait for on a server: a condition
//! polled with a deadline, a stream holding messages, a durable created or
//! drained; and publishing with the PubAck awaited.

use async_nats::jetstream;
use std::time::{Duration, Instant};

/// Polls `check` every 20ms until it returns `Some` or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A consumer's info as the server gives it now.
pub async fn consumer_info(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> jetstream::consumer::Info {
    js.get_stream(stream)
        .await
        .expect("stream exists")
        .consumer_info(durable)
        .await
        .expect("consumer exists")
}

/// A consumer's pending and ack-pending counts.
pub async fn consumer_counts(js: &jetstream::Context, stream: &str, durable: &str) -> (u64, usize) {
    let info = consumer_info(js, stream, durable).await;
    (info.num_pending, info.num_ack_pending)
}

/// Publishes to a stream subject and waits for the PubAck.
pub async fn js_publish(
    js: &jetstream::Context,
    subject: &str,
    payload: impl Into<bytes::Bytes>,
) -> u64 {
    js.publish(subject.to_string(), payload.into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// Creates stream `name` capturing `subject`, with the server's defaults.
pub async fn create_stream(js: &jetstream::Context, name: &str, subject: &str) {
    js.create_stream(jetstream::stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        ..Default::default()
    })
    .await
    .unwrap();
}

/// How many messages `stream` holds.
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream exists");
    s.info().await.expect("stream info").state.messages
}

/// Waits until the consumer has nothing pending and nothing unacknowledged.
pub async fn drained(js: &jetstream::Context, stream: &str, durable: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stream_handle = js.get_stream(stream).await.expect("stream exists");
        let info = stream_handle
            .consumer_info(durable)
            .await
            .expect("consumer exists");
        if (info.num_pending, info.num_ack_pending) == (0, 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "consumer {durable} not drained after 20s: {} pending, {} awaiting ack, {} redelivered, delivered {:?}, ack floor {:?}",
            info.num_pending,
            info.num_ack_pending,
            info.num_redelivered,
            info.delivered,
            info.ack_floor
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a service started as a process has created its durable.
/// Start-up includes compiling components on a cold cache (seconds for a
/// Python or JavaScript component, more on a loaded machine), hence the
/// generous deadline.
pub async fn durable_exists(js: &jetstream::Context, stream: &str, durable: &str) {
    eventually(
        Duration::from_secs(180),
        &format!("durable {durable} on {stream} to exist"),
        || async {
            js.get_stream(stream)
                .await
                .ok()?
                .consumer_info(durable)
                .await
                .ok()
        },
    )
    .await;
}

/// Waits until `stream` holds `n` messages.
pub async fn stream_has(js: &jetstream::Context, stream: &str, n: u64) {
    eventually(
        Duration::from_secs(30),
        &format!("{n} messages in {stream}"),
        || async { (stream_messages(js, stream).await == n).then_some(()) },
    )
    .await
}

/// The first `n` messages of `stream`, parsed as JSON.
pub async fn json_messages(
    js: &jetstream::Context,
    stream: &str,
    n: u64,
) -> Vec<serde_json::Value> {
    let s = js.get_stream(stream).await.expect("stream exists");
    let mut out = Vec::new();
    for seq in 1..=n {
        let m = s
            .get_raw_message(seq)
            .await
            .unwrap_or_else(|e| panic!("{stream} message {seq}: {e}"));
        out.push(
            serde_json::from_slice(&m.payload)
                .unwrap_or_else(|e| panic!("{stream} message {seq} is not JSON: {e}")),
        );
    }
    out
}
