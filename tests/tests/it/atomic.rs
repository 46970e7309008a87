//! `outputs.mode = "atomic"`: a handler's outputs are stored all together
//! after it succeeds, or not at all; a redelivery recognises outputs an
//! earlier delivery committed; a crash at any point leaves all or none.

use crate::{kit_service, Kit};
use natsapp_wasm::message::FailureCause;
use natsapp_wasm_tests::*;
use serde_json::json;
use std::time::Duration;

const ATOMIC: &str = "outputs = { mode = \"atomic\" }";

/// A fan-out of `n` outputs to each of `subjects`, then `rest` (more fields).
fn fanout(subjects: &[&str], n: u32, rest: serde_json::Value) -> String {
    let mut op = json!({"op": "fanout", "subjects": subjects, "n": n});
    if let serde_json::Value::Object(more) = rest {
        op.as_object_mut().unwrap().extend(more);
    }
    op.to_string()
}

/// The payloads `stream` holds, in order.
async fn payloads(js: &async_nats::jetstream::Context, stream: &str) -> Vec<String> {
    let n = stream_messages(js, stream).await;
    let handle = js.get_stream(stream).await.unwrap();
    let mut out = Vec::new();
    for seq in 1..=n {
        let m = handle.get_raw_message(seq).await.unwrap();
        out.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_fails_after_publishing_stores_nothing_and_its_redelivery_stores_each_output_once(
) {
    // The redelivery waits 3 s: long enough to look at OUT in between.
    let kit = Kit::start(kit_service(&format!(
        "{ATOMIC}\nconsumer = {{ max_deliver = 3, backoff = [\"3s\"] }}"
    )))
    .await;
    let mut reports = subscribe(&kit.client, "testkit.out.fanout").await;
    js_publish(
        &kit.js,
        "in.kit",
        fanout(&["out.a"], 500, json!({"fail_until": 2})),
    )
    .await;
    stats_until(&kit.running, "kit", "the first delivery failed", |s| {
        s.retried == 1
    })
    .await;
    assert_eq!(
        stream_messages(&kit.js, "OUT").await,
        0,
        "a failed handler stored outputs"
    );
    stats_until(&kit.running, "kit", "acked on the redelivery", |s| {
        s.acked == 1
    })
    .await;
    drained(&kit.js, "IN", "kit").await;

    // The report is a core publish: held like the rest, so only the
    // successful delivery's went out, and after the commit.
    let report = next_json(&mut reports, Duration::from_secs(5)).await;
    assert_eq!(
        report,
        json!({"published": 500, "with_puback": 0, "error": null, "delivered": 2}),
        "publish returns no PubAck before the commit"
    );
    assert!(silent(&mut reports, Duration::from_millis(300)).await);
    let stored = payloads(&kit.js, "OUT").await;
    assert_eq!(stored.len(), 500);
    assert!(
        stored.iter().all(|p| p.ends_with(":2")),
        "{:?}",
        &stored[..3]
    );
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (
            s.batches_committed,
            s.outputs_committed,
            s.failed(FailureCause::Commit)
        ),
        (1, 500, 0),
        "one batch whose PubAck counts 500: {s:?}"
    );
}

/// The subjects `stream` holds, in order.
async fn subjects(js: &async_nats::jetstream::Context, stream: &str) -> Vec<String> {
    let n = stream_messages(js, stream).await;
    let handle = js.get_stream(stream).await.unwrap();
    let mut out = Vec::new();
    for seq in 1..=n {
        out.push(
            handle
                .get_raw_message(seq)
                .await
                .unwrap()
                .subject
                .to_string(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guests_own_ack_waits_for_the_commit_and_a_nak_commits_nothing() {
    let kit = Kit::start(kit_service(&format!(
        "{ATOMIC}\nconsumer = {{ max_deliver = 3 }}"
    )))
    .await;
    // Acked by the guest, then failed: the ack was never sent, so the
    // message comes back, and nothing of the failed delivery is stored.
    js_publish(
        &kit.js,
        "in.kit",
        fanout(&["out.acked"], 3, json!({"settle": "ack", "fail_until": 2})),
    )
    .await;
    // Nak'd by the guest on each of its 3 deliveries: nothing committed,
    // then terminated on the extra delivery.
    js_publish(
        &kit.js,
        "in.kit",
        fanout(&["out.naked"], 3, json!({"settle": "nak"})),
    )
    .await;
    drained(&kit.js, "IN", "kit").await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (s.acked, s.naked, s.past_max_deliver, s.batches_committed),
        (1, 4, 1, 1),
        "one retry of the first, three naks of the second: {s:?}"
    );
    assert_eq!(
        payloads(&kit.js, "OUT").await,
        ["0:2", "1:2", "2:2"],
        "only the acked delivery's outputs"
    );
    assert_eq!(subjects(&kit.js, "OUT").await, ["out.acked"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_the_servers_limit_fails_the_publish_that_passes_it() {
    // A tenant whose handlers may publish more than a batch holds.
    let tenant = "[[tenants]]\nname = \"big\"\nquotas = { publishes_per_message = 2000 }\ngrants = { publish = [\"testkit.out.>\", \"out.>\", \"svc.>\"] }\n\n[[subscribers]]";
    let kit = Kit::start(
        kit_service(&format!("{ATOMIC}\ntenant = \"big\"")).replace("[[subscribers]]", tenant),
    )
    .await;
    let mut reports = subscribe(&kit.client, "testkit.out.fanout").await;
    js_publish(&kit.js, "in.kit", fanout(&["out.many"], 1001, json!({}))).await;
    let report = next_json(&mut reports, Duration::from_secs(10)).await;
    assert_eq!(report["published"], 1000);
    assert_eq!(
        report["error"],
        "invalid: the atomic batch to stream \"OUT\" is full: the server commits at most 1000 messages in one batch"
    );
    // The handler went on and succeeded: the 1,000 it could hold are stored.
    drained(&kit.js, "IN", "kit").await;
    stream_has(&kit.js, "OUT", 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_past_held_outputs_fail_the_publish_that_passes_it() {
    let kit = Kit::start(kit_service(&format!(
        "{ATOMIC}\nlimits = {{ held_outputs = \"64KiB\" }}"
    )))
    .await;
    let mut reports = subscribe(&kit.client, "testkit.out.denied").await;
    js_publish(
        &kit.js,
        "in.kit",
        r#"{"op":"try_publish_bytes","subject":"out.big","size":70000}"#,
    )
    .await;
    let report = next_json(&mut reports, Duration::from_secs(10)).await;
    let result = report["result"].as_str().unwrap();
    assert!(
        result.starts_with("Err(\"invalid: held outputs would reach 70")
            && result.ends_with("bytes, past limits.held_outputs (65536 bytes)\")"),
        "{result}"
    );
    drained(&kit.js, "IN", "kit").await;
    assert_eq!(stream_messages(&kit.js, "OUT").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_own_msg_id_and_a_request_a_stream_would_store_are_refused() {
    let kit = Kit::start(kit_service(ATOMIC)).await;
    let mut reports = subscribe(&kit.client, "testkit.out.headers").await;
    let mut denied = subscribe(&kit.client, "testkit.out.denied").await;
    js_publish(
        &kit.js,
        "in.kit",
        r#"{"op":"try_request","subject":"out.r"}"#,
    )
    .await;
    let report = next_json(&mut denied, Duration::from_secs(10)).await;
    assert_eq!(
        report["result"],
        "Err(\"invalid: with outputs.mode = \\\"atomic\\\" a request to \\\"out.r\\\", which a stream stores, would store it at once whatever the handler's outcome: publish it instead\")"
    );
    js_publish(
        &kit.js,
        "in.kit",
        r#"{"op":"publish_with_headers","subject":"out.x","data":"d","headers":[["Nats-Msg-Id","mine"]]}"#,
    )
    .await;
    let report = next_json(&mut reports, Duration::from_secs(10)).await;
    let result = report["result"].as_str().unwrap();
    assert!(
        result.starts_with("Err(\"invalid: with outputs.mode = \\\"atomic\\\" the runtime sets each output's Nats-Msg-Id"),
        "{result}"
    );
    drained(&kit.js, "IN", "kit").await;
    assert_eq!(stream_messages(&kit.js, "OUT").await, 0);
}

/// Why the service of `text` on `server` does not start.
async fn start_error(server: &NatsServer, text: &str) -> natsapp_wasm::Error {
    let file = ServiceFile::new(server, text);
    match natsapp_wasm::Service::start(file.config()).await {
        Ok(_) => panic!("started with a stream that refuses atomic batches"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_without_atomic_publish_is_a_configuration_error() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    // OUT, declared by the file, and AUDIT, named by a publisher only.
    for (name, subject) in [("OUT", "out.>"), ("AUDIT", "svc.audit")] {
        let stream = async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        };
        js.create_stream(stream).await.unwrap();
    }
    let err = start_error(&server, &kit_service(ATOMIC)).await;
    assert_eq!(
        err.to_string(),
        "stream \"OUT\" on the server differs from [[streams]] in the file: allow_atomic: the server's stream does not allow atomic publish, and a subscriber with outputs.mode = \"atomic\" may publish to it; change the file or the stream (the runtime never changes it)"
    );
    assert_eq!(err.exit_code(), 2);
    let info = js.get_stream("OUT").await.unwrap().cached_info().clone();
    assert!(!info.config.allow_atomic_publish, "the stream was changed");

    let publisher =
        "[[publishers]]\nsubject = \"svc.audit\"\nstream = \"AUDIT\"\n\n[[subscribers]]";
    let text = kit_service(ATOMIC)
        .replace("name = \"OUT\"", "name = \"OUT2\"")
        .replace("\"out.>\"]\n", "\"out2.>\"]\n")
        .replace("[[subscribers]]", publisher);
    assert_eq!(
        start_error(&server, &text).await.to_string(),
        "stream \"AUDIT\" does not allow atomic publish, and subscriber \"kit\" (outputs.mode = \"atomic\") may publish to it; allow it on the stream (allow_atomic), or use outputs.mode = \"immediate\" (the runtime never changes an existing stream)"
    );

    // A declared stream it creates allows atomic publish.
    let server = NatsServer::start();
    let declaring = ServiceFile::new(&server, &kit_service(ATOMIC));
    let running = Running::start(&declaring).await;
    let js = server.jetstream().await;
    let info = js.get_stream("OUT").await.unwrap().cached_info().clone();
    assert!(info.config.allow_atomic_publish);
    drop(running);
}

/// Streams OUT and SIDE, both written atomically; redeliveries come back
/// after a second.
fn two_streams() -> String {
    kit_service(&format!(
        "{ATOMIC}\nconsumer = {{ max_deliver = 30, backoff = [\"1s\"], ack_wait = \"5s\" }}"
    ))
    .replace(
        "[[subscribers]]",
        "[[streams]]\nname = \"SIDE\"\nsubjects = [\"side.>\"]\n\n[[subscribers]]",
    )
    .replace("\"out.>\", \"svc.>\"]", "\"out.>\", \"svc.>\", \"side.>\"]")
}

/// A crash after OUT's batch is committed and before the input is acked
/// (SIDE is gone, so SIDE's commit fails and the input is nak'd, then the
/// process is killed); the restart's redelivery publishes outputs alike
/// (`same`) or not. Returns OUT's and SIDE's payloads.
async fn crash_between_a_commit_and_the_ack(same: bool) -> (Vec<String>, Vec<String>) {
    let server = NatsServer::start();
    let file = ServiceFile::new(&server, &two_streams());
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = spawn_run(&file, log.path(), &[]);
    let js = server.jetstream().await;
    durable_exists(&js, "IN", "kit").await;
    js.delete_stream("SIDE").await.unwrap();
    let op = fanout(&["out.a", "side.a"], 20, json!({"same": same}));
    js_publish(&js, "in.kit", op).await;
    stream_has(&js, "OUT", 20).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let (pending, ack_pending) = consumer_counts(&js, "IN", "kit").await;
    assert_eq!(pending + ack_pending as u64, 1, "the input was not acked");

    // The restart declares SIDE again; the redelivery finds OUT's batch
    // committed and commits SIDE's.
    let mut child = spawn_run(&file, log.path(), &[]);
    drained(&js, "IN", "kit").await;
    stream_has(&js, "SIDE", 20).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        text.contains("this message's outputs to the stream were committed by an earlier delivery; this delivery's are dropped"),
        "{text}"
    );
    (payloads(&js, "OUT").await, payloads(&js, "SIDE").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_commit_and_the_ack_leaves_exactly_the_committed_outputs() {
    // The redelivery's payloads differ (its delivery count is in them):
    // OUT keeps the first delivery's 20.
    let (out, side) = crash_between_a_commit_and_the_ack(false).await;
    assert_eq!(out.len(), 20, "{out:?}");
    assert!(out.iter().all(|p| p.ends_with(":1")), "{out:?}");
    assert_eq!(side.len(), 20, "{side:?}");
    assert!(side.iter().all(|p| !p.ends_with(":1")), "{side:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_that_repeats_committed_outputs_stores_them_once() {
    let (out, side) = crash_between_a_commit_and_the_ack(true).await;
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(out, expected);
    assert_eq!(side, expected);
}

/// How many outputs `stream` holds beyond `before` once none or all of a
/// batch of `n` are there: a commit that reached the server before the
/// kill is still being applied for a moment after it, and a reader can see
/// part of it then. Part of a batch for 30 s fails the test.
async fn batch_outcome(
    js: &async_nats::jetstream::Context,
    stream: &str,
    before: u64,
    n: u64,
) -> u64 {
    let mut seen = 0;
    let settled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            seen = stream_messages(js, stream).await - before;
            if seen == 0 || seen == n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    settled.unwrap_or_else(|_| panic!("{seen} of a batch of {n} stored for 30 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_point_of_a_500_output_commit_leaves_0_or_500() {
    use futures::StreamExt;
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &kit_service(&format!("{ATOMIC}\nconsumer = {{ ack_wait = \"1s\" }}")),
    );
    let js = server.jetstream().await;
    let client = server.client().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    // The batch's messages pass the server on their way to the stream, so
    // a plain subscriber sees the commit under way: the process is killed
    // once it has seen this many of the 500 (the 500th carries the commit).
    let kill_after = [1usize, 1, 2, 2, 50, 100, 250, 250, 400, 499, 499, 500, 500];
    let mut trials = Vec::new();
    for (trial, k) in kill_after.iter().enumerate() {
        let mut child = spawn_run(&file, log.path(), &[]);
        durable_exists(&js, "IN", "kit").await;
        js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
        drained(&js, "IN", "kit").await;
        let before = stream_messages(&js, "OUT").await;
        let mut wire = client.subscribe("out.a").await.unwrap();
        client.flush().await.unwrap();
        js_publish(&js, "in.kit", fanout(&["out.a"], 500, json!({}))).await;
        for _ in 0..*k {
            tokio::time::timeout(Duration::from_secs(10), wire.next())
                .await
                .expect("the batch's messages on the wire");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let stored = batch_outcome(&js, "OUT", before, 500).await;
        trials.push((*k, stored));
        // The next start finishes the message: 500 in all, never 1,000.
        let mut finisher = spawn_run(&file, log.path(), &[]);
        drained(&js, "IN", "kit").await;
        stream_has(&js, "OUT", 500 * (trial as u64 + 1)).await;
        finisher.kill().unwrap();
        finisher.wait().unwrap();
    }
    eprintln!("(messages seen before the kill, outputs stored): {trials:?}");
    // Four kills land within the first two of 500 messages: at least one
    // comes before the commit.
    assert!(
        trials.iter().any(|&(_, stored)| stored == 0),
        "no kill landed inside a commit: {trials:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_handlers_commit_to_one_stream_without_passing_the_servers_batch_limit() {
    // The server keeps at most 50 batches open per stream; 100 handlers
    // finishing together must wait for a slot, not fail.
    let kit = Kit::start(kit_service(&format!(
        "{ATOMIC}\nconcurrency = 100\npull = {{ batch_size = 100 }}"
    )))
    .await;
    for _ in 0..400 {
        js_publish(&kit.js, "in.kit", fanout(&["out.a"], 5, json!({}))).await;
    }
    drained(&kit.js, "IN", "kit").await;
    stream_has(&kit.js, "OUT", 2000).await;
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (
            s.acked,
            s.batches_committed,
            s.outputs_committed,
            s.failed(FailureCause::Commit),
            s.batches_busy
        ),
        (400, 400, 2000, 0, 0),
        "{s:?}"
    );
}
