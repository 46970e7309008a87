//! The example guests, end to end, in every language they are written in.

use natsapp_wasm_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_order_processor() {
    order_processor_reserves_inventory_and_publishes_status(guests::ORDER_PROCESSOR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_order_processor() {
    order_processor_reserves_inventory_and_publishes_status(guests::PY_ORDER_PROCESSOR).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_order_processor() {
    order_processor_reserves_inventory_and_publishes_status(guests::JS_ORDER_PROCESSOR).await;
}

/// The same checks for every language's port of the order processor, run
/// with the example's service.toml.
async fn order_processor_reserves_inventory_and_publishes_status(component: &str) {
    let server = NatsServer::start();
    let example =
        std::fs::read_to_string(repo_root().join("examples/order-processor/service.toml")).unwrap();
    let text = example.replace("nats://localhost:4222", "{url}").replace(
        "../../guests/target/wasm32-wasip2/release/order_processor.wasm",
        component,
    );
    let file = ServiceFile::new(&server, &text);
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    js_publish(
        &js,
        "order.created",
        r#"{"order_id":"A1","user_id":"u7","total_amount":30.5,"items":[{"id":"sku-1","quantity":2},{"id":"sku-2","quantity":1}]}"#,
    )
    .await;
    js_publish(&js, "order.created", r#"{"order_id":"A2","user_id":"u8","total_amount":5.0,"items":[{"id":"sku-3","quantity":4}]}"#).await;
    js_publish(&js, "order.created", r#"{"order_id":"bad"}"#).await;
    js_publish(&js, "order.created", "not json at all").await;
    stream_has(&js, "INVENTORY", 3).await;
    stream_has(&js, "ORDER_STATUS", 2).await;
    stream_has(&js, "DEAD_LETTERS", 2).await;
    drained(&js, "ORDER_EVENTS", "order_processor_service").await;

    // Four handlers run at once, so outputs arrive in any order.
    let mut inventory = json_messages(&js, "INVENTORY", 3).await;
    inventory.sort_by_key(|v| v["item_id"].as_str().unwrap().to_string());
    assert_eq!(
        inventory,
        vec![
            serde_json::json!({"item_id": "sku-1", "quantity_reserved": 2}),
            serde_json::json!({"item_id": "sku-2", "quantity_reserved": 1}),
            serde_json::json!({"item_id": "sku-3", "quantity_reserved": 4}),
        ]
    );
    let mut status = json_messages(&js, "ORDER_STATUS", 2).await;
    status.sort_by_key(|v| v["order_id"].as_str().unwrap().to_string());
    for (s, id) in status.iter().zip(["A1", "A2"]) {
        assert_eq!(
            (s["order_id"].as_str(), s["status"].as_str()),
            (Some(id), Some("processed"))
        );
        let tracking = s["tracking_number"].as_str().unwrap();
        assert!(
            tracking.starts_with(&format!("TRK{id}")) && tracking.len() == 5 + 8,
            "{tracking}"
        );
        assert!(s["processed_at"].as_str().unwrap().ends_with('Z'));
    }

    let dlq = js.get_stream("DEAD_LETTERS").await.unwrap();
    let mut dead = Vec::new();
    for seq in 1..=2 {
        let m = dlq.get_raw_message(seq).await.unwrap();
        dead.push((
            String::from_utf8_lossy(&m.payload).to_string(),
            m.headers.get("Natsapp-Reason").unwrap().to_string(),
        ));
    }
    dead.sort();
    assert_eq!(dead[0].0, "not json at all");
    assert!(
        dead[0].1.starts_with("invalid JSON payload: "),
        "{}",
        dead[0].1
    );
    assert_eq!(dead[1].0, r#"{"order_id":"bad"}"#);
    assert!(
        dead[1]
            .1
            .starts_with("invalid JSON payload: missing field `user_id`"),
        "{}",
        dead[1].1
    );
    let stats = running.stop().await;
    let s = &stats.subscribers[0];
    assert_eq!(
        (s.received, s.acked, s.rejected, s.dead_lettered),
        (4, 2, 2, 2)
    );
}

/// A component built against natsapp:handler@0.1.0 (its WIT kept as
/// released in guests/compat-0-1-0/wit) runs on this runtime unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_against_0_1_0_still_runs() {
    let server = NatsServer::start();
    let file = ServiceFile::new(
        &server,
        &crate::kit_service("")
            .replace(guests::TESTKIT, guests::COMPAT_0_1_0)
            .replace("{testkit}", guests::COMPAT_0_1_0)
            .replace("publish = [", "publish = [\"compat.out\", "),
    );
    let running = Running::start(&file).await;
    let client = server.client().await;
    let js = server.jetstream().await;
    let mut out = subscribe(&client, "compat.out").await;
    js_publish(&js, "in.kit", "hello from 0.1.0").await;
    let m = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures::StreamExt::next(&mut out),
    )
    .await
    .expect("an output")
    .unwrap();
    assert_eq!(&m.payload[..], b"hello from 0.1.0");
    let headers = m.headers.unwrap();
    assert_eq!(headers.get("Compat-Subject").unwrap().as_str(), "in.kit");
    assert_eq!(headers.get("Compat-Delivered").unwrap().as_str(), "1");
    drained(&js, "IN", "kit").await;
    assert_eq!(settled_stats(&running, "kit").await.acked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_payment() {
    payment_charges_once_over_http_and_publishes_success(guests::PAYMENT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_payment() {
    payment_charges_once_over_http_and_publishes_success(guests::PY_PAYMENT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_payment() {
    payment_charges_once_over_http_and_publishes_success(guests::JS_PAYMENT).await;
}

/// The same checks for every language's port of the wrapper's payment
/// example, run with examples/payment/service.toml against a payment
/// service on loopback.
async fn payment_charges_once_over_http_and_publishes_success(component: &str) {
    let api = natsapp_wasm_tests::web::WebServer::start("").await;
    let server = NatsServer::start();
    let example =
        std::fs::read_to_string(repo_root().join("examples/payment/service.toml")).unwrap();
    let text = example
        .replace("nats://localhost:4222", "{url}")
        .replace("http://127.0.0.1:8080", &api.origin())
        .replace(
            "../../guests/target/wasm32-wasip2/release/payment.wasm",
            component,
        );
    let file = ServiceFile::new(&server, &text);
    let running = Running::start(&file).await;
    let js = server.jetstream().await;
    let pay = |id: &str, amount: f64| {
        serde_json::json!({"payment_id": id, "amount": amount, "currency": "EUR"}).to_string()
    };

    js_publish(&js, "payment.process", pay("p1", 30.5)).await;
    stream_has(&js, "PAYMENT_EVENTS", 1).await;
    // The same request again: the idempotency record answers, no charge.
    js_publish(&js, "payment.process", pay("p1", 30.5)).await;
    // The service fails once (503): retried, then charged.
    js_publish(&js, "payment.process", pay("flaky-7", 12.5)).await;
    // Declined (402) and invalid: rejected, dead-lettered, never retried.
    js_publish(&js, "payment.process", pay("big", 5000.0)).await;
    js_publish(
        &js,
        "payment.process",
        r#"{"payment_id":"bad","amount":-1,"currency":"EUR"}"#,
    )
    .await;
    stream_has(&js, "PAYMENT_DLQ", 2).await;
    drained(&js, "PAYMENT_STREAM", "payment_processor").await;

    let mut events = json_messages(&js, "PAYMENT_EVENTS", 2).await;
    events.sort_by_key(|e| e["payment_id"].as_str().unwrap().to_string());
    assert_eq!(
        events,
        vec![
            serde_json::json!({"payment_id": "flaky-7", "charge_id": "ch_flaky-7", "amount": 12.5, "currency": "EUR"}),
            serde_json::json!({"payment_id": "p1", "charge_id": "ch_p1", "amount": 30.5, "currency": "EUR"}),
        ]
    );
    assert_eq!(
        stream_messages(&js, "PAYMENT_EVENTS").await,
        2,
        "one success event per payment"
    );
    let charges = api.charges();
    assert_eq!(
        (charges.get("p1"), charges.get("attempts:p1")),
        (Some(&1), Some(&1)),
        "the repeated request did not call the service: {charges:?}"
    );
    assert_eq!(charges.get("flaky-7"), Some(&1), "{charges:?}");
    assert_eq!(charges.get("attempts:flaky-7"), Some(&2), "{charges:?}");
    assert_eq!(charges.get("big"), None, "{charges:?}");
    let record = js
        .get_key_value("PAYMENTS")
        .await
        .unwrap()
        .get("charged.p1")
        .await
        .unwrap()
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["charge_id"], "ch_p1");

    let dlq = js.get_stream("PAYMENT_DLQ").await.unwrap();
    let mut reasons = Vec::new();
    for seq in 1..=2 {
        let m = dlq.get_raw_message(seq).await.unwrap();
        reasons.push(
            m.headers
                .get("Natsapp-Reason")
                .unwrap()
                .as_str()
                .to_string(),
        );
    }
    reasons.sort();
    assert!(reasons[0].starts_with("invalid payment"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("payment declined (402)"),
        "{reasons:?}"
    );
    let s = settled_stats(&running, "process-payment").await;
    assert_eq!((s.acked, s.termed, s.retried), (3, 2, 1));
}
