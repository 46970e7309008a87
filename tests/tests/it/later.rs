//! Delayed and expiring outputs: a handler's publish stored after a
//! delay (a one-shot nats-server schedule) or dropped after a time-to-live
//! (the stream's per-message TTL), in every SDK.

use crate::{kit_service, Kit};
use natsapp_wasm_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// The kit service whose OUT stream allows schedules and TTLs and holds
/// delayed outputs until they are due.
fn service(component: &str) -> String {
    kit_service("")
        .replace(
            "name = \"OUT\"\nsubjects = [\"out.>\"]",
            "name = \"OUT\"\nsubjects = [\"out.>\", \"natsapp.delayed.>\"]\nallow_schedules = true\nallow_ttl = true",
        )
        .replace("{testkit}", component)
}

/// Asks the kit for a publish with `delay_ms`/`ttl_ms` and returns its report.
async fn later(kit: &Kit, out: &mut async_nats::Subscriber, op: Value) -> Value {
    js_publish(&kit.js, "in.kit", op.to_string()).await;
    next_json(out, Duration::from_secs(30)).await
}

async fn stored_on(
    js: &async_nats::jetstream::Context,
    subject: &str,
) -> Option<async_nats::jetstream::message::StreamMessage> {
    let stream = js.get_stream("OUT").await.unwrap();
    stream.get_last_raw_message_by_subject(subject).await.ok()
}

async fn a_delayed_output_is_stored_after_its_delay(component: &str) {
    let kit = Kit::start(service(component)).await;
    let mut out = subscribe(&kit.client, "testkit.out.later").await;
    let asked = SystemTime::now();
    let report = later(
        &kit,
        &mut out,
        json!({"op": "later", "subject": "out.later", "data": "due", "delay_ms": 2000}),
    )
    .await;
    assert_eq!(report, json!({"stream": "OUT"}), "{component}");
    let fired = eventually(
        Duration::from_secs(30),
        "the delayed output is stored",
        || async { stored_on(&kit.js, "out.later").await },
    )
    .await;
    let fired_at: SystemTime = fired.time.into();
    assert!(
        fired_at >= asked + Duration::from_secs(2),
        "{component}: stored {:?} after it was asked for, before its delay",
        fired_at.duration_since(asked)
    );
    assert_eq!(&fired.payload[..], b"due");
    let mut stream = kit.js.get_stream("OUT").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(
        (state.last_sequence, state.messages),
        (2, 1),
        "{component}: the schedule that held it (1) is gone once it fired (2)"
    );
    drained(&kit.js, "IN", "kit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_delayed_output_is_stored_after_its_delay() {
    a_delayed_output_is_stored_after_its_delay(guests::TESTKIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_delayed_output_is_stored_after_its_delay() {
    a_delayed_output_is_stored_after_its_delay(guests::PY_KIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_delayed_output_is_stored_after_its_delay() {
    a_delayed_output_is_stored_after_its_delay(guests::JS_KIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_delayed_output_is_stored_after_its_delay() {
    a_delayed_output_is_stored_after_its_delay(guests::C_KIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_with_a_ttl_is_dropped_after_it_and_one_without_is_kept() {
    let kit = Kit::start(service(guests::TESTKIT)).await;
    let mut out = subscribe(&kit.client, "testkit.out.later").await;
    for (subject, ttl) in [("out.kept", None), ("out.brief", Some(1000))] {
        let report = later(
            &kit,
            &mut out,
            json!({"op": "later", "subject": subject, "data": "x", "ttl_ms": ttl}),
        )
        .await;
        assert_eq!(report, json!({"stream": "OUT"}));
    }
    // Both were stored (sequences 1 and 2); the brief one expires.
    let mut stream = kit.js.get_stream("OUT").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.last_sequence, 2);
    eventually(
        Duration::from_secs(30),
        "the output with a TTL expired",
        || async {
            stored_on(&kit.js, "out.brief")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    let kept = stored_on(&kit.js, "out.kept").await.expect("kept");
    assert_eq!(kept.sequence, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_output_with_a_ttl_gets_it_when_it_fires() {
    let kit = Kit::start(service(guests::TESTKIT)).await;
    let mut out = subscribe(&kit.client, "testkit.out.later").await;
    let report = later(
        &kit,
        &mut out,
        json!({"op": "later", "subject": "out.later", "data": "due", "delay_ms": 1000, "ttl_ms": 1500}),
    )
    .await;
    assert_eq!(report, json!({"stream": "OUT"}));
    let fired = eventually(
        Duration::from_secs(30),
        "the delayed output is stored",
        || async { stored_on(&kit.js, "out.later").await },
    )
    .await;
    assert_eq!(
        fired.headers.get("Nats-TTL").map(|v| v.as_str()),
        Some("2s"),
        "the TTL, in whole seconds rounded up, is the fired output's"
    );
    eventually(
        Duration::from_secs(30),
        "the fired output expired",
        || async {
            stored_on(&kit.js, "out.later")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_no_stream_can_hold_and_a_repeating_schedule_are_refused() {
    let kit = Kit::start(service(guests::TESTKIT)).await;
    let mut out = subscribe(&kit.client, "testkit.out.later").await;
    let report = later(
        &kit,
        &mut out,
        json!({"op": "later", "subject": "svc.x", "data": "x", "delay_ms": 2000}),
    )
    .await;
    assert_eq!(
        report,
        json!({"error": "invalid: a delayed output is held in the stream that captures its subject, and none captures \"svc.x\""})
    );
    // A guest may not write a schedule of its own: it would fire forever.
    let mut headers = subscribe(&kit.client, "testkit.out.headers").await;
    js_publish(
        &kit.js,
        "in.kit",
        json!({"op": "publish_with_headers", "subject": "out.x", "data": "x",
               "headers": [["Nats-Schedule", "@every 1s"]]})
        .to_string(),
    )
    .await;
    assert_eq!(
        next_json(&mut headers, Duration::from_secs(30)).await,
        json!({"result": r#"Err("denied: header \"Nats-Schedule\" is reserved: a handler may set Nats-Msg-Id and Nats-TTL but no other Nats-* header")"#})
    );
    assert!(stored_on(&kit.js, "out.x").await.is_none());
}
