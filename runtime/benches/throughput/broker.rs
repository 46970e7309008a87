//! The broker side: preloading streams, timing a consumer's drain, the raw
//! async-nats baseline and the latency of a request-like flow.

use super::*;

/// Creates stream `name` capturing `subjects`.
pub(crate) async fn create_stream(js: &jetstream::Context, name: &str, subjects: &[&str]) {
    let config = stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    js.create_stream(config)
        .await
        .unwrap_or_else(|e| panic!("cannot create stream {name}: {e}"));
}

/// Deletes the streams a measurement used, so the next round can reuse the names.
pub(crate) async fn delete_streams(js: &jetstream::Context, names: &[&str]) {
    for name in names {
        let _ = js.delete_stream(name).await;
    }
}

pub(crate) async fn preload(js: &jetstream::Context, stream: &str, subject: &str, n: usize) {
    create_stream(js, stream, &[subject]).await;
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let mut acks = Vec::with_capacity(1024);
    for _ in 0..n {
        acks.push(
            js.publish(subject.to_string(), payload.clone())
                .await
                .unwrap(),
        );
        if acks.len() == 1024 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks {
        a.await.unwrap();
    }
}

/// Fails the run when a wait takes longer than a healthy service could
/// (a service that died has logged why above).
pub(crate) fn within(t0: Instant, what: &str) {
    assert!(
        t0.elapsed() < Duration::from_secs(180),
        "gave up after 180s waiting for {what}"
    );
}

/// Times from the first delivery until `durable` is drained.
pub(crate) async fn time_drain(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
    n: usize,
) -> Duration {
    let start = first_delivery(js, stream, durable).await;
    drained_since(js, stream, durable, n, start).await
}

/// When `durable` on `stream` first delivered a message (as seen by
/// polling its info).
pub(crate) async fn first_delivery(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> Instant {
    let s = js.get_stream(stream).await.unwrap();
    let t0 = Instant::now();
    loop {
        within(t0, &format!("the first delivery on {stream}"));
        if let Ok(info) = s.consumer_info(durable).await {
            if info.delivered.stream_sequence > 0 {
                return Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// How long after `start` `durable` on `stream` had acked all `n` messages.
pub(crate) async fn drained_since(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
    n: usize,
    start: Instant,
) -> Duration {
    let s = js.get_stream(stream).await.unwrap();
    let t0 = Instant::now();
    loop {
        within(t0, &format!("{durable} on {stream} to drain"));
        let info = s.consumer_info(durable).await.unwrap();
        if info.ack_floor.stream_sequence >= n as u64 && info.num_ack_pending == 0 {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The raw async-nats consumer the runtime is measured against.
/// Where a raw relay publishes each message before acking it.
#[derive(Clone)]
pub(crate) struct Relay {
    pub(crate) js: jetstream::Context,
    pub(crate) subject: String,
    /// Set a `Nats-Msg-Id` on each output, as the runtime does, so the
    /// server de-duplicates them.
    pub(crate) ids: bool,
}

pub(crate) async fn raw_consume(
    consumer: PullConsumer,
    relay: Option<Relay>,
    stop: Arc<tokio::sync::Notify>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    loop {
        let first = tokio::select! { p = permits.clone().acquire_owned() => p.unwrap(), _ = stop.notified() => return };
        let mut held = vec![first];
        while held.len() < BATCH {
            match permits.clone().try_acquire_owned() {
                Ok(p) => held.push(p),
                Err(_) => break,
            }
        }
        let mut batch = consumer
            .batch()
            .max_messages(held.len())
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(m)) = batch.next().await {
            let permit = held.pop().unwrap();
            let relay = relay.clone();
            tokio::spawn(async move {
                if let Some(Relay { js, subject, ids }) = relay {
                    let mut headers = m.headers.clone().unwrap_or_default();
                    if ids {
                        let seq = m.info().map(|i| i.stream_sequence).unwrap_or_default();
                        headers.insert("Nats-Msg-Id", format!("RELAY:raw:{seq}").as_str());
                    }
                    js.publish_with_headers(subject, headers, m.payload.clone())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                }
                m.ack().await.unwrap();
                drop(permit);
            });
        }
    }
}

/// A durable pull consumer `durable` on `stream`, shaped as the service's.
pub(crate) async fn pull_consumer(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
) -> PullConsumer {
    js.get_stream(stream)
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(durable.into()),
            max_ack_pending: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
}

pub(crate) async fn raw_throughput(js: &jetstream::Context, n: usize) -> f64 {
    let stream = fresh("RAW");
    preload(js, &stream, &format!("{}.in", stream.to_lowercase()), n).await;
    let consumer = pull_consumer(js, &stream, "raw").await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(raw_consume(consumer, None, stop.clone()));
    let took = time_drain(js, &stream, "raw", n).await;
    stop.notify_waiters();
    task.abort();
    delete_streams(js, &[&stream]).await;
    n as f64 / took.as_secs_f64()
}

/// Streams named so far by [`fresh`].
static STREAMS_NAMED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A stream name no earlier case of this run used, starting with `prefix`.
/// Created again at once under the name just deleted, a stream once could
/// not be created ("error creating store for stream", JetStream error
/// 10049: the relay's input in CI's smoke run, the nats-py baseline's in a
/// full run): a case must not depend on the deletion having finished.
pub(crate) fn fresh(prefix: &str) -> String {
    let n = STREAMS_NAMED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}R{n}")
}

/// A raw async-nats relay draining `n` preloaded messages: consume,
/// publish each to a stream and wait for its PubAck (with a `Nats-Msg-Id`
/// when `ids`), then ack — the shape of the Rust relay guest's run.
pub(crate) async fn raw_relay_throughput(js: &jetstream::Context, n: usize, ids: bool) -> f64 {
    let input = fresh("RELAY");
    let output = format!("{input}_OUT");
    let (input, output) = (input.as_str(), output.as_str());
    let subject = format!("{}.out", input.to_lowercase());
    preload(js, input, &format!("{}.in", input.to_lowercase()), n).await;
    create_stream(js, output, &[&subject]).await;
    let consumer = pull_consumer(js, input, "raw").await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let relay = Relay {
        js: js.clone(),
        subject: subject.clone(),
        ids,
    };
    let task = tokio::spawn(raw_consume(consumer, Some(relay), stop.clone()));
    let took = time_drain(js, input, "raw", n).await;
    stop.notify_waiters();
    task.abort();
    delete_streams(js, &[input, output]).await;
    n as f64 / took.as_secs_f64()
}

/// p50 and p99 of end-to-end latency (publish → relayed output) at `rate` msgs/s.
pub(crate) async fn latency(
    js: &jetstream::Context,
    client: &async_nats::Client,
    input: &str,
    output: &str,
    rate: u32,
    seconds: u64,
) -> (f64, f64) {
    let mut sub = client.subscribe(output.to_string()).await.unwrap();
    client.flush().await.unwrap();
    let total = rate as u64 * seconds;
    let collector = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(total as usize);
        while samples.len() < total as usize {
            match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
                Ok(Some(m)) => {
                    let sent: u128 = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Bench-Ts"))
                        .and_then(|v| v.as_str().parse().ok())
                        .unwrap_or(0);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos();
                    samples.push((now - sent) as f64 / 1e6);
                }
                _ => break,
            }
        }
        samples
    });
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..total {
        tick.tick().await;
        let mut h = async_nats::HeaderMap::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        h.insert("Bench-Ts", now.to_string().as_str());
        let js = js.clone();
        let input = input.to_string();
        tokio::spawn(async move {
            js.publish_with_headers(input, h, bytes::Bytes::from(vec![b'x'; PAYLOAD]))
                .await
                .unwrap()
                .await
                .unwrap()
        });
    }
    let mut samples = collector.await.unwrap();
    assert!(!samples.is_empty(), "no latency samples");
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (pct(0.50), pct(0.99))
}
