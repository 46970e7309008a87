//! The message semantics table: what each handler outcome does on the wire.

use crate::{dead_letter, header, kit_service, with_dlq, Kit};
use natsapp_wasm::message::FailureCause;
use natsapp_wasm_tests::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_with_delay_redelivers_after_the_delay() {
    let Kit {
        server: _server,
        running,
        client: _,
        js,
    } = Kit::start(kit_service("consumer = { max_deliver = 2 }")).await;
    let t0 = Instant::now();
    js_publish(&js, "in.kit", r#"{"op":"retry","delay_ms":700}"#).await;
    // `received` counts a delivery when its handler starts; wait for the
    // second handler to have returned its retry as well.
    let s = stats_until(&running, "kit", "second delivery handled", |s| {
        s.retried == 2
    })
    .await;
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(700),
        "redelivered after {elapsed:?}, before the 700ms delay"
    );
    assert_eq!(s.received, 2);
    let s = stats_until(&running, "kit", "term at max_deliver", |s| s.termed == 1).await;
    assert_eq!((s.naked, s.acked), (1, 0));
    drained(&js, "IN", "kit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_without_delay_uses_the_backoff_step() {
    let Kit {
        server: _server,
        running,
        client,
        js,
    } = Kit::start(kit_service(
        r#"consumer = { max_deliver = 3, backoff = ["600ms", "1s"] }"#,
    ))
    .await;
    let mut out = subscribe(&client, "testkit.out.fail_until").await;
    let t0 = Instant::now();
    js_publish(&js, "in.kit", r#"{"op":"fail_until","n":2}"#).await;
    let report = next_json(&mut out, Duration::from_secs(10)).await;
    assert_eq!(report["delivered"], 2);
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "redelivered after {:?}, before the 600ms backoff",
        t0.elapsed()
    );
    let s = stats_until(&running, "kit", "ack after success", |s| s.acked == 1).await;
    assert_eq!((s.received, s.retried, s.naked), (2, 1, 1));
    drained(&js, "IN", "kit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_terms_and_dead_letters_without_redelivery() {
    let Kit {
        server: _server,
        running,
        client: _,
        js,
    } = Kit::start(with_dlq(r#"dead_letter = "dlq.kit""#)).await;
    let seq = js_publish_with_headers(
        &js,
        "in.kit",
        &[("X-Trace", "t-1")],
        r#"{"op":"reject","reason":"order 7 is invalid"}"#,
    )
    .await;
    let dl = dead_letter(&js, 1).await;
    assert_eq!(header(&dl, "Natsapp-Reason"), "order 7 is invalid");
    assert_eq!(header(&dl, "Natsapp-Subject"), "in.kit");
    assert_eq!(header(&dl, "Natsapp-Stream"), "IN");
    assert_eq!(header(&dl, "Natsapp-Sequence"), seq.to_string());
    assert_eq!(header(&dl, "Natsapp-Delivered"), "1");
    assert_eq!(header(&dl, "Natsapp-Subscriber"), "kit");
    assert_eq!(
        header(&dl, "X-Trace"),
        "t-1",
        "the original headers travel with the copy"
    );
    assert_eq!(
        &dl.payload[..],
        br#"{"op":"reject","reason":"order 7 is invalid"}"#
    );
    drained(&js, "IN", "kit").await;
    let s = settled_stats(&running, "kit").await;
    assert_eq!(
        (s.received, s.rejected, s.termed, s.dead_lettered, s.naked),
        (1, 1, 1, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_settling_is_respected() {
    let Kit {
        server: _server,
        running,
        client,
        js,
    } = Kit::start(kit_service("consumer = { max_deliver = 2 }")).await;
    let mut twice = subscribe(&client, "testkit.out.ack_twice").await;

    // Acked by the guest, then a retry error: the ack stands, no redelivery.
    js_publish(&js, "in.kit", r#"{"op":"ack","then_fail":true}"#).await;
    // Termed by the guest: never redelivered (the runtime sends the term
    // when `handle` returns, after a dead-letter copy when one is configured).
    js_publish(&js, "in.kit", r#"{"op":"term","reason":"not for us"}"#).await;
    // Nak'd by the guest on both handled deliveries: the delivery after
    // max_deliver is terminated without the handler, never dropped.
    js_publish(&js, "in.kit", r#"{"op":"nak","delay_ms":300}"#).await;
    // A second settle is refused.
    js_publish(&js, "in.kit", r#"{"op":"ack_twice"}"#).await;

    let report = next_json(&mut twice, Duration::from_secs(10)).await;
    assert_eq!(
        report["second"],
        r#"Err("denied: the message is already settled")"#
    );
    drained(&js, "IN", "kit").await;
    let s = stats_until(&running, "kit", "every delivery settled", |s| {
        s.in_flight == 0 && s.received == 6
    })
    .await;
    assert_eq!(
        (s.settled_by_guest, s.termed, s.past_max_deliver),
        (4, 2, 1),
        "{s:?}"
    );
    assert_eq!(
        (s.acked, s.naked),
        (0, 0),
        "the runtime added no ack or nak"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_deliver_reached_terms_with_a_dead_letter() {
    let Kit {
        server: _server,
        running,
        client: _,
        js,
    } = Kit::start(with_dlq(
        "consumer = { max_deliver = 3 }\ndead_letter = \"dlq.kit\"",
    ))
    .await;
    js_publish(&js, "in.kit", r#"{"op":"retry"}"#).await;
    let dl = dead_letter(&js, 1).await;
    assert_eq!(
        header(&dl, "Natsapp-Reason"),
        "max_deliver (3) reached; last failure: asked to retry"
    );
    assert_eq!(header(&dl, "Natsapp-Delivered"), "3");
    drained(&js, "IN", "kit").await;
    let s = settled_stats(&running, "kit").await;
    assert_eq!(
        (s.received, s.retried, s.naked, s.termed, s.dead_lettered),
        (3, 3, 2, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_contained_redelivered_and_reported() {
    let Kit {
        server: _server,
        running,
        client: _,
        js,
    } = Kit::start(with_dlq(
        "consumer = { max_deliver = 2 }\ndead_letter = \"dlq.kit\"",
    ))
    .await;
    js_publish(
        &js,
        "in.kit",
        r#"{"op":"panic","message":"boom at order 9"}"#,
    )
    .await;
    js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    let dl = dead_letter(&js, 1).await;
    let reason = header(&dl, "Natsapp-Reason");
    assert!(
        reason.starts_with("max_deliver (2) reached; last failure: guest panicked: boom at order 9 (at testkit/src/lib.rs:"),
        "{reason}"
    );
    drained(&js, "IN", "kit").await;
    let s = settled_stats(&running, "kit").await;
    assert_eq!(s.failed(FailureCause::Panic), 2);
    assert_eq!(
        (s.received, s.acked, s.naked, s.termed),
        (3, 1, 1, 1),
        "the healthy message was handled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limit_stops_a_looping_guest() {
    let Kit {
        server: _server,
        running,
        client: _,
        js,
    } = Kit::start(kit_service(
        "consumer = { max_deliver = 2 }\nlimits = { timeout = \"300ms\" }",
    ))
    .await;
    // A guest the limit did not stop would never be counted as a timeout.
    js_publish(&js, "in.kit", r#"{"op":"spin"}"#).await;
    let s = stats_until(&running, "kit", "two timeouts", |s| {
        s.failed(FailureCause::Timeout) == 2
    })
    .await;
    assert_eq!((s.received, s.naked), (2, 1));
    js_publish(&js, "in.kit", r#"{"op":"ok"}"#).await;
    stats_until(&running, "kit", "runtime still handles messages", |s| {
        s.acked == 1 && s.termed == 1
    })
    .await;
    drained(&js, "IN", "kit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_is_contained_and_counted() {
    let Kit { server: _server, running, client, js } = Kit::start(with_dlq("consumer = { max_deliver = 1 }\nlimits = { memory = \"16MiB\" }\ndead_letter = \"dlq.kit\"")).await;
    let mut ok = subscribe(&client, "testkit.out.alloc").await;
    js_publish(&js, "in.kit", r#"{"op":"alloc","mib":64}"#).await;
    js_publish(&js, "in.kit", r#"{"op":"alloc","mib":2}"#).await;
    assert_eq!(
        next_json(&mut ok, Duration::from_secs(10)).await["allocated_mib"],
        2
    );
    let dl = dead_letter(&js, 1).await;
    let reason = header(&dl, "Natsapp-Reason");
    assert!(
        reason.contains("memory limit of 16777216 bytes exceeded"),
        "{reason}"
    );
    drained(&js, "IN", "kit").await;
    let s = settled_stats(&running, "kit").await;
    assert_eq!(s.failed(FailureCause::Memory), 1);
    assert_eq!((s.received, s.acked, s.termed), (2, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_handler_is_kept_in_progress_past_ack_wait() {
    let Kit {
        server: _server,
        running,
        client: _,
        js,
    } = Kit::start(kit_service(
        "consumer = { ack_wait = \"3s\" }\nlimits = { timeout = \"20s\" }",
    ))
    .await;
    // In progress every 1.5 s keeps a 7 s handler from being redelivered:
    // a margin of a second and a half per heartbeat on a loaded machine.
    js_publish(&js, "in.kit", r#"{"op":"sleep","ms":7000}"#).await;
    let s = stats_until(&running, "kit", "the slow message acked", |s| s.acked == 1).await;
    assert_eq!(
        s.received, 1,
        "the server redelivered a message whose handler was still running"
    );
    drained(&js, "IN", "kit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ack_waits_for_the_server() {
    let kit = Kit::start(kit_service("double_ack = true\nconcurrency = 4")).await;
    for _ in 0..20 {
        js_publish(&kit.js, "in.kit", r#"{"op":"ok"}"#).await;
    }
    let s = stats_until(&kit.running, "kit", "twenty acked", |s| s.acked == 20).await;
    assert_eq!((s.received, s.settle_errors), (20, 0));
    drained(&kit.js, "IN", "kit").await;
}

/// Publishes `ops` one at a time (concurrency 1) and returns what each `count` saw.
async fn counts(extra: &str, ops: &[&str]) -> Vec<u64> {
    let kit = Kit::start(kit_service(extra)).await;
    let mut out = subscribe(&kit.client, "testkit.out.count").await;
    let mut seen = Vec::new();
    for op in ops {
        js_publish(
            &kit.js,
            "in.kit",
            format!(r#"{{"op":"{op}","message":"x"}}"#),
        )
        .await;
        if *op == "count" {
            seen.push(
                next_json(&mut out, Duration::from_secs(10)).await["seen"]
                    .as_u64()
                    .unwrap(),
            );
        } else {
            stats_until(&kit.running, "kit", "the failure settled", |s| {
                s.in_flight == 0 && s.received as usize == seen.len() + 1
            })
            .await;
        }
    }
    drained(&kit.js, "IN", "kit").await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_instances_share_nothing() {
    assert_eq!(
        counts("instances = \"per-message\"", &["count", "count", "count"]).await,
        vec![1, 1, 1]
    );
}

/// Per-message instances are made ahead of need while messages come, and
/// each message still gets one nothing else used; `prepared_instances = 0`
/// makes each one when its message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_instances_are_made_ahead_and_still_share_nothing() {
    for (extra, ahead) in [
        ("instances = \"per-message\"", true),
        ("instances = \"per-message\"\nprepared_instances = 0", false),
    ] {
        let kit = Kit::start(kit_service(extra)).await;
        let mut out = subscribe(&kit.client, "testkit.out.count").await;
        let mut seen = Vec::new();
        for n in 1..=4u64 {
            js_publish(&kit.js, "in.kit", r#"{"op":"count"}"#).await;
            seen.push(next_json(&mut out, Duration::from_secs(10)).await["seen"].clone());
            let s = stats_until(&kit.running, "kit", "the message acked", |s| {
                s.acked == n && (!ahead || s.prepared_instances == 1)
            })
            .await;
            if !ahead {
                assert_eq!(s.prepared_instances, 0, "{extra}");
            }
        }
        assert_eq!(seen, [1, 1, 1, 1], "{extra}: a fresh instance each");
        let s = stats_until(&kit.running, "kit", "four acked", |s| s.acked == 4).await;
        // The first message came before anything was wanted ahead.
        let used = if ahead { 3 } else { 0 };
        assert_eq!(s.prepared_instances_used, used, "{extra}");
        drained(&kit.js, "IN", "kit").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_instances_keep_state_until_they_fail_or_retire() {
    let reuse = "consumer = { max_deliver = 1 }"; // reuse is the default
    assert_eq!(
        counts(reuse, &["count", "count", "panic", "count", "count"]).await,
        vec![1, 2, 1, 2],
        "a trapped instance is replaced"
    );
    let retire = "instances = \"reuse\"\nmax_instance_uses = 2";
    assert_eq!(
        counts(retire, &["count", "count", "count", "count", "count"]).await,
        vec![1, 2, 1, 2, 1]
    );
}

/// wasmtime caps the component handles live in one store at 100,000: a
/// reused instance must give back the handle of every message it was lent.
/// Runs the handler in-process (no pull) to make 100,000 calls quick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_outlasts_the_store_handle_limit() {
    use natsapp_wasm::message::InFlight;
    use natsapp_wasm::message::Outcome;
    use natsapp_wasm::nats::publish::PublishRoutes;
    use natsapp_wasm::wasm::cache::ComponentCache;
    use natsapp_wasm::wasm::host::SubscriberHost;
    use natsapp_wasm::wasm::invoke::Handler;
    use natsapp_wasm::wasm::{PoolSize, WasmRuntime};
    use std::sync::Arc;

    let server = NatsServer::start();
    let file = ServiceFile::new(&server, &kit_service("concurrency = 1"));
    let config = file.config();
    let sub = &config.subscribers[0];
    let wasm = WasmRuntime::new(ComponentCache::from_env(), PoolSize::for_config(&config)).unwrap();
    let pre = wasm
        .load(sub.component.file().unwrap(), &sub.name)
        .unwrap()
        .pre;
    let client = server.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let routes = Arc::new(PublishRoutes::new(&config, &None));
    let host = Arc::new(SubscriberHost::new(
        sub,
        natsapp_wasm::nats::wire::Wire::server(
            client.clone(),
            js.clone(),
            Default::default(),
            Default::default(),
        ),
        routes,
        Vec::new(),
        None,
    ));
    let handler = Handler::new(pre, host, sub.timeout, sub.progress_every(), sub.instances);
    let mut reports = subscribe(&client, "testkit.out.count").await;
    let call = |seq: u64, op: &str| {
        let message = async_nats::Message {
            subject: "in.kit".into(),
            reply: Some(format!("$JS.ACK.IN.kit.1.{seq}.{seq}.1700000000000000000.0").into()),
            payload: format!(r#"{{"op":"{op}"}}"#).into(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        let message = async_nats::jetstream::Message {
            message,
            context: js.clone(),
        };
        let msg = Arc::new(InFlight::new(message).map_err(|(_, e)| e).unwrap());
        handler.invoke(msg)
    };

    assert_eq!(call(1, "count").await, Outcome::Ok);
    for seq in 2..=100_001 {
        let outcome = call(seq, "ok").await;
        assert_eq!(outcome, Outcome::Ok, "call {seq}");
    }
    assert_eq!(call(100_002, "count").await, Outcome::Ok);
    let seen: Vec<u64> = [
        next_json(&mut reports, Duration::from_secs(5)).await,
        next_json(&mut reports, Duration::from_secs(5)).await,
    ]
    .iter()
    .map(|r| r["seen"].as_u64().unwrap())
    .collect();
    assert_eq!(seen, vec![1, 2], "one instance served all 100,002 messages");
}
