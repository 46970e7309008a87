//! Bounded concurrency and independent subscribers.

use natsapp_wasm_tests::*;
use std::time::Duration;

const TWO_SUBSCRIBERS: &str = r#"
[service]
name = "two"
graceful_timeout = "1s"

[nats]
servers = ["{url}"]

[[streams]]
name = "IN"
subjects = ["in.>"]

[[streams]]
name = "OUT"
subjects = ["out.>"]

[[subscribers]]
name = "kit"
component = "{testkit}"
subject = "in.kit"
stream = "IN"
durable = "kit"
concurrency = 2
pull = { batch_size = 2, timeout = "1s" }
publish = ["testkit.out.>", "svc.>"]
limits = { timeout = "120s" }

[[subscribers]]
name = "echo"
component = "{echo}"
subject = "in.echo"
stream = "IN"
durable = "echo"
publish = ["out.>"]
config = { output = "out.echo" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded_and_a_stuck_subscriber_stalls_no_other() {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, TWO_SUBSCRIBERS);
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    let mut gate = Gate::new(&server.client().await).await;
    // Four messages that wait at a gate, on a subscriber limited to two at once.
    for _ in 0..4 {
        js_publish(&js, "in.kit", GATED).await;
    }
    gate.arrived(2).await;
    let busy = stats_until(&running, "kit", "two handlers running", |s| {
        s.in_flight == 2
    })
    .await;
    assert_eq!(
        busy.received, 2,
        "a subscriber with concurrency 2 took more than two messages"
    );
    let (_, ack_pending) = consumer_counts(&js, "IN", "kit").await;
    assert_eq!(ack_pending, 2, "the runtime fetched more than it can run");

    // Meanwhile the other subscriber runs freely.
    for i in 0..20 {
        js_publish(&js, "in.echo", format!("e{i}")).await;
    }
    stream_has(&js, "OUT", 20).await;
    let kit = running.subscriber("kit");
    assert_eq!(
        (kit.received, kit.acked),
        (2, 0),
        "echo finished while kit was still busy"
    );

    // Open the gate for each pair: never more than two at once.
    gate.open().await;
    gate.arrived(2).await;
    gate.open().await;
    let mut peak = 0;
    let done = eventually(Duration::from_secs(20), "all four slow messages", || {
        let s = running.subscriber("kit");
        peak = peak.max(s.in_flight);
        async move { (s.acked == 4).then_some(s) }
    })
    .await;
    assert!(peak <= 2, "in flight reached {peak}");
    assert_eq!(done.received, 4);
    drained(&js, "IN", "kit").await;
    drained(&js, "IN", "echo").await;
}
