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
