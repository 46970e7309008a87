//! `outputs.mode = "pipelined"`: a handler's publishes to streams return
//! once sent, and the input is acknowledged only after every PubAck; an
//! output the stream cannot store fails the delivery like a crash would.

use crate::{dead_letter, header, with_dlq, Kit};
use natsapp_wasm::message::FailureCause;
use natsapp_wasm_tests::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const PIPELINED: &str = "outputs = { mode = \"pipelined\" }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_output_is_stored_once_and_the_input_acked_after_all_of_them() {
    let kit = Kit::start(crate::kit_service(PIPELINED)).await;
    let mut reports = subscribe(&kit.client, "testkit.out.fanout").await;
    // The guest acks the second message itself, then fails on its first
    // delivery: its ack waits for `handle`, so it is never sent, and the
    // redelivery's outputs are the same ids, stored once.
    js_publish(
        &kit.js,
        "in.kit",
        json!({"op": "fanout", "subjects": ["out.a", "out.b"], "n": 150}).to_string(),
    )
    .await;
    js_publish(
        &kit.js,
        "in.kit",
        json!({"op": "fanout", "subjects": ["out.c"], "n": 100, "same": true, "settle": "ack", "fail_until": 2})
            .to_string(),
    )
    .await;
    let mut delivered = Vec::new();
    for _ in 0..3 {
        let report = next_json(&mut reports, Duration::from_secs(10)).await;
        assert_eq!(
            (&report["with_puback"], &report["error"]),
            (&json!(0), &json!(null)),
            "publish returns once sent, without a PubAck: {report}"
        );
        delivered.push(report["delivered"].as_u64().unwrap());
    }
    delivered.sort();
    assert_eq!(delivered, [1, 1, 2]);
    drained(&kit.js, "IN", "kit").await;
    stream_has(&kit.js, "OUT", 400).await;
    let handle = kit.js.get_stream("OUT").await.unwrap();
    let mut ids = BTreeSet::new();
    for seq in 1..=400 {
        let m = handle.get_raw_message(seq).await.unwrap();
        ids.insert(header(&m, "Nats-Msg-Id").to_string());
    }
    assert_eq!(ids.len(), 400, "every output has an id of its own");
    let s = settled_stats(&kit.running, "kit").await;
    assert_eq!(
        (s.acked, s.retried, s.publish_latency.count, s.publish_failures),
        (2, 1, 500, 0),
        "every PubAck seen (the redelivery's 100 as duplicates), each input acked after its own: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_its_stream_cannot_store_fails_the_delivery_and_is_dead_lettered() {
    let server = NatsServer::start();
    let js = server.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "SMALL".into(),
        subjects: vec!["small.>".into()],
        max_message_size: 512,
        ..Default::default()
    })
    .await
    .unwrap();
    let text = with_dlq(&format!(
        "{PIPELINED}\nconsumer = {{ max_deliver = 2 }}\ndead_letter = \"dlq.kit\""
    ))
    .replace("\"svc.>\"]", "\"svc.>\", \"small.>\"]")
    .replacen(
        "[[subscribers]]",
        "[[streams]]\nname = \"SMALL\"\nsubjects = [\"small.>\"]\ndeclare = false\n\n[[subscribers]]",
        1,
    );
    let file = ServiceFile::new(&server, &text);
    let running = Running::start(&file).await;
    let client = server.client().await;
    let mut reports = subscribe(&client, "testkit.out.denied").await;
    js_publish(
        &js,
        "in.kit",
        json!({"op": "try_publish_bytes", "subject": "small.x", "size": 2000}).to_string(),
    )
    .await;
    // The publish returned once sent; the PubAck's refusal came after `handle`.
    for delivered in 1..=2 {
        let report = next_json(&mut reports, Duration::from_secs(10)).await;
        assert_eq!(report["result"], "Ok(())", "delivery {delivered}");
    }
    drained(&js, "IN", "kit").await;
    let s = settled_stats(&running, "kit").await;
    assert_eq!(
        (
            s.acked,
            s.retried,
            s.failed(FailureCause::Output),
            s.dead_lettered,
            s.publish_failures
        ),
        (0, 0, 2, 1, 2),
        "both deliveries failed for their output, then the message was dead-lettered: {s:?}"
    );
    assert_eq!(stream_messages(&js, "SMALL").await, 0);
    let dead = dead_letter(&js, 1).await;
    assert_eq!(header(&dead, "Natsapp-Cause"), "output");
    let reason = header(&dead, "Natsapp-Reason");
    assert!(
        reason.starts_with("max_deliver (2) reached; last failure: 0 of 1 pipelined outputs stored; the first that was not: cannot publish to \"small.x\"")
            && reason.contains("the message exceeds the stream's maximum message size"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_fanning_out_past_the_pending_puback_limit_all_finish() {
    // async-nats lets a subscriber's JetStream context have 5,000 PubAcks
    // pending, and frees one only when its future has been polled to the
    // end: a hundred handlers started at once with 900 outputs each pass
    // that, and with the PubAcks left to the settler they all waited for
    // each other.
    let server = NatsServer::start();
    let js = server.jetstream().await;
    create_stream(&js, "IN", "in.>").await;
    create_stream(&js, "OUT", "out.>").await;
    for _ in 0..100 {
        js_publish(
            &js,
            "in.kit",
            json!({"op": "fanout", "subjects": ["out.p"], "n": 900}).to_string(),
        )
        .await;
    }
    let text = crate::kit_service(&format!("{PIPELINED}\nconcurrency = 100"));
    let file = ServiceFile::new(&server, &text);
    let running = Running::start(&file).await;
    drained(&js, "IN", "kit").await;
    stream_has(&js, "OUT", 90_000).await;
    let s = settled_stats(&running, "kit").await;
    assert_eq!(
        (s.acked, s.publish_latency.count, s.publish_failures),
        (100, 90_000, 0),
        "{s:?}"
    );
}
